"""Localisation of heatmaps on masks whose answer is known, the baselines, npz masks end to end, and the summary."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medxfer.config import ConfigError, validate
from medxfer.imaging import read_mask
from medxfer.ingest import ingest_dataset, read_manifest
from medxfer.localisation import (
    bounding_box,
    centre_maps,
    energy_in_box,
    localisation,
    mask_iou,
    pixel_auc,
    pointing_hit,
    pointing_hit_tolerant,
    random_maps,
    versus_baselines,
)
from medxfer.metrics import paired_mean_difference
from medxfer.report import summarize_faithfulness

SIZE = 224


def square_mask(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def peak_at(size: int, row: int, col: int, sigma: float = 6.0) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_a_map_peaked_inside_the_mask_scores_a_hit_both_ways():
    mask = square_mask(SIZE, 100, 100, 20)
    scores = localisation(peak_at(SIZE, 110, 110), mask)
    assert scores["pointing_hit"] == 1.0 and scores["pointing_hit_tol"] == 1.0
    assert scores["pixel_auc"] > 0.99


def test_tolerance_is_fifteen_pixels_at_224_and_scales_with_the_image():
    mask = square_mask(SIZE, 100, 100, 20)  # columns 100..119
    near = peak_at(SIZE, 110, 129)  # 10 px right of the mask
    assert not pointing_hit(near, mask) and pointing_hit_tolerant(near, mask)
    edge = peak_at(SIZE, 110, 134)  # 15 px: still a hit; 16 px: a miss
    assert pointing_hit_tolerant(edge, mask) and not pointing_hit_tolerant(peak_at(SIZE, 110, 135), mask)
    small_mask = square_mask(112, 50, 50, 10)  # the same geometry at half size: 7.5 px tolerance
    assert pointing_hit_tolerant(peak_at(112, 55, 66), small_mask)  # 7 px away
    assert not pointing_hit_tolerant(peak_at(112, 55, 68), small_mask)  # 9 px away


def test_a_flat_top_points_from_its_middle_not_its_first_pixel():
    """LIME's maps are constant per superpixel: a plateau 40 px tall over a 10 px finding at its middle."""
    mask = square_mask(SIZE, 115, 100, 10)
    plateau = np.zeros((SIZE, SIZE), np.float32)
    plateau[100:140, 95:115] = 1.0  # its first pixel in raster order (row 100) is 15 px above the finding
    assert pointing_hit(plateau, mask) and pointing_hit_tolerant(plateau, mask)
    off_centre = np.zeros_like(plateau)
    off_centre[20:60, 95:115] = 1.0  # the same plateau far above: its middle misses
    assert not pointing_hit_tolerant(off_centre, mask)


def test_energy_in_box_is_the_share_of_positive_heat_inside():
    box = square_mask(16, 0, 0, 8)  # a quarter of the image
    assert energy_in_box(np.ones((16, 16)), box) == pytest.approx(0.25)
    heat = np.where(box, 3.0, -1.0)  # negative heat outside counts as none
    assert energy_in_box(heat, box) == 1.0
    assert np.isnan(energy_in_box(np.zeros((16, 16)), box))
    mask = np.zeros((16, 16), bool)
    mask[2, 3] = mask[6, 9] = True
    assert bounding_box(mask).sum() == 5 * 7 and bounding_box(mask)[2:7, 3:10].all()
    # without a box the mask's bounding box is used; a given box replaces it
    assert localisation(np.ones((16, 16)), mask)["energy_in_box"] == pytest.approx(35 / 256)
    assert localisation(np.ones((16, 16)), mask, box)["energy_in_box"] == pytest.approx(0.25)


def test_iou_and_pixel_auc_on_known_geometry():
    mask = square_mask(16, 4, 4, 4)
    heat = mask.astype(np.float32)
    assert mask_iou(heat, mask) == 1.0 and pixel_auc(heat, mask) == 1.0
    assert pixel_auc(1 - heat, mask) == 0.0 and pixel_auc(np.ones((16, 16)), mask) == 0.5
    assert mask_iou(np.roll(heat, 2, axis=1), mask) == pytest.approx(8 / 24)
    assert np.isnan(pixel_auc(heat, np.zeros((16, 16), bool)))


def test_centre_prior_is_a_centred_gaussian_and_beats_nothing_off_centre():
    maps = centre_maps(2, 65)
    assert maps.shape == (2, 65, 65) and maps.max() == 1.0 and np.unravel_index(maps[0].argmax(), (65, 65)) == (32, 32)
    assert np.allclose(maps[0], maps[0].T) and np.allclose(maps[0], maps[0][::-1])
    corner = square_mask(65, 0, 0, 10)
    assert localisation(maps[0], corner)["pointing_hit_tol"] == 0.0
    assert localisation(maps[0], square_mask(65, 28, 28, 9))["pointing_hit"] == 1.0


def test_random_maps_are_smooth_seeded_and_scaled():
    maps = random_maps(3, 32, seed=1)
    assert maps.shape == (3, 32, 32) and maps.min() == 0.0 and maps.max() == 1.0
    assert np.array_equal(maps, random_maps(3, 32, seed=1)) and not np.array_equal(maps, random_maps(3, 32, seed=2))


def test_read_mask_reads_png_and_npz_refs_and_names_a_bad_one(tmp_path):
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[1, 2:4, 2:6] = 1
    np.savez(tmp_path / "m.npz", polygons=masks)
    mask = read_mask(f"{tmp_path}/m.npz#polygons[1]", 16)
    assert mask.shape == (16, 16) and mask.sum() == 4 * 8 and mask[4:8, 4:12].all()
    Image.fromarray(masks[1] * 255).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(str(tmp_path / "m.png"), 16), mask)
    assert read_mask("", 16) is None
    with pytest.raises(ValueError, match=r"m\.npz#polygons\[5\].*out of range"):
        read_mask(f"{tmp_path}/m.npz#polygons[5]", 16)
    with pytest.raises(ValueError, match="no array 'boxes'"):
        read_mask(f"{tmp_path}/m.npz#boxes[0]", 16)


def write_npz_set(root, n=40, size=16, masks_n=None):
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(np.int64)
    images = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
    np.savez(root / "set.npz", images=images, labels=labels, image_ids=np.array([f"im{i}" for i in range(n)]))
    masks_n = n if masks_n is None else masks_n
    polygons = np.zeros((masks_n, size, size), np.uint8)
    boxes = np.zeros_like(polygons)
    annotated = np.zeros(masks_n, bool)
    for i in range(1, masks_n, 2):  # every positive image has a finding
        polygons[i, 4:6, 4:8], boxes[i, 3:7, 3:9], annotated[i] = 1, 1, True
    polygons[0, 0, 0] = 1  # a mask on an image not marked annotated is ignored
    np.savez(root / "masks.npz", polygons=polygons, boxes=boxes, annotated=annotated)


def validated(dataset: dict) -> dict:
    return validate({"datasets": {"set": dataset}, "finetune": {"targets": ["set"], "inits": ["scratch"]}})


def npz_dataset(root, **masks):
    dataset = {"format": "npz", "root": str(root), "file": "set.npz", "layout": "flat", "size": 16}
    return validated(dataset | {"npz_masks": {"file": "masks.npz", "key": "polygons"} | masks})["datasets"]["set"]


def test_npz_masks_become_manifest_refs_for_annotated_images(tmp_path):
    write_npz_set(tmp_path)
    dataset = npz_dataset(tmp_path, box_key="boxes")
    ingest_dataset("set", dataset, tmp_path / "out/manifest.csv", tmp_path / "out/quarantine.csv")
    table = read_manifest(tmp_path / "out/manifest.csv")
    positive = table["label"] == 1
    assert (table.loc[positive, "mask"] != "").all() and (table.loc[~positive, "mask"] == "").all()
    assert (table.loc[positive, "box"].str.contains(r"masks\.npz#boxes\[")).all()
    row = table[positive].iloc[0]
    mask, box = read_mask(row["mask"], 16), read_mask(row["box"], 16)
    assert mask.sum() == 8 and box.sum() == 24 and not (mask & ~box).any()


def test_npz_masks_that_do_not_fit_the_images_stop_ingest(tmp_path):
    from medxfer.ingestbase import IngestError

    write_npz_set(tmp_path, masks_n=30)
    with pytest.raises(IngestError, match=r"masks\.npz: 'polygons' has 30 masks but the images array has 40"):
        ingest_dataset("set", npz_dataset(tmp_path), tmp_path / "m.csv", tmp_path / "q.csv")
    write_npz_set(tmp_path)
    with pytest.raises(IngestError, match="no array 'outlines'"):
        ingest_dataset("set", npz_dataset(tmp_path, key="outlines"), tmp_path / "m.csv", tmp_path / "q.csv")


def test_npz_masks_only_on_npz_data_sets(tmp_path):
    dataset = {"format": "imagefolder", "root": str(tmp_path), "npz_masks": {"file": "m.npz", "key": "k"}}
    with pytest.raises(ConfigError, match="npz_masks': only for format 'npz'"):
        validated(dataset)


def faith_table(method_offsets: dict[str, float], n=30, seed=0) -> pd.DataFrame:
    """Per-image scores where each method is its baseline plus a known offset and a little noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, n)
    rows = []
    for method, offset in method_offsets.items():
        noise = rng.normal(0, 0.02, n)
        for i in range(n):
            value = base[i] + offset + noise[i]
            rows.append(
                {"target": "t", "init": "imagenet", "arch": "a", "image_id": f"i{i}", "label": 1, "method": method}
                | {"has_mask": True, "pointing_hit": 1.0, "pointing_hit_tol": value, "energy_in_box": value}
                | {"iou": 0.1, "pixel_auc": 0.7, "deletion_auc": 1 - value, "insertion_auc": value}
                | {"seconds_per_image": 0.01}
            )
    return pd.DataFrame(rows)


def test_a_method_beats_the_baselines_only_when_its_paired_interval_clears_zero():
    images = faith_table({"good": 0.2, "tied": 0.0, "random": 0.0, "centre": 0.05})
    table = versus_baselines(images, ["target", "init", "arch"], 500, 0).set_index("method")
    assert table.loc["good", "pointing_hit_tol_minus_random"] == pytest.approx(0.2, abs=0.02)
    assert table.loc["good", "pointing_hit_tol_minus_random_lo"] > 0.15
    assert table.loc["good", ["beats_baselines_energy_in_box", "beats_baselines_deletion_auc"]].all()
    assert table.loc["good", "deletion_auc_minus_centre_hi"] < 0  # lower deletion is better
    assert not table.loc["tied", "beats_baselines_pointing_hit_tol"]
    assert table.loc["random", "beats_baselines_pointing_hit_tol"] is None


def test_summary_has_every_score_the_comparison_and_a_plot(tmp_path):
    path = tmp_path / "faith.csv"
    faith_table({"gradcam": 0.2, "random": 0.0, "centre": 0.0}).to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    assert set(means["method"]) == {"gradcam", "random", "centre"}
    assert {"pointing_hit_tol", "energy_in_box", "pixel_auc", "seconds_per_image"} <= set(means.columns)
    per_model = pd.read_csv(tmp_path / "per_model.csv").set_index("method")
    assert bool(per_model.loc["gradcam", "beats_baselines_deletion_auc"])
    assert pd.isna(per_model.loc["centre", "beats_baselines_deletion_auc"])
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_a_target_is_judged_by_the_method_each_model_chose_with_its_images_counted_once(tmp_path):
    """The summary's `chosen_on_val` row pools each model's val-chosen method: two models on the same 30 images,
    one chose a method far ahead of the baselines, the other one level with them. Its comparison pairs each image's
    mean over the models, so the interval comes from 30 images, not 60 rows."""
    first = faith_table({"good": 0.2, "tied": 0.0, "random": 0.0, "centre": 0.0}, seed=1).assign(arch="a")
    second = faith_table({"good": 0.2, "tied": 0.0, "random": 0.0, "centre": 0.0}, seed=2).assign(arch="b")
    first["chosen"], second["chosen"] = first["method"] == "good", second["method"] == "tied"
    path = tmp_path / "faith.csv"
    pd.concat([first, second]).to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    row = means.set_index("method").loc["chosen_on_val"]
    picked = pd.concat([first[first["chosen"]], second[second["chosen"]]])
    assert row["n_images"] == 60
    assert row["energy_in_box"] == pytest.approx(picked["energy_in_box"].mean())
    per_image = pd.concat([first, second]).groupby(["image_id", "method"])["energy_in_box"].mean().unstack()
    chosen_per_image = picked.groupby("image_id")["energy_in_box"].mean()
    expected = paired_mean_difference(chosen_per_image, per_image["random"], 1000, 0)
    assert row["energy_in_box_minus_random"] == pytest.approx(expected[0])
    assert (row["energy_in_box_minus_random_lo"], row["energy_in_box_minus_random_hi"]) == pytest.approx(expected[1:])
    assert row["energy_in_box_minus_random"] == pytest.approx(0.1, abs=0.02)  # half the models chose +0.2
    assert bool(row["beats_baselines_energy_in_box"])
    assert not means.set_index("method").loc["tied", "beats_baselines_energy_in_box"]
    # a table from before the choice was recorded has no such row
    pd.concat([first, second]).drop(columns="chosen").to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    assert "chosen_on_val" not in set(means["method"])


def test_the_trusted_row_keeps_only_models_whose_chosen_map_beat_the_random_map_on_val(tmp_path):
    """`trusted_on_val` pools the chosen maps a gallery shows without a warning: here only the first model's, whose
    chosen map beat the random map on val; the second model's chosen map did not and is left out."""
    first = faith_table({"good": 0.2, "tied": 0.0, "random": 0.0, "centre": 0.0}, seed=1).assign(arch="a")
    second = faith_table({"good": 0.2, "tied": 0.0, "random": 0.0, "centre": 0.0}, seed=2).assign(arch="b")
    first["chosen"], second["chosen"] = first["method"] == "good", second["method"] == "tied"
    first["beats_random_on_val"] = first["method"].map({"good": True, "tied": False})
    second["beats_random_on_val"] = second["method"].map({"good": True, "tied": False})
    path = tmp_path / "faith.csv"
    pd.concat([first, second]).to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    rows = means[means["subset"] == "all"].set_index("method")
    assert rows.loc["chosen_on_val", "n_images"] == 60 and rows.loc["trusted_on_val", "n_images"] == 30
    trusted = first.loc[first["chosen"], "energy_in_box"].mean()
    assert rows.loc["trusted_on_val", "energy_in_box"] == pytest.approx(trusted)
    assert rows.loc["trusted_on_val", "energy_in_box_minus_random"] == pytest.approx(0.2, abs=0.03)
    assert bool(rows.loc["trusted_on_val", "beats_baselines_energy_in_box"])
    # no model's chosen map beat the random map on val: no trusted row, rather than an empty one
    pd.concat([second.assign(arch="a"), second]).to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    assert "trusted_on_val" not in set(means["method"]) and "chosen_on_val" in set(means["method"])


def test_findings_the_model_detects_are_summarised_apart(tmp_path):
    """`predicted` (the model's decision per image) splits off the masked findings it calls: the same images for
    every method, their own means and baseline comparison."""
    faith = faith_table({"gradcam": 0.2, "random": 0.0, "centre": 0.0}, n=30)
    detected_ids = {f"i{i}" for i in range(0, 30, 3)}  # the model calls 10 of the 30 findings
    faith.insert(2, "predicted", np.where(faith["image_id"].isin(detected_ids), 1, 0))
    path = tmp_path / "faith.csv"
    faith.to_csv(path, index=False)
    means = summarize_faithfulness([path], tmp_path / "per_model.csv", tmp_path / "means.csv", tmp_path / "f.png")
    per_model = pd.read_csv(tmp_path / "per_model.csv")
    assert list(per_model.columns[:5]) == ["target", "init", "arch", "method", "subset"]
    detected = per_model[per_model["subset"] == "detected"].set_index("method")
    assert (detected["n_images"] == 10).all() and len(per_model) == 6
    expected = faith[faith["image_id"].isin(detected_ids)].groupby("method")["pointing_hit_tol"].mean()
    assert detected["pointing_hit_tol"].to_dict() == pytest.approx(expected.round(4).to_dict(), abs=1e-4)
    assert bool(detected.loc["gradcam", "beats_baselines_pointing_hit_tol"])
    assert set(means["subset"]) == {"all", "detected"}
