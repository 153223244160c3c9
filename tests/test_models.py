import copy
import json

import pytest
import safetensors.torch
import timm
import torch

from medxfer import models


def test_create_rejects_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture 'not_a_model'"):
        models.create("not_a_model", 2, 1)


def test_save_load_round_trip_is_exact(tmp_path):
    model = models.create("resnet10t", 3, 1).eval()
    models.save(
        tmp_path, model, {"arch": "resnet10t", "classes": ["a", "b", "c"], "in_chans": 1, "input_size": [1, 64, 64]}
    )
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"]
    loaded, meta = models.load(tmp_path)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_weights_and_inputs_are_channels_last_and_compute_what_nchw_does(tmp_path):
    model = models.create("efficientnet_lite0", 2, 3).eval()
    models.save(
        tmp_path, model, {"arch": "efficientnet_lite0", "classes": ["a", "b"], "in_chans": 3, "input_size": [3, 32, 32]}
    )
    loaded = models.load(tmp_path)[0]
    stem = loaded.conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    batch = models.normalize(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(loaded).to(memory_format=torch.contiguous_format)
    assert nchw.conv_stem.weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), nchw(batch.contiguous()), rtol=1e-4, atol=1e-5)


def test_indomain_init_copies_backbone_adapts_stem_and_resets_head(tmp_path):
    source = models.create("mobilenetv3_small_050", 4, 1)
    models.save(
        tmp_path,
        source,
        {"arch": "mobilenetv3_small_050", "classes": list("abcd"), "in_chans": 1, "input_size": [1, 64, 64]},
    )
    target = models.create_initialised("mobilenetv3_small_050", 2, 3, "indomain", tmp_path)
    src, dst = source.state_dict(), target.state_dict()
    assert torch.equal(src["blocks.2.0.conv_pw.weight"], dst["blocks.2.0.conv_pw.weight"])
    assert dst["conv_stem.weight"].shape[1] == 3 and src["conv_stem.weight"].shape[1] == 1
    # timm repeats a single-channel stem over the new channels and rescales it
    assert torch.allclose(dst["conv_stem.weight"].sum(1, keepdim=True), src["conv_stem.weight"], atol=1e-5)
    assert dst["classifier.weight"].shape == (2, 1024)


def test_indomain_init_rejects_other_architecture(tmp_path):
    source = models.create("resnet10t", 2, 1)
    models.save(
        tmp_path, source, {"arch": "resnet10t", "classes": ["a", "b"], "in_chans": 1, "input_size": [1, 64, 64]}
    )
    with pytest.raises(ValueError, match="is a resnet10t, not a mobilenetv3_small_050"):
        models.create_initialised("mobilenetv3_small_050", 2, 1, "indomain", tmp_path)


def test_imagenet_init_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        models.create_initialised("resnet10t", 2, 1, "imagenet", tmp_path / "missing.safetensors")


def test_imagenet_init_from_local_file(tmp_path):
    imagenet = timm.create_model("resnet10t", num_classes=1000)  # as timm writes ImageNet weights: NCHW tensors
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(imagenet.state_dict(), str(path))
    model = models.create_initialised("resnet10t", 2, 1, "imagenet", path)
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], imagenet.state_dict()["layer3.0.conv1.weight"])


def test_gradcam_layer_is_last_stage():
    model = models.create("resnet10t", 2, 1)
    assert models.gradcam_layer(model, 224) is model.layer4
    assert models.gradcam_layer(model, 64) is model.layer3  # layer4 would be a 2x2 map


def test_output_stride_dilates_the_same_weights_into_a_finer_map_and_survives_save_and_load(tmp_path):
    designed = models.create("efficientnet_lite0", 2, 1).eval()
    dilated = models.create_initialised("efficientnet_lite0", 2, 1, "scratch", output_stride=16).eval()
    assert {k: v.shape for k, v in designed.state_dict().items()} == {
        k: v.shape for k, v in dilated.state_dict().items()
    }  # pretrained checkpoints of the designed network fit the dilated one
    dilated.load_state_dict(designed.state_dict())
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        coarse, fine = designed.forward_features(x), dilated.forward_features(x)
    assert coarse.shape[-2:] == (4, 4) and fine.shape[-2:] == (8, 8)
    assert models.gradcam_layer(dilated, 128) is dilated.blocks[6]
    meta = {"arch": "efficientnet_lite0", "classes": ["a", "b"], "in_chans": 1, "input_size": [1, 128, 128]}
    models.save(tmp_path, dilated, meta)
    loaded, saved = models.load(tmp_path)
    assert saved["output_stride"] == 16
    with torch.no_grad():
        assert loaded.forward_features(x).shape[-2:] == (8, 8)
        torch.testing.assert_close(loaded(x), dilated(x))
    with pytest.raises(ValueError, match="output_stride 16: timm cannot dilate densenet121"):
        models.create("densenet121", 2, 1, output_stride=16)


def _imagenet_file():
    from conftest import SHARED

    path = SHARED / "weights" / "efficientnet_lite0_imagenet.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} not found: the real ImageNet weights test needs ../shared/weights beside the repository")
    return path


def test_real_imagenet_efficientnet_lite0_loads_with_matching_keys_and_grey_stem():
    path = _imagenet_file()
    weights = safetensors.torch.load_file(str(path))
    reference = models.create("efficientnet_lite0", 1000, 3)
    assert set(weights) == set(reference.state_dict())  # the file is timm's efficientnet_lite0, key for key
    model = models.create_initialised("efficientnet_lite0", 2, 1, "imagenet", path)
    state = model.state_dict()
    assert state["conv_stem.weight"].shape == (32, 1, 3, 3)
    assert torch.allclose(state["conv_stem.weight"], weights["conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(state["blocks.3.0.conv_pw.weight"], weights["blocks.3.0.conv_pw.weight"])
    assert state["classifier.weight"].shape == (2, 1280)
    # ImageNet features respond to structure: an edge and a flat image give clearly different embeddings
    flat, edge = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    edge[..., 32:] = 2.0
    with torch.no_grad():
        model.eval()
        a, b = (model.forward_head(model.forward_features(x), pre_logits=True) for x in (flat, edge))
    assert (a - b).norm() > 0.1 * a.norm()


def test_real_imagenet_init_truncated_keeps_the_early_stages():
    path = _imagenet_file()
    weights = safetensors.torch.load_file(str(path))
    model = models.create_initialised("efficientnet_lite0", 2, 3, "imagenet", path, truncate_stages=3)
    assert torch.equal(model.state_dict()["blocks.2.0.conv_pw.weight"], weights["blocks.2.0.conv_pw.weight"])
    assert models.num_parameters(model) < 100_000 < models.num_parameters(models.create("efficientnet_lite0", 2, 3))


def test_new_head_starts_near_zero_for_every_architecture():
    """timm's EfficientNet head init gives 2-class logits with std > 10 in train mode; ours starts near zero."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 28, 28)
    for arch in ("efficientnet_lite0", "resnet10t"):
        model = models.create(arch, 2, 1).train()
        head = model.get_classifier()
        assert head.weight.std() < 2 * models.HEAD_STD and torch.count_nonzero(head.bias) == 0
        assert model(x).std() < 1.0, arch
