"""Load and validate the workflow config against its JSON Schema, filling in the schema's defaults."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from medxfer.io import read_text
from medxfer.privacy import private_paths

# Package data, so a wheel install validates configs too; workflow/schemas/config.schema.yaml links here.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config file that does not read (the message names file and line) or a value that the schema or a
    cross-check rejects (the message names the key)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: plain YAML keeps the last one without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may override, that is its job
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader's own error names it
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice (first on line {first_line[key]})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(path: str | Path, err: yaml.YAMLError) -> str:
    """`<file>:<line>:<column>: <problem>` from a YAML error, with the fix for the common one (a tab)."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    hint = "; indent with spaces: YAML does not allow tabs" if "\\t" in problem else ""
    return f"{where}: {problem}" + (f" ({context})" if context else "") + hint


def read_yaml(path: str | Path) -> Any:
    """A YAML file, strictly: UTF-8, no key twice; an error names the file, the line and the problem."""
    try:
        return yaml.load(read_text(path), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_problem(path, err)) from None


def _extend_with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001 - jsonschema callback signature
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _extend_with_defaults(jsonschema.Draft7Validator)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """The schema, parsed once per process (each config section validates against it), as a copy of its own."""
    return copy.deepcopy(_parsed_schema(path))


@functools.cache
def _parsed_schema(path: Path) -> dict[str, Any]:
    return read_yaml(path)


def known_inits() -> list[str]:
    """The inits the schema allows (`finetune.inits`): the workflow's `init` wildcard takes exactly these."""
    return load_schema()["properties"]["finetune"]["properties"]["inits"]["items"]["enum"]


def section_defaults(name: str) -> dict[str, Any]:
    """The schema's defaults of one top-level config section (e.g. `explain`), for callers outside the workflow."""
    return checked({}, load_schema()["properties"][name], name)


def _key(error: jsonschema.ValidationError, section: str = "") -> str:
    path = ([section] if section else []) + list(error.absolute_path)
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _allowed(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if "enum" in schema:
        return f"one of {schema['enum']}"
    if error.validator == "additionalProperties" and "properties" in schema:
        return f"known keys: {sorted(schema['properties'])}"
    if "description" in schema:
        return schema["description"]
    return f"{error.validator} {error.validator_value!r}"


def checked(values: Mapping[str, Any], schema: Mapping[str, Any], section: str = "") -> dict[str, Any]:
    """A copy of `values` with the schema's defaults filled in; ConfigError naming every bad key (under `section`,
    for the values of one top-level section checked against its own part of the schema)."""
    values = copy.deepcopy(dict(values))
    errors = sorted(_DefaultingValidator(schema).iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"config key '{_key(e, section)}': {e.message}"
            + ("" if e.validator == "enum" else f" (allowed: {_allowed(e)})")
            for e in errors
        ]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return values


def with_defaults(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A config a run recorded, with the defaults of keys added since (it ran as their defaults), so two runs'
    configs compare by what they set; as recorded when today's schema refuses it (a key renamed or removed)."""
    try:
        return checked(recorded, load_schema())
    except ConfigError:
        return copy.deepcopy(dict(recorded))


def validate(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError naming the key."""
    schema = schema or load_schema()
    config = checked(config, schema)
    _check_simclr_views(config["pretrain"], schema)
    _cross_check(config)
    _inherit_privacy(config)
    config["finetune"]["seeds"] = config["finetune"]["seeds"] or [config["seed"]]
    return config


def _check_simclr_views(pretrain: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """SimCLR trains with pretrain.views: a pretrain.augment other than its defaults would be ignored, so it is an
    error (a default stated outright, or a recorded config given back, passes)."""
    defaults = checked({}, {**schema["definitions"]["augment"], "definitions": schema["definitions"]})
    if pretrain["objective"] == "simclr" and pretrain["augment"] != defaults:
        raise ConfigError(
            "config key 'pretrain.augment': supervised pretraining's augmentation, but pretrain.objective is simclr, "
            "which draws its two views with pretrain.views: state the keys there"
        )
    if pretrain["objective"] != "simclr" and pretrain.get("view_size") is not None:
        raise ConfigError(
            "config key 'pretrain.view_size': the size of SimCLR's views, but pretrain.objective is "
            f"{pretrain['objective']}, which trains on whole images"
        )


def _inherit_privacy(config: dict[str, Any]) -> None:
    """Give each data set the top-level privacy settings it does not override: ingest sees only its data set."""
    top = config.get("privacy") or {}
    for ds in config["datasets"].values():
        if top:
            ds["privacy"] = top | (ds.get("privacy") or {})


def _cross_check(config: dict[str, Any]) -> None:
    datasets = config["datasets"]
    finetune = config["finetune"]
    problems = []
    for i, target in enumerate(finetune["targets"]):
        if target not in datasets:
            problems.append(
                f"config key 'finetune.targets[{i}]': '{target}' is not a data set (known: {sorted(datasets)})"
            )
    if pretrains(config):
        sources = pretrain_sources(config)
        unknown = [s for s in sources if s not in datasets]
        if not sources or unknown:
            what = f"{', '.join(map(repr, unknown))} is not a data set" if unknown else "missing"
            problems.append(
                f"config key 'pretrain.source': {what} (known data sets: {sorted(datasets)}); "
                "the 'indomain' init needs a pretraining source"
            )
        if config["pretrain"]["objective"] == "supervised":
            problems += _own_label_problems(config, [s for s in sources if s in datasets])
    pretrain_from_imagenet = pretrains(config) and config["pretrain"]["init"] == "imagenet"
    if "imagenet" in finetune["inits"] or pretrain_from_imagenet:
        who = "the 'imagenet' init" if "imagenet" in finetune["inits"] else "pretrain.init 'imagenet'"
        for arch in finetune["archs"]:
            if arch not in finetune["imagenet_weights"]:
                problems.append(
                    f"config key 'finetune.imagenet_weights.{arch}': missing; {who} needs a local "
                    "safetensors file for every arch (nothing is downloaded)"
                )
    if finetune["head"] == "ordinal":
        problems += [
            f"config key 'finetune.head': ordinal needs graded labels, but data set '{t}' does not say "
            f"'ordinal: true' (with its classes in grade order)"
            for t in finetune["targets"]
            if t in datasets and not datasets[t]["ordinal"]
        ]
    if finetune["tta"]:
        problems += [
            f"config key 'finetune.tta': mirrors test images, but data set '{t}' is trained without flips "
            "(augment.hflip 0: left and right differ there)"
            for t in finetune["targets"]
            if t in datasets and training_params(config, "finetune", t)["augment"].get("hflip") == 0
        ]
    unmasked = [t for t in finetune["targets"] if t in datasets and not _has_masks(datasets[t])]
    if finetune["mask_guidance"] > 0:
        if finetune["head"] != "linear":
            problems.append("config key 'finetune.mask_guidance': needs the linear head (the class activation map)")
        problems += [f"config key 'finetune.mask_guidance': learns from {_NO_MASKS.format(t)}" for t in unmasked]
    if config["explain"]["choose_by"] == "pointing":
        problems += [f"config key 'explain.choose_by': pointing is scored on {_NO_MASKS.format(t)}" for t in unmasked]
    problems += _bundle_problems(config)
    for name, ds in datasets.items():
        problems += entry_problems(name, ds) + _path_lookup_problems(name, ds, config["results"])
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


_NO_MASKS = "finding masks, but data set '{}' has none (give it `masks`, or `npz_masks` for an npz file)"


def _has_masks(dataset: Mapping[str, Any]) -> bool:
    return bool(dataset.get("masks") or dataset.get("npz_masks"))


def _shares_images(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two data set entries read some of the same images: the same files, and (MURA) body parts that are
    all of them on one side or meet."""

    def files(ds: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(os.path.normpath(str(ds[k])) if k in ds else "" for k in ("root", "file", "manifest"))

    parts_a, parts_b = set(a.get("body_parts") or []), set(b.get("body_parts") or [])
    return files(a) == files(b) and (not parts_a or not parts_b or bool(parts_a & parts_b))


def _own_label_problems(config: Mapping[str, Any], sources: list[str]) -> list[str]:
    """Supervised pretraining on a target's own files would learn the labels fine-tuning is meant to see alone (and
    those a train_fraction holds back); self-supervised pretraining reads no labels, so it may use them."""
    datasets = config["datasets"]
    return [
        f"config key 'pretrain.source': '{source}' reads images of the target '{target}', and supervised "
        "pretraining would learn their labels (those a train_fraction holds back too); pretrain on a target's own "
        "images with objective simclr, which reads no labels"
        for source in sources
        for target in config["finetune"]["targets"]
        if target in datasets and _shares_images(datasets[source], datasets[target])
    ]


def entry_problems(name: str, ds: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say about one data set entry (defaults filled): keys one format needs or refuses."""
    problems = []
    if ds["format"] == "csv" and "manifest" not in ds:
        problems.append(f"config key 'datasets.{name}.manifest': required for format 'csv'")
    if ds["format"] == "npz" and "file" not in ds:
        problems.append(f"config key 'datasets.{name}.file': required for format 'npz' (the .npz file, under root)")
    if "npz_masks" in ds and ds["format"] != "npz":
        problems.append(f"config key 'datasets.{name}.npz_masks': only for format 'npz' (use masks: a folder)")
    if ds["ordinal"] and len(ds.get("classes", [])) < 3:
        problems.append(
            f"config key 'datasets.{name}.ordinal': needs classes, at least three, in grade order (the order is the "
            "scale: the lowest grade first)"
        )
    if ds["val_fraction"] + ds["test_fraction"] >= 1:
        problems.append(f"config key 'datasets.{name}': val_fraction + test_fraction must be < 1")
    return problems


def _bundle_problems(config: Mapping[str, Any]) -> list[str]:
    """Bundle choices and predictions must name models the config trains."""
    finetune, problems = config["finetune"], []
    features, classifier = config["bundle"]["features"], config["bundle"]["classifier"]
    if features is not None and features not in [*finetune["archs"], "fused"]:
        problems.append(f"config key 'bundle.features': '{features}' is not one of {[*finetune['archs'], 'fused']}")
    classifiers = ["cnn", *config["classifiers"]]
    if classifier is not None and classifier not in classifiers:
        problems.append(f"config key 'bundle.classifier': '{classifier}' is not one of {classifiers}")
    if (features, classifier) == ("fused", "cnn"):
        problems.append("config keys 'bundle.features: fused' and 'bundle.classifier: cnn': no such model")
    for name, entry in config["predict"].items():
        for key, known in (("target", finetune["targets"]), ("init", finetune["inits"])):
            if entry[key] not in known:
                problems.append(f"config key 'predict.{name}.{key}': '{entry[key]}' is not one of {known}")
    return problems


def _path_lookup_problems(name: str, ds: Mapping[str, Any], results: str) -> list[str]:
    """The private lookup back to real paths must exist only where the user put it, never among the results."""
    lookup = ds.get("path_lookup")
    if not lookup:
        return []
    key = f"config key 'datasets.{name}.path_lookup'"
    if not private_paths(ds):
        return [f"{key}: set, but this data set's paths are not pseudonymous (pseudonymous_paths)"]
    if Path(lookup).resolve().is_relative_to(Path(results).resolve()):
        return [f"{key}: {lookup} is inside results ({results}); keep the way back to real paths outside it"]
    return []


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file strictly (see read_yaml) and validate it."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be keys (seed:, datasets:, ...), found a {type(data).__name__}")
    try:
        return validate(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# Classifiers that combine the others' fitted models (medxfer.classifiers): fitted last, each with its members.
COMBINERS = ("ensemble", "stacking")
JOB_SELECTORS = ("source", "init", "targets", "inits", "archs", "imagenet_weights", "seeds")
"""Keys of `pretrain`/`finetune` that only choose which jobs exist or which files they read (`pretrain.init`: the
ImageNet file as an input): no job's training settings (training_params)."""


SIMCLR_VIEWS = "views"
"""`pretrain.views`: SimCLR's augmentation, which training_params hands to a SimCLR job as its `augment`."""


def training_params(config: Mapping[str, Any], stage: str, dataset: str | None = None) -> dict[str, Any]:
    """The training settings of `pretrain` or `finetune`, without the keys that only choose jobs and their inputs.

    With `dataset`, that data set's own `augment` keys replace the stage's (e.g. no flips for a modality where
    left and right matter), so a job sees the augmentation it actually uses. A SimCLR pretraining job gets
    `pretrain.views` as its `augment`, a supervised one does not see them: either job's params hold only what it uses,
    so changing the other re-runs nothing.
    """
    params = {k: copy.deepcopy(v) for k, v in config[stage].items() if k not in JOB_SELECTORS}
    views = params.pop(SIMCLR_VIEWS, None)
    if params.get("objective") == "simclr":
        params["augment"] = views
    if dataset is not None:
        params["augment"] = dict(params.get("augment", {})) | config["datasets"][dataset].get("augment", {})
    return params


def canonical(value: Any) -> Any:
    """`value` with every mapping's keys sorted, at any depth; lists keep their order. Snakemake compares a job's
    params by their repr, so a settings section handed over this way re-runs nothing when only its key order
    changes (a key moved, or a default stated in an overlay file)."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def pretrains(config: Mapping[str, Any]) -> bool:
    """Whether a run pretrains: only a model that starts from the in-domain checkpoint needs one (a partial config
    without inits, as an ablation table may compare, does not)."""
    return "indomain" in config.get("finetune", {}).get("inits", ())


def pretrain_sources(config: Mapping[str, Any]) -> list[str]:
    """The pretraining source data sets (one name or a pooled list)."""
    source = config["pretrain"].get("source")
    return [] if source is None else [source] if isinstance(source, str) else list(source)


def pretrain_name(config: Mapping[str, Any]) -> str:
    """The pretraining source as it appears in paths: the data set names joined by '+'."""
    return "+".join(pretrain_sources(config))


def run_name(config: Mapping[str, Any], init: str, seed: int) -> str:
    """How the report names one seed replicate of an init: the init itself for the first seed, `<init>-seed<k>` after.

    Folders name the seed on their own level (`<init>/seed<k>/`); this name is what tables and plots show.
    """
    return init if int(seed) == config["finetune"]["seeds"][0] else f"{init}-seed{int(seed)}"


def channels(dataset: Mapping[str, Any]) -> int:
    """Channels of the cached images: one per CT window, one for radiographs."""
    return len(dataset["windows"]) if dataset["modality"] == "ct" else 1
