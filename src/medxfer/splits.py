"""Train/val/test assignment by patient, the labelled-fraction subsample, and the checks that keep an identical
image out of two splits. Everything is seeded, so a re-run of ingest gives the same manifest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medxfer.ingestbase import SPLITS, Found


def assign_splits(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Patient-level, label-stratified, seeded split; splits given by the data set (e.g. MURA test) are kept."""
    split = frame["split"].copy()
    rng = np.random.default_rng(seed)
    has_test, has_val = (split == "test").any(), (split == "val").any()
    # Given 'train' rows still need a val share carved from them unless the data set gives val (MedMNIST) too.
    open_rows = split.isna() | ((split == "train") & (not has_val))
    pool = frame[open_rows]
    patients = pool.groupby("patient_id")["label"].agg(lambda s: int(s.mode().iloc[0]))
    for _, group in patients.groupby(patients):
        ids = group.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = 0 if has_test else int(round(len(ids) * test_fraction))
        n_val = 0 if has_val else int(round(len(ids) * val_fraction))
        if len(ids) >= 3:
            n_val = max(n_val, 1) if not has_val else 0
            n_test = max(n_test, 1) if not has_test else 0
        assigned = {pid: "test" for pid in ids[:n_test]} | {pid: "val" for pid in ids[n_test : n_test + n_val]}
        for pid in ids[n_test + n_val :]:
            assigned[pid] = "train"
        mask = frame["patient_id"].isin(ids) & open_rows
        split[mask] = frame.loc[mask, "patient_id"].map(assigned)
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


def check_leakage(frame: pd.DataFrame) -> list[str]:
    """Hashes of images that appear in more than one split."""
    splits_per_hash = frame.groupby("sha256")["split"].nunique()
    return sorted(splits_per_hash[splits_per_hash > 1].index)


def drop_leaked(table: pd.DataFrame, found: Found) -> pd.DataFrame:
    """Keep each duplicated image only in its earliest split (train < val < test); reject the other copies."""
    rank = table["split"].map({s: i for i, s in enumerate(SPLITS)})
    first = rank.groupby(table["sha256"]).transform("min")
    for row in table[rank != first].to_dict("records"):
        kept = SPLITS[int(first[table["path"] == row["path"]].iloc[0])]
        found.reject(
            row["path"], f"leakage: identical image is also in split '{kept}' (copy in '{row['split']}' dropped)"
        )
    return table[rank == first].reset_index(drop=True)
