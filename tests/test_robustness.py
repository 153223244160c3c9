"""Perturbations for the robustness sweep: real image operations on the cached demo sets."""

import numpy as np
import pytest
from conftest import dataset_config

from medxfer.cache import load_cached
from medxfer.robustness import LEVELS, hu_shift, perturb


@pytest.mark.parametrize("kind", [k for k in LEVELS if k != "hu_window"])
def test_each_perturbation_grows_with_severity(cached, kind):
    images = load_cached(*cached["ct"]).splits["test"].images[:6]
    changes = []
    for level in LEVELS[kind][1]:
        out = perturb(images, kind, level, seed=0)
        assert out.shape == images.shape and out.dtype == np.uint8
        changes.append(np.abs(out.astype(np.int16) - images).mean())
    assert 0 < changes[0] < changes[-1], changes
    np.testing.assert_array_equal(
        perturb(images, kind, LEVELS[kind][1][1], seed=0), perturb(images, kind, LEVELS[kind][1][1], seed=0)
    )


def test_hu_shift_redecodes_raw_ct_and_zero_shift_is_the_cache(cached, demo_root):
    manifest, images = cached["ct"]
    test = load_cached(manifest, images).splits["test"]
    dataset = dataset_config(demo_root, "ct")
    np.testing.assert_array_equal(hu_shift(dataset, manifest, test.ids[:4], 0.0), test.images[:4])
    shifted = hu_shift(dataset, manifest, test.ids[:4], 100.0)
    assert shifted.shape == test.images[:4].shape
    assert shifted.astype(float).mean() < test.images[:4].astype(float).mean()  # a higher centre shows tissue darker
    with pytest.raises(ValueError, match="CT"):
        hu_shift(dataset_config(demo_root, "mura"), cached["mura"][0], [], 10.0)
