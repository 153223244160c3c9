"""Typed, validated config sections for the library functions that take one.

A function reading `settings["lime_sample"]` fails only when it gets there, and a signature that repeats a schema
default (`batch_size=256`) drifts from the schema unnoticed. These frozen dataclasses have exactly their section's
schema keys and no defaults of their own: `from_config` fills the schema's, validates against it (errors name the
key) and turns lists into tuples and objects into read-only mappings, so nothing downstream can change it.
A data set entry, whose keys depend on its format, is a read-only mapping filled the same way (`dataset_entry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, Self

from medxfer.config import JOB_SELECTORS, SIMCLR_VIEWS, ConfigError, checked, entry_problems, load_schema


def _schema_part(*keys: str) -> dict[str, Any]:
    """The part of the config schema at `keys`, with the schema's `definitions`, which its `$ref`s point into."""
    full = part = load_schema()
    for key in keys:
        part = part[key]
    return {**part, "definitions": full.get("definitions", {})}


class ConfigSection:
    """One top-level config section (`SECTION`), built only through `from_config`."""

    SECTION: ClassVar[str]

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The section's part of the config schema, with the schema's `definitions` its `$ref`s point into."""
        return _schema_part("properties", cls.SECTION)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> Self:
        """The section with the schema's defaults for the keys `values` leaves out; ConfigError naming a key the
        schema does not know or a value it rejects."""
        valid = checked(values or {}, cls.schema(), cls.SECTION)
        return cls(**{key: _frozen(value) for key, value in valid.items()})

    def as_dict(self) -> dict[str, Any]:
        """The plain values again, in field order: lists for tuples, dicts for read-only mappings (for JSON)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _frozen(value: Any) -> Any:
    """Lists as tuples and objects as read-only mappings, all the way down."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _plain(value: Any) -> Any:
    """The inverse of `_frozen`: what the config's YAML (and JSON) holds."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ExplainSection(ConfigSection):
    """`explain`: heatmap methods, the CAM layer choice on val, the gallery and the faithfulness scoring."""

    SECTION: ClassVar[str] = "explain"

    methods: tuple[str, ...]
    layers: tuple[int, ...]
    choose_on_val: int
    choose_by: str
    sanity_threshold: float
    n_images: int
    lime_samples: int
    lime_segments: int | tuple[int, ...]
    lime_fill: str
    n_faithfulness: int
    deletion_steps: int

    def map_options(self, seed: int) -> dict[str, Any]:
        """The options every heatmap method takes (medxfer.cams.heatmaps; each ignores those it does not use)."""
        lime = dict(lime_samples=self.lime_samples, lime_segments=self.lime_segments, lime_fill=self.lime_fill)
        return dict(seed=seed, **lime)


@dataclass(frozen=True)
class FusionSection(ConfigSection):
    """`fusion`: how the CNNs' features become one matrix."""

    SECTION: ClassVar[str] = "fusion"

    standardize: bool
    pca_components: int | float | None
    select_k: int | None


@dataclass(frozen=True)
class RobustnessSection(ConfigSection):
    """`robustness`: which perturbations at which severities."""

    SECTION: ClassVar[str] = "robustness"

    perturbations: tuple[str, ...]
    severities: tuple[int, ...]


@dataclass(frozen=True)
class FeaturesSection(ConfigSection):
    """`features`: how the CNNs' pooled features are extracted."""

    SECTION: ClassVar[str] = "features"

    batch_size: int
    stages: int


class TrainingSection(ConfigSection):
    """The training settings of one stage: its section's keys without the job selectors (config.JOB_SELECTORS).

    `from_config` takes what `config.training_params` returns, so a data set's own `augment` keys are in already;
    `augment` becomes a read-only mapping with every key of the schema's `augment` (a misspelt key is a KeyError).
    `as_dict` gives back the same dict, for model.json and the resume fingerprint.
    """

    @classmethod
    def schema(cls) -> dict[str, Any]:
        section = super().schema()
        dropped = (*JOB_SELECTORS, SIMCLR_VIEWS)  # what training_params leaves out or resolves into `augment`
        keep = {key: prop for key, prop in section["properties"].items() if key not in dropped}
        return section | {"properties": keep}


@dataclass(frozen=True)
class PretrainTraining(TrainingSection):
    """`pretrain` without `source`: the objective and how to train on the source set(s).

    Pretraining has no pretrained backbone and no new head to warm up: the backbone trains at `lr` (multiplier 1)
    from the first epoch, which `fit` reads as for fine-tuning."""

    SECTION: ClassVar[str] = "pretrain"
    backbone_lr_mult: ClassVar[float] = 1.0
    unfreeze_epoch: ClassVar[int | None] = None
    mask_guidance: ClassVar[float] = 0.0

    objective: str
    multilabel: bool
    temperature: float
    projection_dim: int
    image_size: int | None
    view_size: int | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    patience: int | None
    imbalance: str
    augment: Mapping[str, Any]


@dataclass(frozen=True)
class FinetuneTraining(TrainingSection):
    """`finetune` without targets, inits, archs, imagenet_weights and seeds: how one fine-tuning job trains."""

    SECTION: ClassVar[str] = "finetune"

    strategy: str
    head: str
    tta: bool
    truncate_stages: int
    output_stride: int
    backbone_lr_mult: float
    unfreeze_epoch: int | None
    mask_guidance: float
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    patience: int | None
    imbalance: str
    augment: Mapping[str, Any]


Training = PretrainTraining | FinetuneTraining
"""What `medxfer.train.fit` and the objectives take."""


@dataclass(frozen=True)
class ClassifySection(ConfigSection):
    """`classify`: what the classifiers' pipelines do to the features before the classifier."""

    SECTION: ClassVar[str] = "classify"

    pca_components: int | None


@dataclass(frozen=True)
class DecisionSection(ConfigSection):
    """`decision`: argmax, or the metric whose best binary threshold is chosen on validation data."""

    SECTION: ClassVar[str] = "decision"

    threshold: str


@dataclass(frozen=True)
class BundleSection(ConfigSection):
    """`bundle`: which models export_bundle may choose from (None = no restriction)."""

    SECTION: ClassVar[str] = "bundle"

    features: str | None
    classifier: str | None


def augment_entry(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """An `augment` mapping with the schema's defaults for the keys it leaves out, checked (errors name the key),
    read-only: library callers get what a config with the same keys gets."""
    return MappingProxyType(checked(_plain(values), _schema_part("definitions", "augment"), "augment"))


def dataset_entry(values: Mapping[str, Any], name: str = "<name>") -> Mapping[str, Any]:
    """One `datasets.<name>` entry with the schema's defaults filled in and checked as the workflow checks it
    (errors name `datasets.<name>.<key>`), read-only.

    Library entry points that take a data set entry call this once, so an entry that leaves a key out gets the
    schema's default and not a reader's own. A mapping, not a dataclass: which keys exist depends on the format.
    Read-only at the top only: the nested values stay lists and dicts of a fresh copy, as the messages, the manifest
    and bundle.json print them. The workflow's entries come filled already; filling them again changes nothing.
    """
    schema = _schema_part("properties", "datasets", "additionalProperties")
    entry = checked(values, schema, f"datasets.{name}")
    if problems := entry_problems(name, entry):
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return MappingProxyType(entry)
