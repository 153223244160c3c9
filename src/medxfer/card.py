"""A bundle's model card (Mitchell et al. 2019, short form): what the model is for, what it learnt from, how well it
did on held-out test data, and where it must not be used. Written from bundle.json alone, so card and metadata
never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_FOR = (
    "It is a research model. It is not a medical device and must not be used to diagnose, triage or treat patients.",
    "It has seen one data set. Scanners, sites, populations or views unlike its training data may lower every "
    "number below without warning: check it on local data first.",
)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(entry: Mapping[str, Any]) -> str:
    low, high = entry.get("ci95") or (None, None)
    if low is None or high is None:
        return _number(entry.get("value"))
    return f"{_number(entry.get('value'))} [{low:.3f}, {high:.3f}]"


def _metrics_table(test: Mapping[str, Any]) -> list[str]:
    levels = [level for level in ("image", "study") if level in test]
    names = [m for m in test["image"] if m != "n"]
    lines = ["| metric | " + " | ".join(f"{lv} (n={test[lv]['n']})" for lv in levels) + " |"]
    lines.append("|---|" + "---|" * len(levels))
    for name in names:
        cells = [_interval(test[lv][name]) if name in test[lv] else "n/a" for lv in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    lines = ["| split | images | studies | classes |", "|---|---|---|---|"]
    for split in ("train", "val", "test"):
        if split in data:
            entry = data[split]
            total = max(entry["images"], 1)
            shares = ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in entry["classes"].items())
            lines.append(f"| {split} | {entry['images']} | {entry['studies']} | {shares} |")
    return lines + ["", f"Manifest sha256: `{data['manifest_sha256']}`."]


def _robustness_lines(rows: list[Mapping[str, Any]] | None) -> list[str]:
    if not rows:
        return ["Not assessed for this model (the sweep covers each CNN and the best fused classifier)."]
    clean = next((r for r in rows if r["severity"] == 0), None)
    worst = sorted((r for r in rows if r["severity"] > 0), key=lambda r: r["accuracy"])[:3]
    lines = [] if clean is None else [f"Clean test accuracy {clean['accuracy']:.3f}. Largest drops:", ""]
    lines += [
        f"- {r['perturbation']} at severity {r['severity']} (level {r['level']}): accuracy {r['accuracy']:.3f}, "
        f"AUC {_number(r['roc_auc'])}"
        for r in worst
    ]
    return lines


def model_card(meta: Mapping[str, Any]) -> str:
    """The card's Markdown. Long on purpose: the card reads top to bottom here, one section after the other."""
    ident, predictor, pre = meta["identity"], meta["predictor"], meta["preprocessing"]
    what = (
        f"the fine-tuned {ident['features']} CNN with its own head"
        if predictor["classifier"] is None
        else f"{predictor['classifier']} on the {'fused ' if predictor['fusion'] else ''}deep features of "
        f"{', '.join(predictor['cnns'])}"
    )
    threshold = meta["decision"].get("threshold")
    decision = "argmax" if threshold is None else f"P({meta['classes'][1]}) >= {threshold:.4f}"
    calibration = meta["calibration"]
    cal_text = calibration.get("note", "")
    if "test" in calibration:
        before, after = calibration["test"]["before"], calibration["test"]["after"]
        if calibration.get("temperature") is not None:
            how = f"Temperature {calibration['temperature']:.3f}, fitted on val."
        elif calibration.get("recalibration"):
            how = f"{calibration['recalibration']['method'].capitalize()} recalibration, chosen on out-of-fold data."
        else:
            how = "No recalibration: neither Platt nor isotonic lowered the out-of-fold Brier score."
        cal_text = (
            f"{how} Test ECE (15 bins) {before['ece']:.3f} before, {after['ece']:.3f} after; Brier score "
            f"{before['brier']:.3f} before, {after['brier']:.3f} after."
        )
        if calibration.get("temperature") is not None or calibration.get("recalibration"):
            cal_text += " `medxfer predict` writes them (`calibrated_<class>`) beside the raw ones the decision uses."
    diagram = ["![Reliability on test, before and after](reliability.png)", ""]
    diagram = diagram if "reliability.png" in meta["files"] else []
    windows = f", CT windows {pre['windows']}" if pre.get("windows") else ""
    lines = [
        f"# Model card: {ident['target']} / {ident['init']} (seed {ident['seed']})",
        "",
        f"**Model:** {what}. Chosen on validation data: {meta['chosen_by']['rule']} "
        f"({_number(meta['chosen_by']['val_auc'])}), never on test.",
        "",
        f"**Task:** classify {pre['modality']} images as {', '.join(meta['classes'])}. Decision: {decision}.",
        "",
        "## Intended use",
        "",
        "Research on transfer learning for medical images: reproducing, comparing and explaining this workflow's "
        "results, and trying the model on new studies of the same kind as its training data.",
        "",
        "## Not for",
        "",
        *[f"- {line}" for line in NOT_FOR],
        "",
        "## Input",
        "",
        f"{pre['modality']} images, {pre['channels']} channel(s), resized to {pre['size']} px{windows}; "
        "PNG, JPEG or DICOM (`medxfer predict`).",
        "",
        "## Training and validation data",
        "",
        *_data_lines(meta["data"]),
        "",
        "## Test results",
        "",
        "Point value and 95 % bootstrap interval (resampled by study where studies group images).",
        "",
        *_metrics_table(meta["metrics"]["test"]),
        "",
        "## Calibration",
        "",
        cal_text,
        "",
        *diagram,
        "## Robustness (perturbed test images)",
        "",
        *_robustness_lines(meta.get("robustness")),
        "",
        "## Known limits",
        "",
        f"- Test split of {meta['metrics']['test']['image']['n']} images: intervals are wide where it is small.",
        "- The threshold was chosen on validation data of the same source; a new site may need a new one.",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        "",
    ]
    return "\n".join(lines)
