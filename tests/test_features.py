"""Pooled deep features: the penultimate layer (stages=1), with stages=2 the stage before it too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer import models
from medxfer.features import features_and_proba, pooled_features
from medxfer.inference import predict_proba


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("resnet10t", 2, 1).eval()


def test_pooled_features_match_the_model_and_add_a_stage(net: torch.nn.Module) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 1, 32, 32), dtype=np.uint8)
    cpu = torch.device("cpu")
    one = pooled_features(net, images, cpu, batch_size=2, stages=1)
    assert one.shape == (5, net.num_features) and one.dtype == np.float32
    with torch.inference_mode():
        x = models.normalize(torch.from_numpy(images))
        expected = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(one, expected, rtol=1e-4, atol=1e-5)
    two = pooled_features(net, images, cpu, batch_size=3, stages=2)
    previous_stage = net.feature_info[-2]["num_chs"]
    assert two.shape == (5, net.num_features + previous_stage)
    np.testing.assert_allclose(two[:, : net.num_features], one, rtol=1e-4, atol=1e-5)
    assert pooled_features(net, images[:0], cpu, batch_size=2, stages=2).shape == (0, two.shape[1])
    with pytest.raises(ValueError, match="stages must be 1 or 2"):
        pooled_features(net, images, cpu, batch_size=2, stages=3)


@pytest.mark.parametrize("arch", ["resnet10t", "efficientnet_lite0"])
@pytest.mark.parametrize("stages", [1, 2])
def test_one_pass_gives_the_features_and_the_models_own_probabilities(arch: str, stages: int) -> None:
    torch.manual_seed(1)
    net = models.create(arch, 3, 1).eval()
    torch.nn.init.normal_(net.get_classifier().weight, std=0.5)  # a head far from zero: probabilities that differ
    images = np.random.default_rng(1).integers(0, 256, size=(7, 1, 32, 32), dtype=np.uint8)
    cpu = torch.device("cpu")
    feats, proba = features_and_proba(net, images, cpu, batch_size=4, stages=stages)
    expected = predict_proba(net, images, cpu)
    assert proba.shape == (7, 3) and np.ptp(expected[:, 0]) > 0.01
    np.testing.assert_allclose(proba, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        feats, pooled_features(net, images, cpu, batch_size=3, stages=stages), rtol=1e-4, atol=1e-5
    )
    empty_feats, empty_proba = features_and_proba(net, images[:0], cpu, batch_size=4, stages=stages)
    assert empty_feats.shape == (0, feats.shape[1]) and empty_proba.shape == (0, 3)
