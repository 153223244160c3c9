"""Which model a comparison, the headline and the robustness stage pick: by validation AUC, never by a test number.

One rule in one place, so the summary, the paired comparison and the robustness stage all choose the same model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# the columns that make one model whose seed replicates (`<init>-seed<k>` runs) are averaged
REPLICATE = ["replicate_of", "features", "classifier"]


def selection_auc(metrics: dict[str, Any]) -> float:
    """AUC on the val split, never test: a CNN's own predictions, a classifier's out-of-fold ones (CV on train+val).

    Every classifier has one, with or without a hyperparameter grid, so all of them compete on the same cases.
    """
    score = metrics.get("val", {}).get("roc_auc")
    return float("nan") if score is None else float(score)


def best_row(rows: pd.DataFrame) -> pd.Series | None:
    """Highest selection AUC (never a test number, so the comparison is not tuned on test), then table order."""
    if rows.empty:
        return None
    ranked = rows.assign(_s=rows["selection_auc"].fillna(-np.inf))
    return ranked.sort_values("_s", ascending=False, kind="stable").iloc[0]


def best_group(rows: pd.DataFrame) -> pd.DataFrame | None:
    """All seeds of the init/features/classifier with the highest mean selection AUC (never a test number)."""
    if rows.empty:
        return None
    scores = rows.groupby(REPLICATE, sort=False)["selection_auc"].mean().fillna(-np.inf)
    best = scores.idxmax()  # the first of equals in table order
    return rows[(rows[REPLICATE] == pd.Series(best, index=REPLICATE)).all(axis=1)]
