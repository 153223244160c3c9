"""Heatmaps and their faithfulness: real Grad-CAM/LIME on a small trained network, metrics on known geometry."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from medxfer import models
from medxfer.cams import heatmaps, segments
from medxfer.explain import PANEL, choose_images, explain_model, outcomes
from medxfer.faithfulness import deletion_insertion
from medxfer.localisation import LOCALISATION_COLUMNS, mask_iou, pointing_hit, random_maps
from medxfer.sections import DecisionSection, ExplainSection, FinetuneTraining, PretrainTraining
from medxfer.train import finetune_model, pretrain_model

# no augmentation: every transform off (the schema's defaults would turn most on)
NO_AUGMENT = dict(hflip=0, degrees=0, translate=0, scale=[1, 1], brightness=0, contrast=0, noise_std=0)
PARAMS = dict(lr=2e-3, weight_decay=1e-4, epochs=2, batch_size=16, imbalance="weighted_loss", augment=NO_AUGMENT)
# the config's explain section, small: the defaults themselves live in the schema only
FINETUNE = FinetuneTraining.from_config(PARAMS | dict(strategy="full", epochs=1))
SETTINGS = ExplainSection.from_config(dict(n_images=3, lime_samples=30, n_faithfulness=6, deletion_steps=8))


@pytest.fixture(scope="module")
def trained(cached, tmp_path_factory):
    manifest, images = cached["xray_source"]
    out = tmp_path_factory.mktemp("explain_model")
    pretrain_model(manifest, images, "resnet10t", PretrainTraining.from_config(PARAMS), out, threads=2, seed=0)
    return out


class RegionModel(nn.Module):
    """A real two-class network whose positive logit is the brightness of a fixed square: what it uses is known."""

    def __init__(self, size: int, box: slice) -> None:
        super().__init__()
        self.region = torch.zeros(size, size)
        self.region[box, box] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.stack([torch.zeros_like(inside), 4 * inside], dim=1)


def test_deletion_and_insertion_reward_the_map_of_what_the_model_uses():
    size, box = 32, slice(8, 16)
    model = RegionModel(size, box).eval()
    image = np.zeros((1, size, size), np.uint8)
    image[0, box, box] = 255  # the bright square the model looks at; its blurred copy is much dimmer
    right = np.zeros((size, size), np.float32)
    right[box, box] = 1.0
    wrong = np.zeros((size, size), np.float32)
    wrong[20:28, 20:28] = 1.0
    del_right, ins_right, blur_right = deletion_insertion(model, image, right, target=1, steps=16)
    del_wrong, ins_wrong, blur_wrong = deletion_insertion(model, image, wrong, target=1, steps=16)
    assert del_right < del_wrong - 0.1
    assert ins_right > ins_wrong + 0.1
    assert blur_right < blur_wrong - 0.1  # the blurred copy of the square is too dim for the model


def test_a_single_curve_is_the_same_curve_run_alone():
    """Choosing a heatmap on val reads only deletion: asked for one curve, only that one goes through the model,
    in the order asked, with the values the three-curve call gives (to float rounding: the batch is smaller)."""
    size, box = 32, slice(8, 16)
    model = RegionModel(size, box).eval()
    image = np.random.default_rng(0).integers(0, 256, (1, size, size), dtype=np.uint8)
    heat = np.random.default_rng(1).random((size, size)).astype(np.float32)
    deletion, insertion, blurred = deletion_insertion(model, image, heat, target=1, steps=8)
    assert len({deletion, insertion, blurred}) == 3
    alone = deletion_insertion(model, image, heat, target=1, steps=8, curves=["blurred_deletion", "deletion"])
    assert alone == pytest.approx((blurred, deletion), abs=1e-6)
    with pytest.raises(ValueError, match=r"unknown perturbation curve\(s\) \['erasure'\]"):
        deletion_insertion(model, image, heat, target=1, curves=["erasure"])


class DarkPatchModel(torch.nn.Module):
    """Calls an image positive from a bright square's fine edge, and negative wherever it sees black pixels."""

    def __init__(self, size: int, box: slice) -> None:
        super().__init__()
        self.edge = torch.zeros(size, size)
        self.edge[box, box.start] = 1.0  # the square's left edge column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, 0]
        detail = (grey - torch.roll(grey, 1, dims=2)).clamp(min=0)  # a sharp step from dark to bright
        evidence = (detail * self.edge).sum(dim=(1, 2)) / self.edge.sum()
        black = (grey < -1.9).float().mean(dim=(1, 2))  # normalised: pixel value 0 is -2
        return torch.stack([torch.zeros_like(evidence), 3 * evidence - 2 - 500 * black], dim=1)


def test_blurred_deletion_tells_the_finding_from_anywhere_when_black_patches_alone_move_the_model():
    size, box = 32, slice(8, 16)
    image = np.full((1, size, size), 120, np.uint8)
    image[0, box, box] = 240
    right = np.zeros((size, size), np.float32)
    right[box, box.start] = 1.0
    wrong = np.zeros((size, size), np.float32)
    wrong[24, 20:28] = 1.0
    model = DarkPatchModel(size, box).eval()
    del_right, _, blur_right = deletion_insertion(model, image, right, target=1, steps=32)
    del_wrong, _, blur_wrong = deletion_insertion(model, image, wrong, target=1, steps=32)
    assert abs(del_right - del_wrong) < 0.02  # black anywhere drives the probability down at the same pace
    assert blur_right < blur_wrong - 0.05


def test_pointing_game_and_iou_on_known_masks():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 4:8] = 1.0
    assert pointing_hit(heat, mask) and mask_iou(heat, mask) == 1.0
    shifted = np.roll(heat, 2, axis=1)  # half the square overlaps
    assert mask_iou(shifted, mask) == pytest.approx(8 / 24)
    assert not pointing_hit(np.roll(heat, 8, axis=0), mask)
    assert mask_iou(np.zeros_like(heat), mask) == 0.0


def test_random_maps_are_smooth_seeded_and_scaled():
    maps = random_maps(3, 32, seed=1)
    assert maps.shape == (3, 32, 32) and maps.min() == 0.0 and maps.max() == 1.0
    assert np.array_equal(maps, random_maps(3, 32, seed=1)) and not np.array_equal(maps, random_maps(3, 32, seed=2))
    assert np.abs(np.diff(maps, axis=-1)).mean() < 0.1  # blobs, not pixel noise


def test_segments_follow_grey_and_multichannel_images(cached):
    from medxfer.cache import load_cached

    xray = load_cached(*cached["xray_source"]).splits["test"].images[0]
    ct = load_cached(*cached["ct"]).splits["test"].images[0]
    for image in (xray, ct):
        labels = segments(image, 40, seed=0)
        assert labels.shape == image.shape[1:] and 10 <= labels.max() + 1 <= 80


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "convnext_atto", "mobilenetv3_small_050"])
def test_cam_target_layer_is_found_for_timm_cnns(arch):
    torch.manual_seed(0)
    model = models.create(arch, num_classes=2, in_chans=1).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 1, 64, 64), dtype=np.uint8)
    for method in ("gradcam", "gradcampp"):
        maps = heatmaps(method, model, images, [1, 0])
        assert maps.shape == (2, 64, 64) and 0 <= maps.min() <= maps.max() <= 1


def test_outcomes_and_choice_cover_every_group():
    labels, predicted = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 1, 0, 1, 0])
    groups = outcomes(labels, predicted, 2)
    assert list(groups) == ["TP", "FN", "FP", "TN", "TP", "TN"]
    assert set(groups[choose_images(groups, 4, seed=0)]) == {"TP", "FN", "FP", "TN"}
    assert list(outcomes(np.array([2, 1]), np.array([2, 0]), 3)) == ["correct", "wrong"]


def test_explain_writes_annotated_overlays_gallery_and_faithfulness(cached, trained, tmp_path):
    manifest, images = cached["xray_source"]
    table = explain_model(trained, manifest, images, tmp_path, SETTINGS, seed=0)
    assert len(table) == 3 and set(table["outcome"]) <= {"correct", "wrong"}  # four classes
    for method in ("gradcam", "gradcampp", "lime"):
        for rel in table[f"{method}_png"]:
            with Image.open(tmp_path / rel) as img:
                assert img.size == (2 * PANEL, PANEL + 16) and img.mode == "RGB"
    heat = np.load(tmp_path / "heatmaps.npz")
    assert heat["gradcam"].shape == (3, 64, 64) and heat["lime"].max() <= 1.0
    assert heat["gradcam"].std() > 0  # a real map, not a constant
    with Image.open(tmp_path / "gallery.png") as img:
        assert img.size[0] > 200
    faith = pd.read_csv(tmp_path / "faithfulness.csv")
    assert set(faith["method"]) == {"gradcam", "gradcampp", "lime", "random", "centre"}
    assert faith.groupby("method").size().eq(6).all()
    assert faith["has_mask"].all()  # images with a finding mask were chosen
    index = pd.read_csv(tmp_path / "index.csv").set_index("image_id")
    shown = faith[faith["image_id"].isin(index.index)].drop_duplicates("image_id").set_index("image_id")
    assert len(shown) and (shown["predicted"] == index.loc[shown.index, "prediction"]).all()  # as the gallery decides
    assert faith.groupby("image_id")["predicted"].nunique().eq(1).all()
    assert faith[["pointing_hit", "pointing_hit_tol"]].stack().isin([0.0, 1.0]).all()
    assert (faith["pointing_hit_tol"] >= faith["pointing_hit"]).all()
    scores = faith[LOCALISATION_COLUMNS + ["deletion_auc", "insertion_auc"]]
    assert scores.stack().dropna().between(0, 1).all()
    # only energy in the box is undefined, for a map without positive heat (LIME may find no positive segment)
    assert scores.drop(columns="energy_in_box").notna().all().all()
    baselines = faith[faith["method"].isin(["random", "centre"])]
    assert baselines["energy_in_box"].notna().all()
    seconds = faith.groupby("method")["seconds_per_image"].agg(["min", "max"])
    assert (seconds["min"] == seconds["max"]).all() and seconds.loc["lime", "min"] > seconds.loc["centre", "min"] > 0
    centre = faith[faith["method"] == "centre"]
    assert centre["deletion_auc"].notna().all()
    # beside the scores: which method was chosen on val and how it fared in the randomised-model check
    selection = json.loads((tmp_path / "selection.json").read_text())
    checks = faith.groupby("method", dropna=False)[["chosen", "sanity", "beats_random_on_val"]].first()
    assert checks["chosen"].sum() == 1 and checks.loc[selection["method"], "chosen"]
    assert checks.loc[["random", "centre"], "sanity"].eq("baseline").all()
    assert checks.loc[["random", "centre"], "beats_random_on_val"].isna().all()
    rows = {(r["method"], r["layer"]): r for r in selection["candidates"]}
    for method, layer in (("gradcam", selection["layer"]), ("gradcampp", selection["layer"]), ("lime", None)):
        row = rows[(method, layer)]
        rho = row["spearman_vs_random_model"]
        expected = "not comparable" if rho is None else "flagged" if row["flagged"] else "pass"
        assert checks.loc[method, "sanity"] == expected, method
        beats = row["val_deletion_auc"] < selection["random_map_val_deletion_auc"]
        assert checks.loc[method, "beats_random_on_val"] == beats, method


def test_gallery_outcomes_follow_the_threshold_the_model_carries(cached, tmp_path):
    """A binary model decides by the threshold in its model.json (chosen on val), so its gallery labels TP/FP/FN/TN
    as its metrics count them: all-positive at threshold 0, all-negative above 1."""
    manifest, images = cached["mura"]
    model_dir = tmp_path / "model"
    finetune_model(
        manifest,
        images,
        "resnet10t",
        "scratch",
        FINETUNE,
        model_dir,
        threads=2,
        seed=0,
        decision=DecisionSection.from_config({"threshold": "cohen_kappa"}),
    )
    meta = models.read_meta(model_dir)
    assert meta["decision"]["rule"] == "cohen_kappa" and meta["decision"]["chosen_on"] == "val"
    settings = replace(SETTINGS, methods=("gradcam",), n_images=4, n_faithfulness=1)
    for threshold, allowed in ((0.0, {"TP", "FP"}), (1.01, {"TN", "FN"})):
        (model_dir / "model.json").write_text(
            json.dumps(meta | {"decision": meta["decision"] | {"threshold": threshold}})
        )
        table = explain_model(model_dir, manifest, images, tmp_path / str(threshold), settings, seed=0)
        assert len(table) == 4 and set(table["outcome"]) <= allowed, table
        assert (table["prediction"] == (1 if threshold == 0.0 else 0)).all()
