"""The results layout is named once (medxfer.paths): rules and readers fill in the same templates."""

import string

from medxfer import paths

WILDCARDS = {"dataset", "size", "target", "source", "arch", "init", "seed", "features", "clf", "prediction"}


def test_artifact_fills_the_wildcards_given_and_keeps_the_others():
    assert paths.artifact("results", paths.MODEL, "model.json", target="mura") == (
        "results/finetune/mura/{init}/seed{seed}/{arch}/model.json"
    )
    assert paths.artifact("results/run", paths.FEATURES, arch="resnet18") == (
        "results/run/features/{target}/{init}/seed{seed}/resnet18.npz"
    )
    assert paths.artifact("r", paths.IMAGES, dataset="ct", size=64) == "r/datasets/ct/images_64.npy"


def test_every_template_uses_only_the_workflows_wildcards():
    templates = {k: v for k, v in vars(paths).items() if k.isupper() and isinstance(v, str)}
    assert len(templates) >= 15
    for name, template in templates.items():
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        assert fields <= WILDCARDS, (name, fields - WILDCARDS)
        assert not template.startswith("/") and ".." not in template, name
