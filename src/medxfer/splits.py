"""Train/val/test assignment by patient, the labelled-fraction subsample, and the checks that keep a patient and a
picture (identical bytes or perceptual hash) out of two splits. Everything is seeded, so a re-run of ingest gives the
same manifest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from medxfer.ingestbase import SPLITS, Found

SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}


def split_groups(frame: pd.DataFrame) -> pd.Series:
    """Patient ids, with patients that share a picture (same sha256 or perceptual hash) joined under the smallest
    id: the unit a split is drawn for, so ingest never puts one patient or one picture in two splits itself."""
    patients, ids = pd.factorize(frame["patient_id"].astype(str), sort=True)
    keys = [pd.factorize(frame[c])[0] for c in ("sha256", "phash") if c in frame] + [patients]
    group = patients
    while True:  # spread the smallest patient index along shared pictures until nothing changes
        joined = group
        for key in keys:
            smallest = np.full(key.max() + 1, len(ids))
            np.minimum.at(smallest, key, joined)
            joined = smallest[key]
        if np.array_equal(joined, group):
            return pd.Series(ids[group], index=frame.index)
        group = joined


def assign_splits(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Group-level (see split_groups), label-stratified, seeded split; splits given by the data set (e.g. MURA
    test) are kept, and rows without one join the given split of their group."""
    split = frame["split"].copy()
    rng = np.random.default_rng(seed)
    has_test, has_val = (split == "test").any(), (split == "val").any()
    group = split_groups(frame)
    # Given 'train' rows still need a val share carved from them unless the data set gives val (MedMNIST) too.
    carved = (split == "train") & (not has_val)
    fixed = split.notna() & ~carved
    given = split[fixed].map(SPLIT_RANK).groupby(group[fixed]).min().map(dict(enumerate(SPLITS)))
    unset = split.isna() & group.isin(given.index)
    split[unset] = group[unset].map(given)
    open_rows = split.isna() | carved
    pool = frame[open_rows]
    groups = pool.groupby(group[open_rows])["label"].agg(lambda s: int(s.mode().iloc[0]))
    for _, stratum in groups.groupby(groups):
        ids = stratum.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = 0 if has_test else int(round(len(ids) * test_fraction))
        n_val = 0 if has_val else int(round(len(ids) * val_fraction))
        if len(ids) >= 3:
            n_val = max(n_val, 1) if not has_val else 0
            n_test = max(n_test, 1) if not has_test else 0
        assigned = {gid: "test" for gid in ids[:n_test]} | {gid: "val" for gid in ids[n_test : n_test + n_val]}
        for gid in ids[n_test + n_val :]:
            assigned[gid] = "train"
        mask = group.isin(ids) & open_rows
        split[mask] = group[mask].map(assigned)
    return split


def subsample_train(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded, label-stratified share of the training patients (at least one per label); val and test untouched.
    The small-labelled-set setting where the choice of pretraining matters most."""
    if fraction >= 1:
        return frame
    train = frame[frame["split"] == "train"]
    patients = train.groupby("patient_id")["label"].agg(lambda s: int(s.mode().iloc[0]))
    rng = np.random.default_rng(seed)
    kept = []
    for _, group in patients.groupby(patients):
        ids = group.index.to_numpy()[rng.permutation(len(group))]
        kept.extend(ids[: max(1, int(round(len(ids) * fraction)))])
    keep = (frame["split"] != "train") | frame["patient_id"].isin(kept)
    return frame[keep].reset_index(drop=True)


def leaked(frame: pd.DataFrame, column: str) -> list[str]:
    """Values of `column` (a patient, an image hash) found in more than one split."""
    splits_per_value = frame.groupby(column)["split"].nunique()
    return sorted(splits_per_value[splits_per_value > 1].index)


def describe_leaks(frame: pd.DataFrame, column: str, label: Callable[[str], str], limit: int = 3) -> str:
    """The first `limit` leaked values of `column`, each with its files by split, for an error message."""
    lines = []
    for value in leaked(frame, column)[:limit]:
        rows = frame[frame[column] == value]
        files = [
            f"{s}: {', '.join(rows.loc[rows['split'] == s, 'path'][:3])}" for s in SPLITS if (rows["split"] == s).any()
        ]
        lines.append(f"{label(value)} in {'; '.join(files)}")
    return " | ".join(lines)


def drop_leaked(table: pd.DataFrame, found: Found, column: str, label: Callable[[str], str]) -> pd.DataFrame:
    """Keep each value of `column` only in its earliest split (train < val < test); reject its rows in later splits
    with a reason naming what they share and a kept file."""
    rank = table["split"].map(SPLIT_RANK)
    first = rank.groupby(table[column]).transform("min")
    kept = table[rank == first].groupby(column)["path"].first()
    later = rank != first
    for row, where in zip(table[later].to_dict("records"), first[later], strict=True):
        reason = f"{label(row[column])} also in split '{SPLITS[where]}' ({kept[row[column]]})"
        found.reject(row["path"], f"leakage: {reason}; dropped from '{row['split']}'")
    return table[rank == first].reset_index(drop=True)
