"""Heatmap registry, the (method, layer) choice on val and the model-randomisation sanity check, on a real tiny
timm network trained for a few steps on the demo radiographs."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SHARED, dataset_config, ingest_and_cache

from medxfer import cams, heatmap_choice, localisation, models
from medxfer.cache import load_cached
from medxfer.config import SCHEMA_PATH
from medxfer.explain import explain_model
from medxfer.imaging import read_mask
from medxfer.sections import ExplainSection

SETTINGS = ExplainSection.from_config(
    dict(methods=["gradcam", "gradcampp"], n_images=2, n_faithfulness=2, deletion_steps=8, choose_on_val=8)
)


@pytest.fixture(scope="module")
def xray(cached):
    return cached["xray_source"]


def train_resnet10t(data, steps: int, out):
    """resnet10t trained for `steps` Adam steps (batch 32, seeded, one thread) on a cached set, saved at `out`."""
    train = data.splits["train"]
    torch.manual_seed(0)
    model = models.create("resnet10t", num_classes=len(data.classes), in_chans=train.images.shape[1])
    models.init_head(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        batch = rng.choice(len(train.labels), 32, replace=False)
        inputs = models.normalize(torch.from_numpy(train.images[batch]))
        loss = torch.nn.functional.cross_entropy(model(inputs), torch.from_numpy(train.labels[batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    meta = dict(arch="resnet10t", classes=data.classes, in_chans=train.images.shape[1], input_size=64, init="scratch")
    models.save(out, model, meta)
    return out


@pytest.fixture(scope="module")
def trained(xray, tmp_path_factory):
    """resnet10t trained for 40 Adam steps on the demo radiographs (4 classes)."""
    return train_resnet10t(load_cached(*xray), 40, tmp_path_factory.mktemp("cams_model"))


def test_schema_allows_exactly_the_registry():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    allowed = schema["properties"]["explain"]["properties"]["methods"]["items"]["enum"]
    assert set(allowed) == set(cams.list_methods()) == {
        "gradcam", "gradcampp", "hirescam", "layercam", "eigencam", "scorecam", "occlusion", "rise", "lime"
    }  # fmt: skip


@pytest.mark.parametrize("method", cams.list_methods())
def test_every_method_returns_finite_maps_of_the_image_size(method):
    torch.manual_seed(0)
    model = models.create("resnet10t", num_classes=2, in_chans=1).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 1, 64, 64), dtype=np.uint8)
    layer = cams.candidate_layers(model, [-2])[0] if cams.uses_layer(method) else None
    for batch in (images, images.astype(np.float32) / 255):  # uint8 and float in [0, 1] alike
        maps = cams.heatmaps(method, model, batch, [1, 0], layer, lime_samples=20, rise_masks=50, seed=0)
        assert maps.shape == (2, 64, 64) and maps.dtype == np.float32 and np.isfinite(maps).all()
        assert 0 <= maps.min() <= maps.max() <= 1 and maps.std() > 0
    with pytest.raises(ValueError, match="unknown explanation method 'nope'"):
        cams.heatmaps("nope", model, images, [1, 0])


SQUARE = np.zeros((64, 64), bool)  # the pixels Square reads
SQUARE[40:56, 8:24] = True


class Square(torch.nn.Module):
    """A network whose positive logit is the brightness of one square, rows 40-55 and columns 8-23 (SQUARE)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, 0, 40:56, 8:24].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(inside), self.scale * inside], dim=1)


def test_occlusion_points_at_the_patch_the_model_reads():
    images = np.full((1, 1, 64, 64), 200, np.uint8)
    heat = cams.heatmaps("occlusion", Square(), images, [1])[0]
    assert heat[40:56, 8:24].mean() > 0.5 and heat[:32, 32:].max() == 0.0


def test_rise_points_at_the_square_the_model_reads_and_only_there():
    """Masks that keep the square raise the probability: RISE's peak lies on it. Far from it the heat is the noise of
    500 random masks, well below the square's, where the paper's weighted sum would carry the mean probability."""
    images = np.full((1, 1, 64, 64), 200, np.uint8)
    heat = cams.heatmaps("rise", Square(), images, [1], seed=0)[0]
    assert SQUARE.ravel()[heat.argmax()] and heat[SQUARE].mean() > 0.6
    assert heat[:24, 40:].mean() < 0.15
    in_small_batches = cams.heatmaps("rise", Square(), images, [1], seed=0, batch_size=7)[0]
    other = cams.heatmaps("rise", Square(), images, [1], seed=1)[0]
    assert np.allclose(heat, in_small_batches, atol=1e-5) and not np.allclose(heat, other, atol=1e-3)


def test_lime_at_several_granularities_averages_their_maps_and_keeps_the_square():
    """A list of superpixel counts runs LIME once per count; the maps, each scaled to [0, 1], are averaged and scaled
    again. One count in a list is the same as that count alone."""
    image = np.full((1, 1, 64, 64), 200, np.uint8)
    image[:, :, SQUARE] = 120  # the square the model reads, a segment edge for SLIC to follow
    single = {n: cams.heatmaps("lime", Square(), image, [1], lime_segments=n, lime_samples=60)[0] for n in (9, 36)}
    both = cams.heatmaps("lime", Square(), image, [1], lime_segments=[9, 36], lime_samples=60)[0]
    expected = (single[9] + single[36]) / 2
    assert not np.allclose(single[9], single[36]) and np.allclose(both, expected / expected.max(), atol=1e-6)
    assert SQUARE.ravel()[both.argmax()] and both[SQUARE].mean() > 3 * both[~SQUARE].mean()
    one = cams.heatmaps("lime", Square(), image, [1], lime_segments=[36], lime_samples=60)[0]
    assert np.array_equal(one, single[36])


def test_lime_mean_fill_follows_texture_where_black_fill_follows_brightness():
    """A network that reads the image's brightness and the texture of one square. Hiding superpixels in black changes
    the brightness wherever they are, so the black-fill map does not single out the square; filling them with their
    own mean changes only texture, so the mean-fill map lies on the square."""

    class BrightnessAndTexture(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            texture = x[:, 0, 40:56, 40:56].std(dim=(1, 2))
            score = self.scale * (12 * x[:, 0].mean(dim=(1, 2)) + texture)
            return torch.stack([torch.zeros_like(score), score], dim=1)

    image = np.full((1, 1, 64, 64), 30, np.uint8)
    image[:, :, :, :32] = 220  # a bright left half
    image[:, :, 40:56, 40:56] = np.where(np.indices((16, 16)).sum(axis=0) % 2 == 0, 0, 120)  # texture, mean 60
    square = np.zeros((64, 64), bool)
    square[40:56, 40:56] = True
    maps = {
        fill: cams.heatmaps("lime", BrightnessAndTexture(), image, [1], lime_fill=fill)[0] for fill in ("black", "mean")
    }
    assert not square.ravel()[maps["black"].argmax()] and maps["black"][square].mean() < 0.6
    assert maps["mean"][square].mean() > 0.8 and maps["mean"][~square].mean() < 0.1
    with pytest.raises(ValueError, match="unknown LIME fill 'grey'"):
        cams.heatmaps("lime", BrightnessAndTexture(), image, [1], lime_fill="grey")


def test_candidate_layers_are_timm_stages():
    model = models.create("resnet10t", num_classes=2, in_chans=1)
    assert cams.candidate_layers(model, [-1, -2, -1, 99]) == ["layer4", "layer3"]
    pairs = heatmap_choice.candidates(model, ["gradcam", "lime"], [-1, -2])
    assert pairs == [("gradcam", "layer4"), ("gradcam", "layer3"), ("lime", None)]


def _invert_test_split(xray, tmp_path):
    """The same cache with every test image inverted: a test split that scores the candidates differently."""
    manifest, images = xray
    arr = np.load(images)
    test = pd.read_csv(manifest)["split"].to_numpy() == "test"
    arr[test] = 255 - arr[test]
    out = tmp_path / "images_64.npy"
    np.save(out, arr)
    return manifest, out


def test_layer_choice_uses_val_images_only(xray, trained, tmp_path):
    settings = replace(SETTINGS, methods=("gradcam", "layercam"))
    explain_model(trained, *xray, tmp_path / "a", settings, seed=0)
    inverted = _invert_test_split(xray, tmp_path)
    explain_model(trained, *inverted, tmp_path / "b", settings, seed=0)
    first = json.loads((tmp_path / "a" / "selection.json").read_text())
    second = json.loads((tmp_path / "b" / "selection.json").read_text())
    assert first == second  # a different test split changes nothing
    assert first["n_val"] == min(8, len(load_cached(*xray).splits["val"].labels)) and first["chosen_on"] == "val"
    assert first["layer"] in ("layer3", "layer4")
    assert {(c["method"], c["layer"]) for c in first["candidates"]} == {
        (m, layer) for m in ("gradcam", "layercam") for layer in ("layer4", "layer3")
    }
    # the same choice run on the (inverted) test images would have scored differently: the test split was not read
    model, _ = models.load(trained)
    on_test = heatmap_choice.choose(model, load_cached(*inverted).splits["test"], settings, seed=0)
    scores = [c["val_deletion_auc"] for c in first["candidates"]]
    assert [c["val_deletion_auc"] for c in on_test["candidates"]] != scores
    # the chosen method is shown first: its overlays, the first heatmap column and the gallery title
    table = pd.read_csv(tmp_path / "a" / "index.csv")
    assert [c for c in table.columns if c.endswith("_png")][0] == f"{first['method']}_png"


def test_chosen_layer_is_used_by_every_cam_map(xray, trained):
    model, _ = models.load(trained)
    val = load_cached(*xray).splits["val"]
    selection = heatmap_choice.choose(model, val, SETTINGS, seed=0)
    images, targets = val.images[:2], val.labels[:2]
    pinned = cams.heatmaps("gradcam", model, images, targets)
    assert np.array_equal(pinned, cams.heatmaps("gradcam", model, images, targets, selection["layer"]))
    other = "layer3" if selection["layer"] == "layer4" else "layer4"
    assert not np.array_equal(pinned, cams.heatmaps("gradcam", model, images, targets, other))


def _intensity(model, images, targets, layer=None, **_):
    """A 'heatmap' that ignores the model: the image's own brightness."""
    unit = images[:, 0].astype(np.float32)
    return unit / np.maximum(unit.max(axis=(1, 2), keepdims=True), 1e-12)


def test_sanity_check_flags_a_map_that_ignores_the_model(xray, trained, monkeypatch):
    monkeypatch.setitem(cams._REGISTRY, "intensity", _intensity)
    model, _ = models.load(trained)
    val = load_cached(*xray).splits["val"]
    settings = replace(SETTINGS, methods=("intensity", "eigencam", "gradcam"), layers=(-2,))  # not the schema's methods
    selection = heatmap_choice.choose(model, val, settings, seed=0)
    rho = selection["sanity"]["spearman"]
    assert rho["intensity"] == pytest.approx(1.0)
    # EigenCAM reads layer3's activations only, which the randomisation (layer4 and the head) leaves untouched
    assert rho["eigencam@layer3"] == pytest.approx(1.0)
    assert selection["sanity"]["flagged"] == ["intensity", "eigencam@layer3"]
    assert rho["gradcam@layer3"] < 0.5  # Grad-CAM of the trained model changes once its top layers are random
    assert selection["method"] == "gradcam"  # the flagged method is skipped while gradcam passes
    assert selection["sanity"]["randomised_modules"] == ["layer4", "fc"]


def _noise(model, images, targets, layer=None, seed=0, **_):
    """A 'heatmap' that is the random baseline itself: the smooth random maps choose() scores on val."""
    return localisation.random_maps(len(images), images.shape[-1], seed)


def test_chosen_map_is_scored_against_a_random_map_on_the_same_val_images(xray, trained, monkeypatch):
    monkeypatch.setitem(cams._REGISTRY, "noise", _noise)
    model, _ = models.load(trained)
    val = load_cached(*xray).splits["val"]
    settings = replace(SETTINGS, methods=("gradcam", "noise"), layers=(-1,))
    selection = heatmap_choice.choose(model, val, settings, seed=0)
    index = heatmap_choice.val_index(val, settings.choose_on_val, seed=0)
    images, targets = val.images[index], val.labels[index]
    noise = localisation.random_maps(len(index), images.shape[-1], seed=0)
    expected = heatmap_choice.mean_deletion(model, images, targets, noise, settings.deletion_steps)
    assert selection["random_map_val_deletion_auc"] == pytest.approx(expected)
    rows = {r["method"]: r for r in selection["candidates"]}
    assert rows["noise"]["val_deletion_auc"] == pytest.approx(expected)  # the same maps on the same images
    assert heatmap_choice.beats_random_on_val(selection, "noise") is False  # level is not better
    gradcam_beats = bool(rows["gradcam"]["val_deletion_auc"] < expected)
    assert heatmap_choice.beats_random_on_val(selection, "gradcam") is gradcam_beats
    assert heatmap_choice.beats_random_on_val(selection, "random") is None  # a baseline is not checked
    chosen = rows[selection["method"]]["val_deletion_auc"]
    assert selection["val_deletion_auc"] == chosen and selection["beats_random_on_val"] is bool(chosen < expected)
    # with the random maps the only candidate, they are still shown, and recorded as not beating the random map
    alone = heatmap_choice.choose(model, val, replace(settings, methods=("noise",)), seed=0)
    assert alone["method"] == "noise" and alone["beats_random_on_val"] is False


def test_choosing_by_pointing_takes_val_findings_and_the_map_that_points_at_them(xray, trained, monkeypatch):
    val = load_cached(*xray).splits["val"]
    size = val.images.shape[-1]
    masks = {val.images[i].tobytes(): read_mask(path, size) for i, path in enumerate(val.masks) if path}

    def pointed(model, images, targets, layer=None, **options):
        """The expert's outline over inverted Grad-CAM: it follows the model (passes the sanity check), its peak lies
        on the finding, and past the outline it deletes what the model uses least (a poor deletion AUC)."""
        outline = [masks.get(image.tobytes(), np.zeros((size, size), bool)) for image in images]
        return 0.4 * (1 - cams.heatmaps("gradcam", model, images, targets, layer)) + 0.6 * np.stack(outline)

    monkeypatch.setitem(cams._REGISTRY, "pointed", pointed)
    model, _ = models.load(trained)
    with_mask = sum(m.any() for m in masks.values())
    assert 0 < with_mask < len(val.labels)  # the demo's val split has findings and images without
    settings = replace(SETTINGS, methods=("gradcam", "pointed"), layers=(-1,), choose_on_val=len(val.labels))
    by_deletion = heatmap_choice.choose(model, val, settings, seed=0)
    assert by_deletion["chosen_by"] == "deletion" and by_deletion["method"] == "gradcam"  # the lower deletion AUC
    by_pointing = heatmap_choice.choose(model, val, replace(settings, choose_by="pointing"), seed=0)
    rows = {r["method"]: r for r in by_pointing["candidates"]}
    assert by_pointing["method"] == "pointed" and not rows["pointed"]["flagged"]
    assert rows["pointed"]["val_pointing_hit_tol"] == 1.0 > rows["gradcam"]["val_pointing_hit_tol"]
    assert rows["pointed"]["val_deletion_auc"] > rows["gradcam"]["val_deletion_auc"]  # pointing won, not deletion
    assert by_pointing["n_val"] == with_mask  # only the val images with a finding are scored
    assert set(by_pointing["baselines_val_pointing_hit_tol"]) == {"random", "centre"}
    no_findings = replace(val, masks=np.full(len(val.labels), ""))
    with pytest.raises(ValueError, match="choose_by pointing: no val image has a finding mask"):
        heatmap_choice.choose(model, no_findings, replace(settings, choose_by="pointing"), seed=0)


def test_randomised_copy_is_seeded_and_leaves_the_model_alone(trained):
    model, _ = models.load(trained)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first, reset = heatmap_choice.randomised(model, seed=3)
    second, _ = heatmap_choice.randomised(model, seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(first.fc.weight, second.fc.weight) and not torch.equal(first.fc.weight, model.fc.weight)
    assert torch.equal(first.layer3[0].conv1.weight, model.layer3[0].conv1.weight)  # below the top: kept
    assert not torch.equal(first.layer4[0].conv1.weight, model.layer4[0].conv1.weight)


def test_randomised_efficientnet_stays_alive_so_its_maps_can_be_compared(xray):
    """EfficientNet puts a conv_head and a norm between its last stage and the head. Left as trained, they turn a
    randomised last stage into zeros for every image: the copy's logits and CAMs are constant, and the check compares
    nothing. With ImageNet weights this happens; they are reset with the rest of the top."""
    path = SHARED / "weights" / "efficientnet_lite0_imagenet.safetensors"
    if not path.exists():
        pytest.skip(f"{path} not found: the real ImageNet weights test needs ../shared/weights beside the repository")
    data = load_cached(*xray)
    images, targets = data.splits["val"].images[:16], data.splits["val"].labels[:16]
    model = models.create_initialised("efficientnet_lite0", len(data.classes), data.in_chans, "imagenet", path).eval()
    copied, reset = heatmap_choice.randomised(model, seed=0)
    assert reset == ["blocks.6", "conv_head", "bn2", "classifier"]
    assert torch.equal(copied.blocks[5][0].conv_pw.weight, model.blocks[5][0].conv_pw.weight)  # below the top: kept
    assert not torch.equal(copied.conv_head.weight, model.conv_head.weight)
    with torch.no_grad():
        logits = copied(models.standardize(torch.from_numpy(images).float() / 255))
    assert (logits.std(dim=0) > 0).all()  # the randomised network still tells images apart
    trained = cams.heatmaps("gradcam", model, images, targets, "blocks.6")
    shuffled = cams.heatmaps("gradcam", copied, images, targets, "blocks.6")
    assert (shuffled.std(axis=(1, 2)) > 0).mean() > 0.5  # an image whose random CAM is all negative may stay empty
    assert heatmap_choice.rank_correlation(trained, shuffled) is not None


def test_a_folded_model_gets_the_sanity_check_of_the_network_as_trained(xray, trained):
    """explain draws with BatchNorms folded; its randomised copy must still be the trained network's, norms reset."""
    plain, _ = models.load(trained)
    folded = models.load(trained, fold=True)[0]
    val = load_cached(*xray).splits["val"]
    settings = replace(SETTINGS, methods=("gradcam", "gradcampp"), layers=(-1, -2))
    as_trained = heatmap_choice.choose(plain, val, settings, seed=0)
    with_folding = heatmap_choice.choose(folded, val, settings, seed=0, unfolded=plain)
    rho, rho_folded = as_trained["sanity"]["spearman"], with_folding["sanity"]["spearman"]
    assert rho.keys() == rho_folded.keys() and all(value is not None for value in rho.values())
    assert rho_folded == pytest.approx(rho, abs=0.01)
    assert with_folding["method"] == as_trained["method"] and with_folding["layer"] == as_trained["layer"]
    # float rounding may swap pixels of equal heat in the deletion order: AUCs agree to a few thousandths, not bits
    scores = [c["val_deletion_auc"] for c in as_trained["candidates"]]
    assert [c["val_deletion_auc"] for c in with_folding["candidates"]] == pytest.approx(scores, abs=0.005)


def test_rank_correlation_of_maps():
    a = np.random.default_rng(0).random((3, 8, 8))
    assert heatmap_choice.rank_correlation(a, a) == pytest.approx(1.0)
    assert heatmap_choice.rank_correlation(a, -a) == pytest.approx(-1.0)
    partly_constant = a.copy()
    partly_constant[1] = 0.0
    # a constant map has no ranks: its pair is left out (not averaged in as 0), and with no pair left, no value
    assert heatmap_choice.rank_correlation(a, partly_constant) == pytest.approx(1.0)
    assert heatmap_choice.rank_correlation(a, np.zeros_like(a)) is None


@pytest.fixture(scope="module")
def limbs(tmp_path_factory):
    """The demo's humerus and wrist set at the demo's size (120 patients, 64 px), ingested and cached."""
    from medxfer import demo

    root = tmp_path_factory.mktemp("limbs")
    demo.synthesize_mura(root / "mura", 120, 64, 3)
    return ingest_and_cache(dataset_config(root, "mura"), "mura", root, threads=1)


def test_the_method_chosen_on_val_points_at_demo_findings(limbs, tmp_path):
    """The demo's findings are large enough to localise at 64 px: on the masked test images, the map chosen on val
    points at the finding (pointing game with tolerance) clearly more often than the random map, paired interval
    above zero."""
    from medxfer.metrics import paired_mean_difference

    model_dir = train_resnet10t(load_cached(*limbs), 60, tmp_path / "model")
    settings = replace(SETTINGS, methods=("gradcam", "gradcampp", "lime"), n_faithfulness=24, lime_samples=100)
    explain_model(model_dir, *limbs, tmp_path / "explain", settings, seed=0)
    faith = pd.read_csv(tmp_path / "explain" / "faithfulness.csv")
    masked = faith[faith["has_mask"]].pivot_table(index="image_id", columns="method", values="pointing_hit_tol")
    assert len(masked) == 24
    chosen = faith.loc[faith["chosen"], "method"].iloc[0]
    diff, low, _ = paired_mean_difference(masked[chosen], masked["random"], seed=0)
    assert diff >= 0.25 and low > 0, (chosen, masked.mean().round(3).to_dict())
