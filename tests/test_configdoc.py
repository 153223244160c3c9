"""docs/config.md: generated from the config schema, complete in its defaults, and never stale."""

import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

from medxfer import config as cfg
from medxfer.configdoc import COMMAND, render, rows

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "config.md"


def table(text: str) -> dict[str, list[str]]:
    """Key -> its cells, from every Markdown table row of `text` (cells split at unescaped `|`)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            key = cells[0].strip("`")
            assert key not in found, f"key {key} has two rows"
            found[key] = [c.strip("`") if i in (0, 2) else c for i, c in enumerate(cells)]
    return found


def test_committed_doc_is_current():
    rendered = render()
    committed = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    diff = "".join(
        difflib.unified_diff(committed.splitlines(True), rendered.splitlines(True), "docs/config.md", "rendered", n=1)
    )
    assert committed == rendered, f"docs/config.md is stale: run `make docs`\n{diff[:3000]}"
    assert "generated" in committed and "workflow/schemas/config.schema.yaml" in committed and COMMAND in committed


def schema_defaults(node: dict, root: dict, path: str = "") -> dict[str, object]:
    """Key path -> default of every leaf in the schema: a property's own `default` (beside a `$ref`, never from
    its target, as medxfer.config fills it), leaves being keys without keys of their own."""
    default = node.get("default", ...)
    while "$ref" in node:
        target = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    found = {}
    for name, sub in node.get("properties", {}).items():
        found |= schema_defaults(sub, root, f"{path}.{name}".lstrip("."))
    if isinstance(node.get("additionalProperties"), dict):
        found |= schema_defaults(node["additionalProperties"], root, f"{path}.<name>")
    if not node.get("properties") and default is not ...:
        found[path] = default
    return found


def test_every_default_is_documented():
    schema = cfg.load_schema()
    documented = table(render(schema))
    defaults = schema_defaults(schema, schema)
    assert len(defaults) > 60 and "datasets.<name>.size" in defaults and "finetune.augment.hflip" in defaults
    for key, default in defaults.items():
        assert key in documented, f"{key} (default {default!r}) has no row"
        assert documented[key][2] == json.dumps(default), f"{key}: documented {documented[key][2]}, schema {default!r}"
    parents = {re.sub(r"(\[\])?\.[^.]+$", "", key) for key in documented if "." in key}
    for key, cells in documented.items():  # and no default the loader would not fill in (e.g. one from a $ref target)
        if cells[2] and key not in parents:
            assert key in defaults, f"{key} documents default {cells[2]} that the schema does not give"


def test_documented_defaults_are_what_the_loader_fills_in():
    datasets = {"a": {"format": "mura", "root": "x"}, "src": {"format": "mura", "root": "y"}}
    conf = cfg.validate({"datasets": datasets, "pretrain": {"source": "src"}, "finetune": {"targets": ["a"]}})
    documented = {r.key: r.default for r in rows(cfg.load_schema())}
    given = {"datasets.<name>.format", "datasets.<name>.root", "pretrain.source", "finetune.targets"}
    derived = {"finetune.seeds"}  # null in the schema; validate() turns it into [seed]

    def leaves(value: object, path: str) -> dict[str, object]:
        if isinstance(value, dict) and value and path not in {"finetune.imagenet_weights", "report.anchors"}:
            return {k: v for name, sub in value.items() for k, v in leaves(sub, f"{path}.{name}".lstrip(".")).items()}
        return {path: value}

    filled = leaves(conf | {"datasets": {"<name>": conf["datasets"]["a"]}}, "")
    assert len(filled) > 60
    for key, value in filled.items():
        if key not in given | derived:
            assert documented.get(key) == json.dumps(value), f"{key}: documented {documented.get(key)}, loaded {value}"


SMALL = {
    "type": "object",
    "required": ["train"],
    "properties": {
        "train": {
            "type": "object",
            "default": {},
            "description": "training | settings",
            "properties": {
                "epochs": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10, "description": "passes"},
                "mode": {"$ref": "#/definitions/mode", "default": "fast"},
                "mode_again": {"$ref": "#/definitions/mode"},
                "layers": {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}, "minItems": 1},
                "pca": {"oneOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}]},
            },
        },
        "sets": {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z]+$"},
            "additionalProperties": {
                "type": "object",
                "properties": {"kind": {"enum": ["a", "b"], "default": "a"}},
                "required": ["kind"],
            },
        },
        "notes": {"type": "array", "items": {"type": "object", "properties": {"text": {"type": "string"}}}},
    },
    "definitions": {"mode": {"enum": ["fast", "slow"], "default": "slow", "description": "how *hard* to try"}},
}


def test_rows_of_a_small_schema():
    got = {r.key: r for r in rows(SMALL)}
    assert list(got) == [
        "train",
        "train.epochs",
        "train.mode",
        "train.mode_again",
        "train.layers",
        "train.pca",
        "sets",
        "sets.<name>",
        "sets.<name>.kind",
        "notes",
        "notes[]",
        "notes[].text",
    ]
    assert (got["train"].type, got["train"].default, got["train"].allowed) == ("object", "{}", "required")
    assert (got["train.epochs"].default, got["train.epochs"].allowed) == ("10", "`1 <= x <= 50`")
    mode = got["train.mode"]  # the default beside the $ref counts, the target's does not; its description does
    assert (mode.type, mode.default, mode.description) == ("string", '"fast"', "how *hard* to try")
    assert mode.allowed == 'one of `"fast"`, `"slow"`'
    assert got["train.mode_again"].default == "" and got["train.mode_again"].type == "string"
    assert got["train.layers"].type == "array of integer" and got["train.layers"].default == ""
    assert got["train.layers"].allowed == ">= 1 items; each item: `x > 0`"
    assert got["train.pca"].type == "null | number"
    assert got["train.pca"].allowed == "exactly one of: null; number `0 < x < 1`"
    assert got["sets.<name>"].allowed == "name matches `^[a-z]+$`"
    assert got["sets.<name>.kind"].allowed == 'required; one of `"a"`, `"b"`'
    assert got["notes"].type == "array of object" and got["notes[].text"].type == "string"

    text = render(SMALL, source="small.yaml")
    assert "`small.yaml`" in text and text.count("\n## ") == 3  # one section per top-level key
    cells = table(text)
    assert cells["train.mode"][4] == r"how \*hard\* to try"  # Markdown specials escaped in prose
    assert cells["train"][4] == r"training \| settings"  # a `|` would split the table cell
    assert cells["train.pca"][1] == r"null \| number"
    assert render(SMALL, source="small.yaml") == text  # deterministic


def test_cli_writes_the_doc_without_importing_torch(tmp_path):
    out = tmp_path / "sub" / "config.md"
    code = (
        "import sys; from medxfer.cli import main; rc = main(['config-docs', '--output', sys.argv[1]]);"
        " sys.exit(rc or ('torch' in sys.modules and 'torch imported'))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == render()
    stdout = subprocess.run([sys.executable, "-m", "medxfer.cli", "config-docs"], capture_output=True, text=True)
    assert stdout.returncode == 0 and stdout.stdout == render()
