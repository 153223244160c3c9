"""Training and features on small cached demo sets: real torch computations on CPU."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medxfer import models
from medxfer.features import extract_features
from medxfer.runtime import seed_everything
from medxfer.train import class_weights, finetune_model, pretrain_model, set_strategy

AUG = dict(hflip=0.5, degrees=5, translate=0.05, scale=[0.95, 1.05], brightness=0.1, contrast=0.1, noise_std=0.01)
PARAMS = dict(lr=1e-3, weight_decay=1e-4, epochs=2, batch_size=16, class_weights=True, augment=AUG, strategy="full")


@pytest.fixture(scope="module")
def pretrained(cached, tmp_path_factory):
    manifest, images = cached["xray_source"]
    out = tmp_path_factory.mktemp("pretrain")
    pretrain_model(
        manifest, images, "resnet10t", {k: v for k, v in PARAMS.items() if k != "strategy"}, out, threads=2, seed=0
    )
    return out


def test_pretrain_writes_checkpoint_trio_with_metadata(pretrained):
    meta = json.loads((pretrained / "model.json").read_text())
    assert meta["classes"][0] == "normal" and len(meta["classes"]) == 4
    assert meta["in_chans"] == 1 and meta["stage"] == "pretrain"
    log = pd.read_csv(pretrained / "log.csv")
    assert list(log["epoch"]) == [1, 2] and log["train_loss"].notna().all()


def test_finetune_indomain_on_ct_adapts_channels_and_reports_metrics(cached, pretrained, tmp_path):
    manifest, images = cached["ct"]
    metrics = finetune_model(
        manifest, images, "resnet10t", "indomain", PARAMS, tmp_path, init_path=pretrained, threads=2, seed=0
    )
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
    first = finetune_model(manifest, images, "resnet10t", "scratch", PARAMS, tmp_path / "a", threads=2, seed=1)
    second = finetune_model(manifest, images, "resnet10t", "scratch", PARAMS, tmp_path / "b", threads=2, seed=1)
    assert first == second
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


def test_linear_probe_trains_only_the_head(cached, tmp_path):
    model = models.create("resnet10t", 2, 1)
    set_strategy(model, "linear_probe")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    manifest, images = cached["mura"]
    seed_everything(0)  # finetune_model seeds the same way before it builds the model
    before = models.create("resnet10t", 2, 1).state_dict()
    probe = PARAMS | {"strategy": "linear_probe", "epochs": 1}
    finetune_model(manifest, images, "resnet10t", "scratch", probe, tmp_path, threads=2, seed=0)
    after = models.load(tmp_path)[0].state_dict()
    assert torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_class_weights_favour_the_minority():
    weights = class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights[1] > weights[0] and torch.isclose(weights.mean(), torch.tensor(1.0))


def test_features_per_split_without_nan(cached, pretrained, tmp_path):
    manifest, images = cached["xray_source"]
    extract_features(pretrained, manifest, images, tmp_path / "f.npz", batch_size=64, threads=2)
    data = np.load(tmp_path / "f.npz")
    table = pd.read_csv(manifest)
    for split in ("train", "val", "test"):
        assert data[f"X_{split}"].shape == ((table["split"] == split).sum(), 512)
        assert np.isfinite(data[f"X_{split}"]).all()
        assert list(data[f"ids_{split}"]) == table.loc[table["split"] == split, "image_id"].tolist()
