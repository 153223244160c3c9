"""Training and features on small cached demo sets: real torch computations on CPU."""

import json

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image

from medxfer import models
from medxfer.batches import class_weights
from medxfer.cache import CachedDataset, Split, load_cached
from medxfer.features import extract_features, pooled_features
from medxfer.inference import predict_logits, predict_proba
from medxfer.log import get_logger
from medxfer.metrics import choose_threshold, classification_metrics, decide
from medxfer.objectives import Supervised, class_evidence_map, mass_outside
from medxfer.prediction_files import read_predictions
from medxfer.resume import clear_resume
from medxfer.runtime import seed_everything
from medxfer.sections import DecisionSection, FeaturesSection, FinetuneTraining, PretrainTraining
from medxfer.train import finetune_model, fit, pretrain_model, set_strategy

LOG = get_logger("test_train")
FEATURES = FeaturesSection.from_config({"batch_size": 64})


def tiny_data(n_train: int = 24, n_val: int = 8, size: int = 32, channels: int = 1, seed: int = 0) -> CachedDataset:
    """A learnable two-class set in memory: class 1 has a bright square. Seconds to train on at 32 px."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, size=(n, channels, size, size), dtype=np.uint8)
        images[labels == 1, :, 8:16, 8:16] = 230
        ids = np.array([f"{name}{i}" for i in range(n)])
        splits[name] = Split(images, labels.astype(np.int64), ids, ids, np.array([""] * n))
    return CachedDataset(classes=["normal", "finding"], splits=splits)


def tiny_params(**overrides) -> FinetuneTraining:
    return FinetuneTraining.from_config(
        dict(lr=3e-3, weight_decay=1e-4, epochs=2, batch_size=8, augment=AUG, strategy="full") | overrides
    )


AUG = dict(hflip=0.5, degrees=5, translate=0.05, scale=[0.95, 1.05], brightness=0.1, contrast=0.1, noise_std=0.01)
PARAMS = dict(
    lr=1e-3, weight_decay=1e-4, epochs=2, batch_size=16, imbalance="weighted_loss", augment=AUG, strategy="full"
)


ARGMAX = DecisionSection.from_config({})
KAPPA = DecisionSection.from_config({"threshold": "cohen_kappa"})


def tune(*args, decision: DecisionSection = ARGMAX, **kwargs) -> dict:
    """finetune_model with the config's default decision unless a test sets one."""
    return finetune_model(*args, decision=decision, **kwargs)


def ft(**overrides) -> FinetuneTraining:
    return FinetuneTraining.from_config(PARAMS | overrides)


def pre(**overrides) -> PretrainTraining:
    return PretrainTraining.from_config({k: v for k, v in PARAMS.items() if k != "strategy"} | overrides)


@pytest.fixture(scope="module")
def pretrained(cached, tmp_path_factory):
    manifest, images = cached["xray_source"]
    out = tmp_path_factory.mktemp("pretrain")
    pretrain_model(manifest, images, "resnet10t", pre(), out, threads=2, seed=0)
    return out


def test_pretrain_writes_checkpoint_trio_with_metadata(pretrained):
    meta = json.loads((pretrained / "model.json").read_text())
    assert meta["classes"][0] == "normal" and len(meta["classes"]) == 4
    assert meta["in_chans"] == 1 and meta["stage"] == "pretrain"
    log = pd.read_csv(pretrained / "log.csv")
    assert list(log["epoch"]) == [1, 2] and log["train_loss"].notna().all()


def test_pretraining_from_imagenet_weights_refines_them(cached, pretrained, tmp_path):
    """`pretrain.init: imagenet`: the backbone starts from the local ImageNet file (an RGB stem on grey images) and
    pretraining moves it from there; the same run from scratch ends far from that file."""
    manifest, images = cached["xray_source"]
    imagenet = timm.create_model("resnet10t", num_classes=1000)  # as timm writes ImageNet weights
    path = tmp_path / "imagenet.safetensors"
    safetensors.torch.save_file(imagenet.state_dict(), str(path))
    pretrain_model(manifest, images, "resnet10t", pre(epochs=1), tmp_path / "out", threads=2, seed=0, init_path=path)
    model, meta = models.load(tmp_path / "out")
    assert meta["init"] == "imagenet" and meta["init_path"] == str(path)
    key = "layer4.0.conv1.weight"
    start, from_scratch = imagenet.state_dict()[key], models.load(pretrained)[0].state_dict()[key]
    assert (model.state_dict()[key] - start).norm() < 0.5 * (from_scratch - start).norm()
    assert not torch.equal(model.state_dict()[key], start)
    assert json.loads((pretrained / "model.json").read_text())["init"] == "scratch"


def test_finetune_indomain_on_ct_adapts_channels_and_reports_metrics(cached, pretrained, tmp_path):
    manifest, images = cached["ct"]
    metrics = tune(manifest, images, "resnet10t", "indomain", ft(), tmp_path, init_path=pretrained, threads=2, seed=0)
    model, meta = models.load(tmp_path)
    assert meta["in_chans"] == 2 and meta["init"] == "indomain"
    assert 0 <= metrics["accuracy"] <= 1 and metrics["n"] == len(pd.read_csv(tmp_path / "predictions.csv"))
    # the backbone started from the pretrained weights: deep layers are closer to them than to a fresh init
    source = models.load(pretrained)[0].state_dict()["layer4.0.conv1.weight"]
    tuned = model.state_dict()["layer4.0.conv1.weight"]
    fresh = models.create("resnet10t", 2, 2).state_dict()["layer4.0.conv1.weight"]
    assert (tuned - source).norm() < (tuned - fresh).norm()


def test_training_is_deterministic_on_cpu(cached, tmp_path):
    manifest, images = cached["mura"]
    first = tune(manifest, images, "resnet10t", "scratch", ft(), tmp_path / "a", threads=2, seed=1)
    second = tune(manifest, images, "resnet10t", "scratch", ft(), tmp_path / "b", threads=2, seed=1)
    assert first == second
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


def test_decision_threshold_comes_from_the_val_split(cached, tmp_path):
    manifest, images = cached["mura"]
    metrics = tune(manifest, images, "resnet10t", "scratch", ft(), tmp_path, threads=2, seed=0, decision=KAPPA)
    model, _ = models.load(tmp_path)
    val = load_cached(manifest, images).splits["val"]
    expected = choose_threshold(val.labels, predict_proba(model, val.images, torch.device("cpu")), "cohen_kappa")
    assert metrics["decision"] == {"rule": "cohen_kappa", "threshold": expected, "chosen_on": "val"}
    table, proba = read_predictions(tmp_path / "predictions.csv")
    np.testing.assert_array_equal(table["prediction"], decide(proba, expected))
    assert expected is not None
    recomputed = classification_metrics(table["label"].to_numpy(), proba, expected)
    assert metrics["cohen_kappa"] == pytest.approx(recomputed["cohen_kappa"])


def test_linear_probe_trains_only_the_head(cached, tmp_path):
    model = models.create("resnet10t", 2, 1)
    set_strategy(model, "linear_probe")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    manifest, images = cached["mura"]
    seed_everything(0)  # finetune_model seeds the same way before it builds the model
    before = models.create("resnet10t", 2, 1).state_dict()
    probe = ft(strategy="linear_probe", epochs=1)
    tune(manifest, images, "resnet10t", "scratch", probe, tmp_path, threads=2, seed=0)
    after = models.load(tmp_path)[0].state_dict()
    assert torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_class_weights_favour_the_minority():
    weights = class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights[1] > weights[0] and torch.isclose(weights.mean(), torch.tensor(1.0))


def test_features_per_split_without_nan(cached, pretrained, tmp_path):
    manifest, images = cached["xray_source"]
    extract_features([pretrained], manifest, images, [tmp_path / "f.npz"], FEATURES, threads=2)
    data = np.load(tmp_path / "f.npz")
    table = pd.read_csv(manifest)
    for split in ("train", "val", "test"):
        assert data[f"X_{split}"].shape == ((table["split"] == split).sum(), 512)
        assert np.isfinite(data[f"X_{split}"]).all()
        assert list(data[f"ids_{split}"]) == table.loc[table["split"] == split, "image_id"].tolist()


def _fit_model(strategy: str, tmp_path, truncate_stages=None, **params):
    seed_everything(0)
    model = models.create("resnet10t", 2, 1, truncate_stages)
    set_strategy(model, strategy)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, tiny_data(), tiny_params(epochs=1, **params), torch.device("cpu"), tmp_path / "log.csv", 0, LOG)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return before, changed


@pytest.mark.parametrize("strategy", ["full", "truncated"])
def test_full_and_truncated_train_every_parameter(strategy, tmp_path):
    before, changed = _fit_model(strategy, tmp_path, 3 if strategy == "truncated" else None)
    weights = {k for k in before if k.endswith(".weight")}
    assert weights <= changed


def test_linear_probe_changes_only_the_head_even_batchnorm_statistics(tmp_path):
    before, changed = _fit_model("linear_probe", tmp_path)
    assert changed == {"fc.weight", "fc.bias"}


def test_gradual_unfreezing_trains_only_the_head_before_unfreeze_epoch(tmp_path):
    before, changed = _fit_model("full", tmp_path, unfreeze_epoch=2)
    assert changed == {"fc.weight", "fc.bias"}


def test_backbone_lr_mult_moves_the_backbone_less(tmp_path):
    def backbone_step(mult):
        seed_everything(0)
        model = models.create("resnet10t", 2, 1)
        start = model.layer3[0].conv1.weight.detach().clone()
        params = tiny_params(epochs=1, backbone_lr_mult=mult, schedule="cosine")
        fit(model, tiny_data(), params, torch.device("cpu"), tmp_path / "log.csv", 0, LOG)
        return (model.layer3[0].conv1.weight - start).norm()

    assert backbone_step(0.01) < backbone_step(1.0) / 5


def test_truncated_model_is_smaller_saves_loads_and_serves_features_and_gradcam(tmp_path):
    full = models.create("resnet10t", 2, 1)
    cut = models.create("resnet10t", 2, 1, truncate_stages=3).eval()
    assert models.num_parameters(cut) < models.num_parameters(full) / 10
    assert [f["module"] for f in cut.feature_info] == ["act1", "layer1", "layer2"]
    meta = {"arch": "resnet10t", "classes": ["a", "b"], "in_chans": 1, "input_size": [1, 32, 32]}
    models.save(tmp_path, cut, meta)
    loaded, meta = models.load(tmp_path)
    assert meta["truncate_stages"] == 3 and meta["num_parameters"] == models.num_parameters(cut)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(cut(x), loaded(x))
    assert models.gradcam_layer(loaded, 32) is loaded.layer2  # the deepest stage that is left
    images = np.random.default_rng(0).integers(0, 255, (3, 1, 32, 32), dtype=np.uint8)
    assert pooled_features(loaded, images, torch.device("cpu"), 8, stages=1).shape == (3, 128)  # layer2 channels
    assert pooled_features(loaded, images, torch.device("cpu"), 8, stages=2).shape == (3, 128 + 64)


def test_truncation_beyond_the_network_is_a_clear_error():
    with pytest.raises(ValueError, match="truncate_stages must be 1..4 for resnet10t"):
        models.create("resnet10t", 2, 1, truncate_stages=5)


def test_truncated_finetune_from_indomain_checkpoint(cached, pretrained, tmp_path):
    manifest, images = cached["mura"]
    params = ft(strategy="truncated", truncate_stages=4, epochs=1)
    metrics = tune(manifest, images, "resnet10t", "indomain", params, tmp_path, init_path=pretrained, threads=2, seed=0)
    model, meta = models.load(tmp_path)
    assert meta["truncate_stages"] == metrics["truncate_stages"] == 4
    assert metrics["num_parameters"] == meta["num_parameters"] == models.num_parameters(model)
    assert metrics["num_parameters"] < models.num_parameters(models.load(pretrained)[0]) / 2
    assert not hasattr(model, "layer4") or len(model.layer4) == 0
    extract_features([tmp_path], manifest, images, [tmp_path / "f.npz"], FEATURES, threads=2)
    assert np.load(tmp_path / "f.npz")["X_train"].shape[1] == 256  # layer3


def test_dilated_finetune_from_a_designed_checkpoint_records_its_stride_for_every_reader(cached, pretrained, tmp_path):
    manifest, images = cached["mura"]
    params = ft(output_stride=16, epochs=1)
    metrics = tune(manifest, images, "resnet10t", "indomain", params, tmp_path, init_path=pretrained, threads=2, seed=0)
    model, meta = models.load(tmp_path)
    assert meta["output_stride"] == metrics["output_stride"] == 16
    assert models.read_meta(pretrained)["output_stride"] == 32
    x = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape[-1] == 2 * models.load(pretrained)[0].forward_features(x).shape[-1]


class KilledError(Exception):
    """Stands in for a job killed after an epoch (the resume state is already written then)."""


def _train(tmp_path, name, resume_dir=None, kill_after=None, **overrides):
    """Three epochs on the tiny set; returns the final (best) weights, the last epoch's weights and the log."""
    seed_everything(0)
    model = models.create("resnet10t", 2, 1)
    aug = AUG | {"elastic": 0.5, "elastic_sigma": 3.0}
    params = tiny_params(**{"epochs": 3, "imbalance": "weighted_sampler", "augment": aug} | overrides)
    last = {}

    def on_epoch_end(epoch):
        last.update({k: v.clone() for k, v in model.state_dict().items()})
        if epoch == kill_after:
            raise KilledError

    data, cpu = tiny_data(), torch.device("cpu")
    model, history = fit(model, data, params, cpu, tmp_path / f"{name}.csv", 0, LOG, None, resume_dir, on_epoch_end)
    return model.state_dict(), last, [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resume_after_a_kill_ends_bit_for_bit_where_an_uninterrupted_run_ends(tmp_path):
    best, last, history = _train(tmp_path, "straight")
    resume = tmp_path / "resume"
    with pytest.raises(KilledError):
        _train(tmp_path, "killed", resume, kill_after=1)
    state = torch.load(resume / "state.pt", weights_only=True)  # tensors and plain values only, no pickled code
    assert state["epoch"] == 1 and len(state["history"]) == 1
    best_r, last_r, history_r = _train(tmp_path, "resumed", resume)
    assert history_r == history and len(history) == 3
    assert all(torch.equal(last[k], last_r[k]) for k in last)
    assert all(torch.equal(best[k], best_r[k]) for k in best)
    assert torch.load(resume / "state.pt", weights_only=True)["epoch"] == 3


def test_resume_state_of_other_settings_is_ignored(tmp_path):
    resume = tmp_path / "resume"
    with pytest.raises(KilledError):
        _train(tmp_path, "killed", resume, kill_after=2, epochs=2)
    killed = torch.load(resume / "state.pt", weights_only=True)["history"]
    _, _, history = _train(tmp_path, "other", resume, lr=1e-3, epochs=2)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0]["train_loss"] != killed[0]["train_loss"]  # trained epoch 1 itself, not taken from the state


def test_finetune_removes_its_resume_state_and_the_empty_folders_it_leaves(cached, tmp_path):
    manifest, images = cached["mura"]
    root = tmp_path / "resume"
    resume, sibling = root / "finetune/mura/scratch/resnet10t", root / "finetune/mura/imagenet/resnet10t"
    sibling.mkdir(parents=True)
    (sibling / "state.pt").write_bytes(b"another run, still going")
    params = ft(epochs=1)
    tune(manifest, images, "resnet10t", "scratch", params, tmp_path / "out", resume_dir=resume, resume_root=root)
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    calibration = metrics["calibration"]  # a temperature fitted on val, its effect on test and val
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "val"
    for split in ("test", "val"):
        assert {"ece", "brier", "reliability"} <= set(calibration[split]["after"])
    meta = json.loads((tmp_path / "out/model.json").read_text())
    assert meta["calibration"]["temperature"] == calibration["temperature"]
    assert not resume.parent.exists(), "its own empty folder stays behind"
    assert (sibling / "state.pt").read_bytes() == b"another run, still going"
    clear_resume(sibling, root)  # the last run: nothing of the tree is left, the folder above the root is kept
    assert not root.exists() and tmp_path.is_dir()
    outside = tmp_path / "elsewhere/state"
    outside.mkdir(parents=True)
    clear_resume(outside, root)  # not under the root: its empty parent is not the root's to remove
    assert not outside.exists() and outside.parent.is_dir()


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    _, _, history = _train(tmp_path, "patience", epochs=6, patience=1, lr=0.5, schedule="cosine")
    losses = [row["val_loss"] for row in history]
    assert len(history) < 6
    assert losses[-1] >= min(losses[:-1])  # the epoch that stopped it did not improve
    assert all(losses[i] < min(losses[:i]) for i in range(1, len(losses) - 1))  # every earlier one did


def test_weighted_sampler_draws_classes_evenly():
    from medxfer.batches import train_loader

    data = tiny_data(n_train=200)
    labels = (np.arange(200) % 10 == 0).astype(np.int64)  # 10 % minority
    split = Split(data.splits["train"].images, labels, labels, labels, labels)
    loader = train_loader(split, torch.from_numpy(labels), 50, torch.Generator().manual_seed(0), "weighted_sampler")
    drawn = torch.cat([target for _, target in loader])
    assert len(drawn) == 200 and 0.4 < drawn.float().mean() < 0.6


def test_multilabel_pretraining_from_a_medmnist_style_npz(tmp_path):
    from medxfer.cache import cache_images
    from medxfer.config import validate
    from medxfer.ingest import ingest_dataset

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        labels = rng.integers(0, 2, (n, 3)).astype(np.uint8)  # ChestMNIST-like: several findings per image
        images = rng.integers(0, 100, (n, 28, 28)).astype(np.uint8)
        for k, (r, c) in enumerate([(2, 2), (2, 16), (16, 9)]):
            images[labels[:, k] == 1, r : r + 9, c : c + 9] = 250
        arrays |= {f"{split}_images": images, f"{split}_labels": labels}
    np.savez(tmp_path / "chest.npz", **arrays)
    entry = {"format": "npz", "root": str(tmp_path), "file": "chest.npz", "classes": ["effusion", "mass", "nodule"]}
    ds = validate(
        {"datasets": {"chest": entry | {"size": 32}}, "finetune": {"targets": ["chest"], "inits": ["scratch"]}}
    )["datasets"]
    manifest, images = tmp_path / "chest/manifest.csv", tmp_path / "chest/images_32.npy"
    ingest_dataset("chest", ds["chest"], manifest, tmp_path / "chest/quarantine.csv", seed=0)
    cache_images(ds["chest"], manifest, images)
    assert pd.read_csv(manifest)["label_name"].str.contains(";").any()
    metrics = pretrain_model(manifest, images, "resnet10t", pre(epochs=1, multilabel=True), tmp_path / "out", threads=2)
    model, meta = models.load(tmp_path / "out")
    assert meta["classes"] == ["effusion", "mass", "nodule"] and meta["multilabel"] is True
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)
    assert 0 <= metrics["roc_auc"] <= 1 and 0 <= metrics["accuracy"] <= 1


def test_label_sets_split_joined_labels():
    from medxfer.objectives import label_sets

    names, matrix = label_sets(["none", "mass", "effusion;mass"])
    assert names == ["mass", "effusion"]
    assert matrix.tolist() == [[0, 0], [1, 0], [1, 1]]


def test_pooled_sources_share_one_label_space(cached, tmp_path):
    from medxfer.cache import load_cached

    (m1, i1), (m2, i2) = cached["xray_source"], cached["mura"]
    pretrain_model([m1, m2], [i1, i2], "resnet10t", pre(epochs=1), tmp_path, threads=2)
    meta = json.loads((tmp_path / "model.json").read_text())
    first, second = load_cached(m1, i1).classes, load_cached(m2, i2).classes
    assert meta["classes"] == first + [c for c in second if c not in first]
    assert meta["source"] == "xray_source+mura"
    assert pd.read_csv(tmp_path / "log.csv")["train_loss"].notna().all()


def test_pooling_sets_of_different_channels_is_a_clear_error(cached):
    from medxfer.cache import load_cached, pool

    with pytest.raises(ValueError, match="differ in image shape"):
        pool([load_cached(*cached["xray_source"]), load_cached(*cached["ct"])], ["xray_source", "ct"])


def test_pooling_sets_of_different_sizes_needs_one_pretraining_size(cached):
    from medxfer.cache import pool, resized
    from medxfer.imaging import resize

    chest, bone = load_cached(*cached["xray_source"]), load_cached(*cached["mura"])
    small = resized(bone, bone.size // 2)
    with pytest.raises(ValueError, match="differ in image shape.*pretrain.image_size"):
        pool([chest, small], ["xray_source", "mura"])
    pooled = pool([resized(chest, small.size), resized(small, small.size)], ["xray_source", "mura"])
    assert pooled.size == small.size and resized(small, small.size) is small
    for name, split in small.splits.items():
        assert split.images.shape[1:] == (bone.in_chans, small.size, small.size)
        assert np.array_equal(split.ids, bone.splits[name].ids)
        originals = bone.splits[name].images
        assert all(np.array_equal(a, resize(b, small.size)) for a, b in zip(split.images, originals, strict=True))
    assert pooled.splits["train"].images.shape[0] == len(chest.splits["train"].ids) + len(bone.splits["train"].ids)


def test_pretraining_at_a_smaller_size_fine_tunes_at_the_target_size(cached, tmp_path):
    manifest, images = cached["mura"]
    target = load_cached(manifest, images)
    half = target.size // 2
    params = pre(epochs=1, objective="simclr", projection_dim=32, batch_size=16, image_size=half)
    pretrain_model(manifest, images, "resnet10t", params, tmp_path / "ssl", threads=2, log_path=tmp_path / "ssl.log")
    meta = models.load(tmp_path / "ssl")[1]
    assert meta["input_size"] == [target.in_chans, half, half] and meta["config"]["image_size"] == half
    assert f"at {half} px" in (tmp_path / "ssl.log").read_text()
    tune(
        manifest, images, "resnet10t", "indomain", ft(epochs=1), tmp_path / "ft", init_path=tmp_path / "ssl", threads=2
    )
    assert models.load(tmp_path / "ft")[1]["input_size"] == [target.in_chans, target.size, target.size]


def test_simclr_trains_and_validates_on_the_view_windows(tmp_path):
    from medxfer.objectives import SimCLR

    data = tiny_data(size=32)
    params = pre(epochs=1, objective="simclr", projection_dim=16, batch_size=8, view_size=16)
    model = models.create("resnet10t", 0, 1)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((module.training, tuple(args[0].shape[-2:]))))
    fit(model, data, params, torch.device("cpu"), tmp_path / "log.csv", 0, LOG, SimCLR(data, params, 512, 0))
    assert {size for training, size in seen if training} == {(16, 16)}
    assert {size for training, size in seen if not training} == {(16, 16)}


def test_simclr_views_can_be_windows_smaller_than_the_images(cached, tmp_path):
    manifest, images = cached["mura"]
    target = load_cached(manifest, images)
    params = pre(epochs=1, objective="simclr", projection_dim=32, batch_size=16, view_size=target.size // 2)
    pretrain_model(manifest, images, "resnet10t", params, tmp_path / "ssl", threads=2, log_path=tmp_path / "ssl.log")
    assert f"at {target.size} px in {target.size // 2} px windows" in (tmp_path / "ssl.log").read_text()
    meta = models.load(tmp_path / "ssl")[1]
    assert meta["config"]["view_size"] == target.size // 2 and meta["input_size"][-1] == target.size
    assert np.isfinite(pd.read_csv(tmp_path / "ssl/log.csv")["val_loss"]).all()
    too_big = pre(epochs=1, objective="simclr", projection_dim=32, batch_size=16, view_size=target.size * 2)
    with pytest.raises(ValueError, match=rf"pretrain.view_size {target.size * 2} is larger than the {target.size} px"):
        pretrain_model(manifest, images, "resnet10t", too_big, tmp_path / "big", threads=2)


def test_nt_xent_rewards_matching_views():
    from medxfer.objectives import nt_xent

    z = torch.randn(16, 8)
    same, acc = nt_xent(z, z + 0.01 * torch.randn(16, 8), 0.1)
    other, _ = nt_xent(z, torch.randn(16, 8), 0.1)
    assert same < other and acc == 1


def test_simclr_pretraining_gives_a_headless_checkpoint_that_fine_tunes(cached, tmp_path):
    manifest, images = cached["mura"]
    params = pre(epochs=1, objective="simclr", temperature=0.2, projection_dim=32, batch_size=16)
    pretrain_model(manifest, images, "resnet10t", params, tmp_path / "ssl", threads=2)
    model, meta = models.load(tmp_path / "ssl")
    assert meta["classes"] == [] and meta["objective"] == "simclr"
    assert set(model.state_dict()) == set(models.create("resnet10t", 0, 1).state_dict())  # projector dropped
    log = pd.read_csv(tmp_path / "ssl/log.csv")
    assert np.isfinite(log["val_loss"]).all() and 0 <= log["val_accuracy"].iloc[0] <= 1
    tuned = tune(
        manifest, images, "resnet10t", "indomain", ft(epochs=1), tmp_path / "ft", init_path=tmp_path / "ssl", threads=2
    )
    assert tuned["n"] > 0
    source = model.state_dict()["layer4.0.conv1.weight"]
    assert not torch.equal(models.load(tmp_path / "ft")[0].state_dict()["layer4.0.conv1.weight"], source)


def test_unlabeled_folder_gives_a_simclr_checkpoint_and_refuses_supervised(tmp_path):
    from medxfer.cache import cache_images
    from medxfer.config import validate
    from medxfer.ingest import ingest_dataset

    rng = np.random.default_rng(0)
    for i in range(40):
        image = rng.integers(0, 90, (40, 40), dtype=np.uint8)
        r, c = rng.integers(0, 28, 2)
        image[r : r + 12, c : c + 12] = 240
        (tmp_path / "archive" / f"batch{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "archive" / f"batch{i % 3}" / f"{i}.png")
    entry = {"format": "imagefolder", "root": str(tmp_path / "archive"), "labels": "none", "size": 32}
    conf = validate({"datasets": {"archive": entry}, "finetune": {"targets": ["archive"], "inits": ["scratch"]}})
    manifest, images = tmp_path / "archive_out/manifest.csv", tmp_path / "archive_out/images_32.npy"
    ingest_dataset("archive", conf["datasets"]["archive"], manifest, tmp_path / "archive_out/quarantine.csv", seed=0)
    cache_images(conf["datasets"]["archive"], manifest, images)
    table = pd.read_csv(manifest, keep_default_na=False)
    assert len(table) == 40 and set(table["label_name"]) == {"none"} and set(table["split"]) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="use pretrain.objective simclr"):
        pretrain_model(manifest, images, "resnet10t", pre(epochs=1), tmp_path / "sup", threads=2)
    params = pre(epochs=1, objective="simclr", batch_size=16)
    pretrain_model(manifest, images, "resnet10t", params, tmp_path / "ssl", threads=2)
    assert models.load(tmp_path / "ssl")[1]["objective"] == "simclr"


def test_tta_predicts_the_mean_logits_of_each_image_and_its_mirror(cached, tmp_path):
    manifest, images = cached["mura"]
    metrics = tune(manifest, images, "resnet10t", "scratch", ft(epochs=1, tta=True), tmp_path, threads=2, seed=0)
    assert metrics["tta"] is True
    model, meta = models.load(tmp_path)
    assert meta["config"]["tta"] is True
    test = load_cached(manifest, images).splits["test"]
    plain = predict_logits(model, test.images, torch.device("cpu"))
    mirrored = predict_logits(model, np.ascontiguousarray(test.images[..., ::-1]), torch.device("cpu"))
    expected = torch.softmax((plain + mirrored) / 2, dim=1).numpy()
    _, written = read_predictions(tmp_path / "predictions.csv")
    assert np.allclose(written, expected, atol=1e-5)
    assert not torch.allclose(plain, mirrored, rtol=0, atol=1e-6)  # a mirror image is another input
    assert np.abs(written - torch.softmax(plain, dim=1).numpy()).max() > 1e-5  # beyond the tolerance above
    with pytest.raises(ValueError, match=r"tta mirrors images, but .* never flips them"):
        tune(manifest, images, "resnet10t", "scratch", ft(tta=True, augment={"hflip": 0}), tmp_path / "no")


def decoy_data(tmp_path, n: int = 32, size: int = 64) -> CachedDataset:
    """Class 1 shows two bright squares, top left (the decoy) and bottom right (the finding, the only one its mask
    outlines): either one tells the classes apart, so only the masks say which a model should look at."""
    rng = np.random.default_rng(0)
    mask = np.zeros((size, size), dtype=bool)
    mask[40:56, 40:56] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "finding.png")
    splits = {}
    for name in ("train", "val", "test"):
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, size=(n, 1, size, size), dtype=np.uint8)
        images[labels == 1, :, 8:24, 8:24] = 230
        images[labels == 1, :, 40:56, 40:56] = 230
        ids = np.array([f"{name}{i}" for i in range(n)])
        masks = np.where(labels == 1, str(tmp_path / "finding.png"), "")
        splits[name] = Split(images, labels.astype(np.int64), ids, ids, masks)
    return CachedDataset(classes=["normal", "finding"], splits=splits)


def test_mask_guidance_moves_the_class_evidence_from_the_decoy_to_the_outlined_finding(tmp_path):
    data = decoy_data(tmp_path)
    test = data.splits["test"]
    findings = torch.from_numpy(test.images[test.labels == 1])
    finding_class = torch.ones(len(findings), dtype=torch.long)

    def evidence_share(weight: float) -> torch.Tensor:
        """Mean softmax share of the finding class's evidence per cell of the 2x2 map, over the test findings."""
        seed_everything(0)
        model = models.create("resnet10t", 2, 1)
        fit(model, data, tiny_params(epochs=4, mask_guidance=weight), torch.device("cpu"), tmp_path / "l.csv", 0, LOG)
        with torch.no_grad():
            evidence = class_evidence_map(
                model.eval(), model.forward_features(models.normalize(findings)), finding_class
            )
        return torch.softmax(evidence.flatten(1), dim=1).view_as(evidence).mean(dim=0)

    plain, guided = evidence_share(0.0), evidence_share(1.0)
    assert guided[1, 1] > plain[1, 1] + 0.08  # the finding's cell (bottom right)
    assert guided[0, 0] < plain[0, 0] - 0.15  # the decoy's cell (top left)


def test_class_evidence_map_averages_to_the_logit_difference_and_mass_outside_reads_the_mask():
    seed_everything(0)
    model = models.create("resnet10t", 3, 1).eval()
    x = torch.randn(4, 1, 64, 64)
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features) - model.fc.bias
        evidence = class_evidence_map(model, features, y)
    others = (logits.sum(dim=1) - logits[torch.arange(4), y]) / 2
    assert torch.allclose(evidence.mean(dim=(1, 2)), logits[torch.arange(4), y] - others, atol=1e-5)
    peaked = torch.full((2, 2, 2), -20.0)
    peaked[:, 1, 1] = 20.0
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 40:50, 40:50] = True  # inside the peak's cell
    masks[1, 0:5, 0:5] = True  # in another cell
    assert mass_outside(peaked[:1], masks[:1]) < 1e-6
    assert mass_outside(peaked[1:], masks[1:]) > 30
    assert mass_outside(peaked, torch.zeros_like(masks)) == 0.0  # no finding drawn: no term


def test_mask_guidance_refuses_data_without_masks_and_heads_without_a_class_activation_map(tmp_path):
    params, cpu = tiny_params(epochs=1, mask_guidance=1.0), torch.device("cpu")
    with pytest.raises(ValueError, match="no training image of this data set has one"):
        fit(models.create("resnet10t", 2, 1), tiny_data(), params, cpu, tmp_path / "log.csv", 0, LOG)
    ordinal = models.create_initialised("resnet10t", 2, 1, "scratch", head="ordinal")
    with pytest.raises(ValueError, match="needs a linear head on average-pooled features; this model has Cumulative"):
        fit(ordinal, decoy_data(tmp_path), params, cpu, tmp_path / "log.csv", 0, LOG)


def test_erasing_that_spares_findings_reads_the_training_masks_and_trains(tmp_path):
    data = decoy_data(tmp_path)
    sparing = tiny_params(epochs=1, augment=AUG | {"erase": 0.5, "erase_findings": False})
    objective = Supervised(data, sparing)
    assert objective.masks is not None and int(objective.masks.flatten(1).any(dim=1).sum()) == 16
    assert Supervised(data, tiny_params(augment=AUG | {"erase": 0.5})).masks is None  # RandomErasing as it is
    seed_everything(0)
    model = models.create("resnet10t", 2, 1)
    fit(model, data, sparing, torch.device("cpu"), tmp_path / "l.csv", 0, LOG)
    assert pd.read_csv(tmp_path / "l.csv")["train_loss"].notna().all()
