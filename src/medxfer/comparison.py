"""Models compared on the same test cases: the benchmark over seed replicates and the paired bootstraps.

Per target, the best fused classifier is compared with the best single fine-tuned CNN, and each pair of inits of
one architecture with each other, by a paired bootstrap on the same test cases (seed means on both sides).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from medxfer.metrics import N_BOOTSTRAP, ORDINAL_METRICS, paired_bootstrap, replicate_bootstrap
from medxfer.prediction_files import read_predictions
from medxfer.results import is_missing
from medxfer.selection import REPLICATE, best_group

BENCHMARK_METRICS = ("accuracy", "balanced_accuracy", "f1", "cohen_kappa", "roc_auc")
SPLITS = ("train", "val", "test")


def _threshold(value: Any) -> float | None:
    return None if is_missing(value) else float(value)


def graded(group: pd.DataFrame) -> bool:
    """Whether a group of result rows scores grades (their metrics.json said `ordinal: true`)."""
    return "ordinal" in group and bool(group["ordinal"].fillna(False).astype(bool).all())


def _replicate_predictions(group: pd.DataFrame, ids: pd.Series | None = None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The first replicate's predictions table and every replicate's probabilities in the order of `ids` (default:
    the first replicate's image order); every replicate must hold the same test images with the same labels."""
    tables = [read_predictions(p) for p in group["predictions"]]
    first = tables[0][0]
    ids = first["image_id"] if ids is None else ids
    probas = []
    for path, (table, proba) in zip(group["predictions"], tables, strict=True):
        if len(table) != len(ids) or set(table["image_id"]) != set(ids):
            raise ValueError(f"{path} holds other test images than {group['predictions'].iloc[0]}")
        order = pd.Series(np.arange(len(table)), index=table["image_id"])[ids].to_numpy()
        if not np.array_equal(table["label"].to_numpy()[order], first.set_index("image_id").loc[ids, "label"]):
            raise ValueError(f"{path} disagrees with {group['predictions'].iloc[0]} on test labels")
        probas.append(proba[order])
    return first.set_index("image_id").loc[ids].reset_index(), probas


def _group_name(group: pd.DataFrame) -> str:
    record = group.iloc[0]
    seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
    return f"{record['replicate_of']}/{record['features']}/{record['classifier']}{seeds}"


def paired_groups(a: pd.DataFrame, b: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of A minus B (each all seeds of one model, averaged over seeds) on the same test cases."""
    table, probas_a = _replicate_predictions(a)
    try:
        _, probas_b = _replicate_predictions(b, table["image_id"])
    except (KeyError, ValueError) as err:
        return {"skipped": f"{_group_name(a)} and {_group_name(b)} cannot be paired: {err}"}
    groups = table["study_id"].to_numpy(str) if "study_id" in table else None
    result = paired_bootstrap(
        table["label"].to_numpy(np.int64),
        probas_a,
        probas_b,
        groups,
        n_bootstrap,
        seed,
        threshold_a=[_threshold(t) for t in a["threshold"]],
        threshold_b=[_threshold(t) for t in b["threshold"]],
        ordinal=graded(a) and graded(b),
    )
    return {"a": _group_name(a), "b": _group_name(b), "n": len(table), **result}


def compare_best(rows: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap: the best fused classifier (A) minus the best single fine-tuned CNN (B), same test cases;
    with several seeds, each side is the mean over its seeds."""
    has_predictions = rows["predictions"].notna()
    fused = best_group(rows[(rows["features"] == "fused") & (rows["classifier"] != "cnn") & has_predictions])
    cnn = best_group(rows[(rows["classifier"] == "cnn") & has_predictions])
    if fused is None or cnn is None:
        return {"skipped": "needs a fused classifier and a fine-tuned CNN with predictions.csv"}
    return paired_groups(fused, cnn, n_bootstrap, seed)


def init_comparisons(rows: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> list[dict[str, Any]]:
    """Per architecture, the fine-tuned CNNs of each pair of inits (in-domain vs scratch, in-domain vs ImageNet,
    ImageNet vs scratch) on equal budget: paired bootstrap of their seed means."""
    cnn = rows[(rows["classifier"] == "cnn") & rows["predictions"].notna()]
    pairs = [("indomain", "scratch"), ("indomain", "imagenet"), ("imagenet", "scratch")]
    results = []
    for arch, by_arch in cnn.groupby("features", sort=False):
        inits = {init: group for init, group in by_arch.groupby("replicate_of", sort=False)}
        for a, b in pairs:
            if a in inits and b in inits:
                results.append({"arch": arch, **paired_groups(inits[a], inits[b], n_bootstrap, seed)})
    return results


def _cnn_costs(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(target, init run) -> arch -> (parameters, training seconds) of its fine-tuned CNNs."""
    costs: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for record in table[table["classifier"] == "cnn"].to_dict("records"):
        costs.setdefault((record["target"], record["init"]), {})[record["features"]] = (
            record.get("num_parameters"),
            record.get("train_seconds"),
        )
    return costs


def _cost(record: dict[str, Any], costs: dict[tuple[str, str], dict[str, tuple[float, float]]]) -> tuple[Any, Any]:
    """Parameters and fine-tuning time behind a row: its CNN, or for a classifier the CNN(s) its features come from
    (all of them for the fusion)."""
    cnns = costs.get((record["target"], record["init"]), {})
    used = list(cnns.values()) if record["features"] == "fused" else [cnns.get(record["features"], (None, None))]
    if any(is_missing(p) or is_missing(t) for p, t in used) or not used:
        return None, None
    return int(sum(p for p, _ in used)), float(sum(t for _, t in used))


def benchmark_table(table: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """One row per target x init x features x classifier over its seed replicates: the mean, standard deviation
    and range over seeds of each metric, a bootstrap 95 % interval of the mean, parameters and training time."""
    costs = _cnn_costs(table)
    rows = []
    for keys, group in table[table["predictions"].notna()].groupby(["target", *REPLICATE], sort=False):
        first, probas = _replicate_predictions(group)
        groups = first["study_id"].to_numpy(str) if "study_id" in first else None
        thresholds = [_threshold(t) for t in group["threshold"]]
        labels = first["label"].to_numpy(np.int64)
        stats = replicate_bootstrap(labels, probas, thresholds, groups, n_bootstrap, seed, ordinal=graded(group))
        spent = [_cost(r, costs) for r in group.to_dict("records")]
        seconds = [t for _, t in spent if t is not None]
        rows.append(
            dict(zip(["target", "init", "features", "classifier"], keys, strict=True))
            | {"seeds": len(group), "n_test": stats["n"], "selection_auc": float(group["selection_auc"].mean())}
            | {k: v for k, v in stats.items() if k.startswith(BENCHMARK_METRICS + ORDINAL_METRICS)}
            | {"parameters": spent[0][0], "train_seconds": float(np.mean(seconds)) if seconds else None}
        )
    return pd.DataFrame(rows)


def split_composition(manifest: str | os.PathLike) -> dict[str, Any]:
    """Images and class shares per split of a target's manifest: where val's shares differ from test's, a cut-off
    chosen on val is tuned to another prevalence, which explains an ACC that lags its AUC."""
    table = pd.read_csv(manifest, usecols=["split", "label", "label_name"])
    classes = table.sort_values("label")["label_name"].drop_duplicates().tolist()
    splits = {}
    for split in [s for s in SPLITS if s in set(table["split"])]:
        names = table.loc[table["split"] == split, "label_name"]
        shares = names.value_counts(normalize=True).reindex(classes, fill_value=0.0)
        splits[split] = {"n": int(names.size), "shares": {c: float(v) for c, v in shares.items()}}
    return {"classes": classes, "splits": splits}
