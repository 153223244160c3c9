from pathlib import Path

import pytest

from medxfer.config import ConfigError, canonical, load, training_params, validate
from medxfer.sections import PretrainTraining

REPO = Path(__file__).resolve().parents[1]


def test_default_config_validates_and_fills_defaults():
    conf = load(REPO / "config" / "config.yaml")
    assert conf["finetune"]["augment"]["hflip"] == 0.5
    assert conf["datasets"]["demo_mura"]["size"] == 64
    assert conf["explain"]["methods"] == ["gradcam", "gradcampp", "lime"]


def minimal(**finetune):
    return {
        "datasets": {"a": {"format": "mura", "root": "x"}},
        "finetune": {"targets": ["a"], "inits": ["scratch"], **finetune},
    }


def minimal_indomain() -> dict:
    return {
        "datasets": {"src": {"format": "mura", "root": "x"}, "a": {"format": "mura", "root": "y"}},
        "pretrain": {"source": "src"},
        "finetune": {"targets": ["a"], "inits": ["indomain"], "archs": ["resnet10t"]},
    }


def test_a_pretraining_job_gets_the_augmentation_its_objective_uses():
    """SimCLR draws its views with pretrain.views (strong by default), supervised pretraining with pretrain.augment:
    each job's params hold only the one it uses, as `augment`, so changing the other re-runs nothing."""
    supervised = validate(minimal_indomain())
    simclr = validate(minimal_indomain() | {"pretrain": {"source": "src", "objective": "simclr"}})
    assert simclr["pretrain"]["views"]["scale"] == [1.0, 1.8]
    assert supervised["pretrain"]["augment"]["scale"] == [0.9, 1.1]
    assert training_params(supervised, "pretrain")["augment"] == supervised["pretrain"]["augment"]
    assert training_params(simclr, "pretrain")["augment"] == simclr["pretrain"]["views"]
    assert all("views" not in training_params(c, "pretrain") for c in (supervised, simclr))
    changed = validate(minimal_indomain() | {"pretrain": {"source": "src", "views": {"degrees": 5}}})
    assert training_params(changed, "pretrain") == training_params(supervised, "pretrain")  # unused by supervised
    assert changed["pretrain"]["views"]["translate"] == 0.15  # one key stated: the others keep SimCLR's defaults
    assert PretrainTraining.from_config(training_params(simclr, "pretrain", "src")).augment["brightness"] == 0.4


def test_supervised_augmentation_stated_for_simclr_is_an_error_not_ignored():
    stated = {"source": "src", "objective": "simclr", "augment": {"degrees": 30}}
    with pytest.raises(ConfigError, match=r"'pretrain.augment'.*pretrain.views"):
        validate(minimal_indomain() | {"pretrain": stated})
    defaults = validate(minimal_indomain())["pretrain"]["augment"]  # a default stated outright changes nothing
    restated = validate(minimal_indomain() | {"pretrain": stated | {"augment": defaults}})
    assert restated["pretrain"]["objective"] == "simclr"


def test_view_size_is_for_simclr_only():
    with pytest.raises(ConfigError, match=r"'pretrain.view_size'.*supervised, which trains on whole images"):
        validate(minimal_indomain() | {"pretrain": {"source": "src", "view_size": 32}})
    simclr = validate(minimal_indomain() | {"pretrain": {"source": "src", "objective": "simclr", "view_size": 32}})
    assert PretrainTraining.from_config(training_params(simclr, "pretrain", "src")).view_size == 32


def test_a_targets_own_images_are_pretrained_on_only_without_their_labels():
    """A source holding a target's files (here the target's 10 % subset learns from all its training images) may
    pretrain self-supervised; supervised, it would learn the labels the subset holds back, so it is an error."""
    own = minimal_indomain()
    own["datasets"]["a_10pct"] = {"format": "mura", "root": "x/", "train_fraction": 0.1}  # src's files, other spelling
    own["finetune"]["targets"] = ["a", "a_10pct"]
    with pytest.raises(ConfigError) as err:
        validate(own)
    assert "'src' reads images of the target 'a_10pct'" in str(err.value) and "'a'" not in str(err.value)
    assert validate(own | {"pretrain": {"source": "src", "objective": "simclr"}})["pretrain"]["objective"] == "simclr"
    assert validate(minimal_indomain())["pretrain"]["objective"] == "supervised"  # other files: supervised is fine


def test_error_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        validate(minimal(inits=["bogus"]))
    message = str(err.value)
    assert "finetune.inits[0]" in message and "'bogus'" in message and "indomain" in message


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match="known keys"):
        validate(minimal() | {"finetuen": {}})


def test_cross_checks_target_and_imagenet_weights():
    conf = minimal(inits=["imagenet"])
    conf["finetune"]["targets"] = ["missing"]
    with pytest.raises(ConfigError) as err:
        validate(conf)
    assert "finetune.targets[0]" in str(err.value)
    assert "finetune.imagenet_weights.resnet10t" in str(err.value)


def test_indomain_needs_pretrain_source():
    with pytest.raises(ConfigError, match="pretrain.source"):
        validate(minimal(inits=["indomain"]))


def test_pretraining_from_imagenet_reads_the_file_as_a_job_input():
    from types import SimpleNamespace

    from medxfer.jobs import source_inputs

    conf = minimal_indomain()
    conf["pretrain"]["init"] = "imagenet"
    with pytest.raises(ConfigError, match="pretrain.init 'imagenet' needs a local"):
        validate(conf)
    conf["finetune"]["imagenet_weights"] = {"resnet10t": "weights/resnet10t.safetensors"}
    inputs = source_inputs(validate(conf), SimpleNamespace(source="src", arch="resnet10t"))
    assert inputs["weights"] == "weights/resnet10t.safetensors"
    assert "weights" not in source_inputs(validate(minimal_indomain()), SimpleNamespace(source="src", arch="resnet10t"))


def test_tta_is_refused_for_a_target_trained_without_flips():
    assert validate(minimal(tta=True))["finetune"]["tta"] is True
    unflipped = minimal(tta=True)
    unflipped["datasets"]["a"]["augment"] = {"hflip": 0}
    with pytest.raises(ConfigError, match=r"finetune\.tta.*data set 'a' is trained without flips"):
        validate(unflipped)


def test_mask_guidance_is_refused_for_a_target_without_masks_and_for_the_ordinal_head():
    guided = minimal(mask_guidance=0.3)
    with pytest.raises(ConfigError, match=r"finetune\.mask_guidance.*data set 'a' has none"):
        validate(guided)
    guided["datasets"]["a"]["masks"] = "x/masks"
    assert validate(guided)["finetune"]["mask_guidance"] == 0.3
    guided["finetune"]["head"] = "ordinal"
    with pytest.raises(ConfigError, match=r"finetune\.mask_guidance.*needs the linear head"):
        validate(guided)
    with pytest.raises(ConfigError, match="mask_guidance"):
        validate(minimal(mask_guidance=-1))


def test_choosing_heatmaps_by_pointing_is_refused_for_a_target_without_masks():
    conf = minimal() | {"explain": {"choose_by": "pointing"}}
    with pytest.raises(ConfigError, match=r"explain\.choose_by.*data set 'a' has none"):
        validate(conf)
    conf["datasets"]["a"]["masks"] = "x/masks"
    assert validate(conf)["explain"]["choose_by"] == "pointing"
    assert validate(minimal())["explain"]["choose_by"] == "deletion"


def test_defaults_are_not_shared_between_calls():
    first = validate(minimal())
    first["finetune"]["augment"]["hflip"] = 0.0
    assert validate(minimal())["finetune"]["augment"]["hflip"] == 0.5


def test_bundle_choice_and_predictions_must_name_trained_models():
    conf = minimal() | {
        "bundle": {"features": "vgg16", "classifier": "xgboost"},
        "predict": {"new_week": {"input": "x", "target": "b", "init": "imagenet"}},
    }
    with pytest.raises(ConfigError) as err:
        validate(conf)
    message = str(err.value)
    for expected in (
        "bundle.features': 'vgg16'",
        "bundle.classifier': 'xgboost'",
        "predict.new_week.target': 'b'",
        "predict.new_week.init': 'imagenet'",
    ):
        assert expected in message
    assert validate(minimal() | {"predict": {"new_week": {"input": "x", "target": "a", "init": "scratch"}}})


def test_prediction_names_are_folder_and_wildcard_safe():
    with pytest.raises(ConfigError, match="predict"):
        validate(minimal() | {"predict": {"../up": {"input": "x", "target": "a", "init": "scratch"}}})


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name != "config.yaml"))
def test_every_shipped_config_validates_on_top_of_the_demo_config(name):
    """`snakemake --configfile config/<name>` merges the file over the Snakefile's config/config.yaml (Snakemake's
    update_config): whatever the demo config sets must not make another config invalid."""
    from snakemake.utils import update_config

    from medxfer.config import read_yaml

    merged = read_yaml(REPO / "config" / "config.yaml")
    update_config(merged, read_yaml(REPO / "config" / name))
    assert validate(merged)["results"] != "results"  # each writes a results folder of its own


ABLATIONS = REPO / "config" / "ablation"


@pytest.mark.parametrize(
    ("study", "variant"),
    [(p.stem, None) for p in sorted(ABLATIONS.glob("*.yaml")) if "-" not in p.stem]
    + [(p.stem.split("-")[0], p.name) for p in sorted(ABLATIONS.glob("*-*.yaml"))],
)
def test_every_ablation_validates_over_its_base_and_writes_a_results_folder_of_its_own(study, variant):
    """An ablation run merges its study's benchmark (benchmark-<study up to its first '_'>.yaml), the cut-down base
    (config/ablation/<study>.yaml) and at most one variant (<study>-<name>.yaml); each variant must change its results
    folder, or it would overwrite the base run's. `make ablation` reads each run's summary from the folder the file
    name gives."""
    from snakemake.utils import update_config

    from medxfer.config import read_yaml

    merged = read_yaml(REPO / "config" / "config.yaml")
    benchmark = f"benchmark-{study.split('_')[0]}.yaml"
    for name in [benchmark, f"ablation/{study}.yaml", *([f"ablation/{variant}"] if variant else [])]:
        update_config(merged, read_yaml(REPO / "config" / name))
    expected = "base" if variant is None else variant.removeprefix(f"{study}-").removesuffix(".yaml")
    assert validate(merged)["results"] == f"results/ablation-{study}/{expected}"


def test_each_combiner_gets_its_members_and_is_fitted_after_them():
    from medxfer.jobs import classify_params, fit_order

    chosen = {"stacking": {}, "logreg": {}, "svm": {}, "ensemble": {"members": ["knn", "svm"]}}
    conf = validate(minimal() | {"classifiers": chosen})
    with pytest.raises(
        ValueError, match=r"classifiers\.ensemble\.members.*configured: \['logreg', 'svm'\]\); missing: \['knn'\]"
    ):
        classify_params(conf)  # a member that is not configured
    conf["classifiers"]["knn"] = {}
    assert fit_order(conf) == ["logreg", "svm", "knn", "stacking", "ensemble"]
    assert classify_params(conf)["members"] == {"stacking": ["logreg", "svm", "knn"], "ensemble": ["knn", "svm"]}


def test_canonical_sorts_keys_at_every_depth_and_keeps_list_order():
    given = {"lr": 0.1, "augment": {"scale": [1.2, 0.9], "degrees": 10}, "windows": [{"w": 1, "c": 2}, [3, 1]]}
    got = canonical(given)
    assert got == given
    assert list(got) == ["augment", "lr", "windows"]
    assert list(got["augment"]) == ["degrees", "scale"] and got["augment"]["scale"] == [1.2, 0.9]
    assert list(got["windows"][0]) == ["c", "w"] and got["windows"][1] == [3, 1]
    # what Snakemake compares: the repr, equal for the same values given in another order
    assert repr(canonical({"b": 1, "a": {"d": 2, "c": 3}})) == repr(canonical({"a": {"c": 3, "d": 2}, "b": 1}))


def test_lime_segments_is_a_count_or_a_list_of_counts():
    explain = validate(minimal(epochs=1) | {"explain": {"lime_segments": [25, 50, 100]}})["explain"]
    assert explain["lime_segments"] == [25, 50, 100]
    for bad in ([], [25, 25], [2, 50], 3):
        with pytest.raises(ConfigError, match="explain.lime_segments"):
            validate(minimal(epochs=1) | {"explain": {"lime_segments": bad}})
