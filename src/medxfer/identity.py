"""What a result is, carried in its own metadata: model.json, metrics.json, feature files, faithfulness tables.

Readers take a result's target, init, seed, feature set and classifier from here, never from the folder it sits
in, so a results folder that is copied, moved or renamed reports the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

REQUIRED = ("target", "init", "run", "seed")


def identity(
    target: str,
    init: str,
    seed: int,
    run: str | None = None,
    features: str | None = None,
    classifier: str | None = None,
) -> dict[str, Any]:
    """`init`: scratch, imagenet or indomain; `run`: the seed replicate's name (`indomain-seed1`; `init` itself for
    the first seed); `features`: an architecture or `fused`; `classifier`: `cnn` for a network's own head."""
    record: dict[str, Any] = {"target": target, "init": init, "run": run or init, "seed": int(seed)}
    if features is not None:
        record["features"] = features
    if classifier is not None:
        record["classifier"] = classifier
    return record


def read(record: Mapping[str, Any], source: object, *fields: str) -> dict[str, Any]:
    """The identity a metadata record carries, with `fields` beyond the required ones; an error naming `source`
    (the file) when it has none."""
    found = record.get("identity")
    wanted = (*REQUIRED, *fields)
    if not isinstance(found, Mapping) or not set(wanted) <= set(found):
        raise ValueError(
            f"{source}: its metadata does not say which result it is (identity with {list(wanted)}); it was "
            "written by an older medxfer: re-run the stage that made it"
        )
    return dict(found)


def to_array(record: Mapping[str, Any]) -> np.ndarray:
    """For .npz files: a 0-d string array (loads without pickle)."""
    return np.array(json.dumps(dict(record), sort_keys=True))


def from_array(value: np.ndarray, source: object, *fields: str) -> dict[str, Any]:
    return read({"identity": json.loads(str(value))}, source, *fields)
