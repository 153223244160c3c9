"""Where each artifact lives in a results folder, named once for the rules and for the library's readers.

Templates are relative to the results folder and hold Snakemake-style wildcards; `artifact` fills the ones given and
keeps the others, so one name serves a rule's pattern, an input function and a list over architectures. Readers
still take a result's identity from its metadata (medxfer.identity), never from where it sits. Also named here: the
inputs the workflow makes itself outside the results folder (demo data, imported ImageNet weights), so checks of a
config's paths know not to ask for them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

DATASET = "datasets/{dataset}"
MANIFEST = "datasets/{dataset}/manifest.csv"
QUARANTINE = "datasets/{dataset}/quarantine.csv"
DUPLICATES = "datasets/{dataset}/duplicates.csv"  # near-duplicate image pairs across splits
IMAGES = "datasets/{dataset}/images_{size}.npy"
SOURCE_OVERLAP = "datasets/{target}/source_overlap.json"
PRETRAINED = "pretrain/{source}/{arch}"  # model.safetensors, model.json, log.csv
MODEL = "finetune/{target}/{init}/seed{seed}/{arch}"  # the same, and metrics.json, predictions.csv
FEATURES = "features/{target}/{init}/seed{seed}/{arch}.npz"
FUSED = "fused/{target}/{init}/seed{seed}/features.npz"
FUSION_REPORT = "fused/{target}/{init}/seed{seed}/fusion.json"
FUSION_TRANSFORM = "fused/{target}/{init}/seed{seed}/fusion.skops"  # fitted on train rows (medxfer.fusion)
CLASSIFIER = "classify/{target}/{init}/seed{seed}/{features}/{clf}"
HEATMAPS = "explain/{target}/{init}/seed{seed}/{arch}"
FAITHFULNESS = "faithfulness/{target}/{init}/seed{seed}/{arch}.csv"
ROBUSTNESS_TABLE = "robustness/{target}/{init}/seed{seed}/robustness.csv"
ROBUSTNESS_PLOT = "robustness/{target}/{init}/seed{seed}/robustness.png"
BUNDLE = "bundles/{target}/{init}"  # the model chosen on val, self-contained (medxfer.bundle)
BUNDLE_RECORD = "bundles/{target}/{init}.json"  # the digest of its bundle.json, what rule predict reads
PREDICTIONS = "predict/{prediction}"  # a bundle's predictions on a configured unlabelled data set
TRAINING_CURVES = "report/training/{target}.png"
REPORT = "report"
RUN_RECORD = "report/run.json"
LOGS = "logs"
BENCHMARKS = "benchmarks"
RESUME = "resume"  # training jobs' per-epoch state, outside their outputs

DEMO_ROOT = "data/demo"  # rule synthesize_demo makes <DEMO_ROOT>/<demo set> for each of DEMO_SETS
DEMO_SETS = ("xray_source", "mura", "ct", "grades")
# rule import_imagenet_weights: not under the results folder, every config shares the file
IMPORTED_WEIGHTS = "results/weights/{arch}_imagenet.safetensors"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def artifact(results: str, template: str, name: str | None = None, **fields: object) -> str:
    """`<results>/<template>[/<name>]` with the given wildcards filled in and the others left as `{wildcard}`."""
    path = PurePosixPath(results, template.format_map(_KeepMissing({k: str(v) for k, v in fields.items()})))
    return str(path / name) if name else str(path)


def generated_demo_set(root: str | Path) -> str | None:
    """The demo set name if rule synthesize_demo makes the data set root `root`, else None."""
    path = Path(root)
    return path.name if path.parent == Path(DEMO_ROOT) and path.name in DEMO_SETS else None
