"""Typed, validated config sections for the library functions that take one.

A function reading `settings["lime_sample"]` fails only when it gets there, and a signature that repeats a schema
default (`batch_size=256`) drifts from the schema unnoticed. These frozen dataclasses have exactly their section's
schema keys and no defaults of their own: `from_config` fills the schema's, validates against it (errors name the
key) and turns lists into tuples, so a section is hashable and nothing downstream can change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from medxfer.config import checked, load_schema


class ConfigSection:
    """One top-level config section (`SECTION`), built only through `from_config`."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> Self:
        """The section with the schema's defaults for the keys `values` leaves out; ConfigError naming a key the
        schema does not know or a value it rejects."""
        schema = load_schema()["properties"][cls.SECTION]
        valid = checked(values or {}, schema, cls.SECTION)
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in valid.items()})


@dataclass(frozen=True)
class ExplainSection(ConfigSection):
    """`explain`: heatmap methods, the CAM layer choice on val, the gallery and the faithfulness scoring."""

    SECTION: ClassVar[str] = "explain"

    methods: tuple[str, ...]
    layers: tuple[int, ...]
    choose_on_val: int
    sanity_threshold: float
    n_images: int
    lime_samples: int
    lime_segments: int
    n_faithfulness: int
    deletion_steps: int


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
