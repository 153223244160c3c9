"""The typed config sections mirror the schema: same keys, the schema's defaults, its errors, tuples for lists."""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing

import pytest

from medxfer.config import (
    JOB_SELECTORS,
    SIMCLR_VIEWS,
    ConfigError,
    checked,
    load_schema,
    section_defaults,
    training_params,
    validate,
)
from medxfer.sections import (
    BundleSection,
    ClassifySection,
    ConfigSection,
    DecisionSection,
    ExplainSection,
    FeaturesSection,
    FinetuneTraining,
    FusionSection,
    PretrainTraining,
    RobustnessSection,
    dataset_entry,
)

SECTIONS = [ExplainSection, FusionSection, RobustnessSection, FeaturesSection, ClassifySection, DecisionSection]
SECTIONS += [BundleSection]
TRAINING = [PretrainTraining, FinetuneTraining]
# per section: a key the schema types as an integer (or boolean), and a value of the wrong type for it
WRONG_TYPE = [
    (ExplainSection, "lime_samples", "many"),
    (FusionSection, "standardize", "yes"),
    (FeaturesSection, "batch_size", 2.5),
    (PretrainTraining, "multilabel", "yes"),
    (FinetuneTraining, "epochs", 2.5),
    (ClassifySection, "pca_components", 0.5),
    (DecisionSection, "threshold", "auc"),
    (BundleSection, "features", 3),
]


JSON_TYPES = {
    "null": type(None),
    "boolean": bool,
    "integer": int,
    "number": float,
    "string": str,
    "array": tuple,
    "object": collections.abc.Mapping,
}


def schema_section(section: type[ConfigSection]) -> dict:
    return section.schema()


def schema_types(prop: dict, definitions: dict | None = None) -> set[type]:
    """The Python types a schema property allows (arrays as tuples), from `type`, `enum`, `oneOf` or `$ref`."""
    if "$ref" in prop:
        prefix = "#/definitions/"
        assert prop["$ref"].startswith(prefix)
        return schema_types(definitions[prop["$ref"].removeprefix(prefix)], definitions)
    if "oneOf" in prop:
        return set().union(*(schema_types(option) for option in prop["oneOf"]))
    if "enum" in prop:
        return {type(value) for value in prop["enum"]}
    names = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    return {JSON_TYPES[name] for name in names}


def hint_types(hint: object) -> set[type]:
    """The types a field's annotation allows: the members of a union, or the annotation's own class."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(hint_types(arg) for arg in typing.get_args(hint)))
    return {typing.get_origin(hint) or hint}


@pytest.mark.parametrize("section", SECTIONS + TRAINING)
def test_fields_are_the_schema_keys_without_defaults(section):
    fields = dataclasses.fields(section)
    assert [f.name for f in fields] == list(schema_section(section)["properties"])
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    assert dataclasses.is_dataclass(section) and section.__dataclass_params__.frozen


@pytest.mark.parametrize("section", SECTIONS + TRAINING)
def test_type_hints_are_the_schema_types(section):
    hints = typing.get_type_hints(section)
    schema = schema_section(section)
    for name, prop in schema["properties"].items():
        assert hint_types(hints[name]) == schema_types(prop, schema["definitions"]), name
        if "items" in prop:  # tuple[X, ...]: X is the items' type
            assert {typing.get_args(hints[name])[0]} == schema_types(prop["items"]), name


@pytest.mark.parametrize("section", SECTIONS)
def test_empty_section_takes_the_schema_defaults_with_tuples_for_lists(section):
    built = section.from_config({})
    assert section.from_config(None) == built
    defaults = section_defaults(section.SECTION)
    assert defaults  # every key of these sections has a default
    for name, value in defaults.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(built, name) == expected and type(getattr(built, name)) is type(expected), name


def test_given_values_replace_defaults_and_lists_become_tuples():
    explain = ExplainSection.from_config({"methods": ["lime"], "layers": [-2], "n_images": 2})
    assert explain.methods == ("lime",) and explain.layers == (-2,) and explain.n_images == 2
    assert explain.lime_samples == section_defaults("explain")["lime_samples"]
    robustness = RobustnessSection.from_config({"perturbations": ["blur"], "severities": [3, 1]})
    assert (robustness.perturbations, robustness.severities) == (("blur",), (3, 1))
    hash(robustness)  # frozen, and tuples: hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        robustness.severities = (1,)  # type: ignore[misc]


@pytest.mark.parametrize("section", SECTIONS + TRAINING)
def test_an_unknown_key_is_an_error_naming_section_and_key(section):
    with pytest.raises(ConfigError, match=rf"config key '{section.SECTION}'.*'misspelt_key' was unexpected"):
        section.from_config({"misspelt_key": 1})


@pytest.mark.parametrize(("section", "key", "value"), WRONG_TYPE)
def test_a_wrong_type_is_an_error_naming_the_key(section, key, value):
    with pytest.raises(ConfigError, match=rf"config key '{section.SECTION}\.{key}'"):
        section.from_config({key: value})


def test_schema_rules_beyond_types_hold():
    with pytest.raises(ConfigError, match=r"config key 'robustness\.severities\[0\]'"):
        RobustnessSection.from_config({"severities": [4]})
    with pytest.raises(ConfigError, match=r"config key 'features\.stages'"):
        FeaturesSection.from_config({"stages": 3})
    with pytest.raises(ConfigError, match=r"config key 'fusion\.pca_components'"):
        FusionSection.from_config({"pca_components": 1.5})


@pytest.mark.parametrize("section", TRAINING)
def test_training_sections_are_their_stage_without_the_job_selectors(section):
    """Nor `pretrain.views`: training_params hands them to a SimCLR job as its `augment`."""
    whole = load_schema()["properties"][section.SECTION]["properties"]
    kept = [k for k in whole if k not in (*JOB_SELECTORS, SIMCLR_VIEWS)]
    assert list(schema_section(section)["properties"]) == kept
    with pytest.raises(ConfigError, match=rf"config key '{section.SECTION}'.*was unexpected"):
        section.from_config({[k for k in whole if k in JOB_SELECTORS][0]: None})


@pytest.mark.parametrize("section", TRAINING)
def test_empty_training_section_takes_the_schema_defaults_read_only(section):
    built = section.from_config({})
    defaults = checked({}, schema_section(section), section.SECTION)
    assert built.as_dict() == defaults and list(built.as_dict()) == list(defaults)
    assert built.augment["scale"] == tuple(defaults["augment"]["scale"])  # every augment key, filled in
    with pytest.raises(TypeError):
        built.augment["hflip"] = 0  # type: ignore[index]
    with pytest.raises(KeyError):
        built.augment["hfilp"]  # noqa: B018 - a misspelt key fails where it is read


@pytest.mark.parametrize(("section", "stage"), [(PretrainTraining, "pretrain"), (FinetuneTraining, "finetune")])
def test_training_params_round_trip_with_the_data_sets_augment(section, stage):
    conf = validate(
        {
            "datasets": {
                "ct": {"format": "npz", "root": ".", "file": "x.npz", "augment": {"hflip": 0.0}},
            },
            "pretrain": {"source": "ct"},
            "finetune": {"targets": ["ct"], "inits": ["scratch"], "archs": ["resnet10t"], "epochs": 3},
        }
    )
    params = training_params(conf, stage, "ct")
    built = section.from_config(params)
    assert built.augment["hflip"] == 0.0 and built.as_dict() == params  # as model.json and the fingerprint see it
    assert section.from_config(built.as_dict()) == built


def test_library_entry_points_take_the_sections_without_defaults_of_their_own():
    """The decision rule, the classifiers' PCA width and the bundle's choice come from the config, never from a
    keyword default that could drift from the schema's."""
    import inspect

    from medxfer.bundle import export_bundle
    from medxfer.classify import train_classifier

    for function, name, section in (
        (train_classifier, "decision", DecisionSection),
        (train_classifier, "classify", ClassifySection),
        (export_bundle, "choose", BundleSection),
    ):
        parameter = inspect.signature(function).parameters[name]
        assert parameter.default is inspect.Parameter.empty and parameter.annotation == section.__name__, name
    assert "pca_components" not in inspect.signature(train_classifier).parameters


def workflow_entry(entry: dict) -> dict:
    """The data set entry as the workflow validates it (with the whole config)."""
    return validate({"datasets": {"d": entry}, "finetune": {"targets": ["d"], "inits": ["scratch"]}})["datasets"]["d"]


@pytest.mark.parametrize(
    "entry",
    [
        {"format": "mura", "root": "raw"},
        {"format": "npz", "root": "raw", "file": "x.npz", "modality": "ct", "npz_masks": {"file": "m.npz", "key": "k"}},
        {"format": "csv", "root": "raw", "manifest": "m.csv", "windows": [[50, 350], [-600, 1500]], "size": 128},
    ],
)
def test_a_dataset_entry_is_filled_as_the_workflow_fills_it(entry):
    built = dataset_entry(entry, "d")
    assert dict(built) == workflow_entry(entry) and list(built) == list(workflow_entry(entry))
    assert dataset_entry(built, "d") == built  # filling a filled entry changes nothing
    assert built["min_image_side"] == 16 and type(built["windows"]) is list  # the schema's, printed as YAML has it
    with pytest.raises(TypeError):
        built["size"] = 32  # type: ignore[index]
    built["windows"].append([0, 1])
    assert entry.get("windows", [[40, 400]]) != built["windows"]  # a copy: the caller's entry stays as it was


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": "mura", "root": "raw", "min_image_side": 0}, r"config key 'datasets\.bone\.min_image_side'"),
        ({"format": "mura", "root": "raw", "window": [[40, 400]]}, r"config key 'datasets\.bone'.*'window' was unexp"),
        ({"format": "mura"}, r"config key 'datasets\.bone': 'root' is a required property"),
        ({"format": "csv", "root": "raw"}, r"config key 'datasets\.bone\.manifest': required for format 'csv'"),
        ({"format": "mura", "root": "raw", "test_fraction": 0.9}, r"'datasets\.bone': val_fraction \+ test_fraction"),
    ],
)
def test_a_bad_dataset_entry_is_an_error_naming_the_key(entry, message):
    with pytest.raises(ConfigError, match=message):
        dataset_entry(entry, "bone")
