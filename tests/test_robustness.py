"""Perturbations for the robustness sweep: real image operations on the cached demo sets."""

import numpy as np
import pytest
from conftest import dataset_config

from medxfer.cache import load_cached
from medxfer.robustness import LEVELS, hu_shift, perturb
from medxfer.sections import dataset_entry


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


def test_hu_shift_takes_the_schemas_defaults_for_what_an_entry_leaves_out(cached, demo_root):
    """Without windows and size, the schema's: one channel at its default window (the demo config's first) and
    64 pixels, so the cache's first channel comes back."""
    manifest, images = cached["ct"]
    test = load_cached(manifest, images).splits["test"]
    given = dataset_config(demo_root, "ct")
    raw = {key: given[key] for key in ("format", "root", "manifest", "modality")}
    assert dataset_entry(raw)["windows"] == given["windows"][:1]
    np.testing.assert_array_equal(hu_shift(raw, manifest, test.ids[:4], 0.0), test.images[:4, :1])
