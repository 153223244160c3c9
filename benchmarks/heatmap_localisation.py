"""Heatmap settings compared on one split's findings: localisation and deletion against the centre prior and random map.

For choosing heatmap settings (LIME's fill, superpixels and samples; a CAM method's layer) on val images with finding
masks, never on test. Each variant is `method[:key=value,...]`: the run's own `explain` settings (its
report/run.json) with those keys changed (lime_fill, lime_segments, lime_samples; a list as `25/50/100`), or `layer`
(a timm feature_info position, for CAM methods). The images are chosen and scored as the workflow's faithfulness
tables do it (medxfer.faithfulness), with the same paired bootstrap against both baselines
(medxfer.localisation.versus_baselines).
Prints JSON. Run it where the workflow ran: the manifests' image and mask paths are relative to that folder.

    .venv/bin/python benchmarks/heatmap_localisation.py results/localise-fracatlas --target fracatlas --init indomain \\
        --arch efficientnet_lite0 --split val lime lime:lime_fill=mean lime:lime_fill=mean,lime_segments=100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medxfer import cams, jobs, models, paths, runtime
from medxfer.cache import load_cached
from medxfer.faithfulness import faithfulness
from medxfer.io import read_json
from medxfer.localisation import BASELINES, COMPARED, SCORES, versus_baselines
from medxfer.sections import ExplainSection


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`lime:lime_fill=mean,lime_segments=100` -> ("lime", {"lime_fill": "mean", "lime_segments": 100}); a list's
    entries are joined by `/` (`lime:lime_segments=25/50/100`)."""

    def number(value: str) -> int | str:
        return int(value) if value.lstrip("-").isdigit() else value

    method, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        options[key] = [number(v) for v in value.split("/")] if "/" in value else number(value)
    if method not in cams.list_methods():
        raise SystemExit(f"{text}: unknown method {method!r}; allowed: {cams.list_methods()}")
    return method, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results folder with the fine-tuned model and its cached images")
    parser.add_argument("variants", nargs="+", help="method[:key=value,...]")
    parser.add_argument("--target", required=True)
    parser.add_argument("--init", default="imagenet")
    parser.add_argument("--seed", type=int, default=0, help="the training seed of the model")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument(
        "--n", type=int, help="images, those with a finding mask first (default: the run's n_faithfulness)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()

    config = read_json(Path(args.results) / paths.RUN_RECORD)["config"]
    settings, seed = ExplainSection.from_config(config["explain"]), config["seed"]
    runtime.configure(args.threads, seed)
    run = dict(target=args.target, init=args.init, seed=args.seed, arch=args.arch)
    model, meta = models.load(paths.artifact(str(args.results), paths.MODEL, **run), runtime.select_device("auto"))
    data = jobs.dataset_inputs(config | {"results": str(args.results)}, args.target)
    split = load_cached(data["manifest"], data["images"]).splits[args.split]
    variants = {text: parse_variant(text) for text in args.variants}

    def maps_of(name: str, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        method, options = variants[name]
        position = options.get("layer")
        layer = cams.candidate_layers(model, [position])[0] if position is not None else None
        changed = {k: v for k, v in options.items() if k != "layer"}
        return cams.heatmaps(method, model, images, targets, layer, **settings.map_options(seed) | changed)

    n_images = args.n or settings.n_faithfulness
    scores = faithfulness(model, split, list(variants), maps_of, n_images, settings.deletion_steps, seed)
    scores.insert(0, "split", args.split)
    compared = versus_baselines(scores, ["split"], args.resamples, seed).set_index("method")
    means = scores.groupby("method", sort=False)[SCORES].mean()
    result = {
        "model": paths.artifact(str(args.results), paths.MODEL, **run),
        "split": args.split,
        "images": int(scores["image_id"].nunique()),
        "with_mask": int(scores.drop_duplicates("image_id")["has_mask"].sum()),
        "variants": {},
    }
    for name in [*variants, *BASELINES]:
        row = {"means": {k: round(float(v), 4) for k, v in means.loc[name].items()}}
        if name not in BASELINES:
            for metric in COMPARED:
                for baseline in BASELINES:
                    key = f"{metric}_minus_{baseline}"
                    if key in compared:
                        values = compared.loc[name, [key, f"{key}_lo", f"{key}_hi"]]
                        row[key] = [None if v is None or np.isnan(v) else round(float(v), 4) for v in values]
        result["variants"][name] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
