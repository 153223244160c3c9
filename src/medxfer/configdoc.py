"""Render the config JSON Schema as the Markdown key reference docs/config.md.

The reference is generated, not written by hand, so it cannot drift from the schema the loader validates against:
tests/test_configdoc.py fails when the committed docs/config.md differs from what `render()` gives now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from medxfer import config as cfg

SOURCE = "workflow/schemas/config.schema.yaml"
OUTPUT = "docs/config.md"
COMMAND = f".venv/bin/medxfer config-docs --output {OUTPUT}"
NAME = "<name>"  # stands for a key the user chooses (additionalProperties / patternProperties)
_PLAIN = re.compile(r"[\\`*<|]")  # Markdown specials in prose: emphasis, HTML tags, table cell breaks


@dataclass(frozen=True)
class Row:
    """One key path of the config as table cells, so tests can check a key's facts without parsing Markdown."""

    key: str
    type: str
    default: str  # JSON literal (also valid YAML); "" when the schema gives no default
    allowed: str  # already Markdown: literals and patterns in code spans
    description: str


def _literal(value: Any) -> str:
    """JSON is also YAML, and unlike YAML flow style it never leaves `1` vs `'1'` or `null` vs `~` ambiguous."""
    return json.dumps(value, ensure_ascii=False)


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s, keys beside a `$ref` winning. A `default` counts only beside the `$ref`, never from
    its target: medxfer.config fills a property's own `default` without following refs, so that is what applies."""
    node = dict(node)
    seen: set[str] = set()
    while "$ref" in node:
        ref = node.pop("$ref")
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"config schema: unsupported or circular $ref {ref!r}")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = {**{k: v for k, v in target.items() if k != "default"}, **node}
    return node


def _type(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """JSON type words, as written in YAML config terms: `array of integer`, `null | number`."""
    node = _resolve(node, root)
    if "oneOf" in node or "anyOf" in node:
        names = [_type(branch, root) for branch in node.get("oneOf", node.get("anyOf"))]
        return " | ".join(dict.fromkeys(names))
    kind = node.get("type")
    if kind is None and ("enum" in node or "const" in node):
        values = node.get("enum", [node.get("const")])
        kind = list(dict.fromkeys(_json_type(v) for v in values))
    if kind is None:
        return "object" if "properties" in node else "any"
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds and isinstance(node.get("items"), Mapping):
        kinds = [f"array of {_type(node['items'], root)}" if k == "array" else k for k in kinds]
    return " | ".join(kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _range(node: Mapping[str, Any]) -> str:
    """Numeric bounds as one inequality, e.g. `0 < x <= 1`."""
    low = ("<", node["exclusiveMinimum"]) if "exclusiveMinimum" in node else ("<=", node.get("minimum"))
    high = ("<", node["exclusiveMaximum"]) if "exclusiveMaximum" in node else ("<=", node.get("maximum"))
    if low[1] is not None and high[1] is not None:
        return f"{low[1]} {low[0]} x {high[0]} {high[1]}"
    if low[1] is not None:
        return f"x {low[0].replace('<', '>')} {low[1]}"
    return f"x {high[0]} {high[1]}" if high[1] is not None else ""


def _constraints(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """What a value may be, beyond its type; object keys are left to their own rows."""
    node = _resolve(node, root)
    parts = []
    if "const" in node:
        parts.append(f"exactly {_code(_literal(node['const']))}")
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(_literal(v)) for v in node["enum"]))
    if rng := _range(node):
        parts.append(_code(rng))
    if "pattern" in node:
        parts.append(f"matches {_code(node['pattern'])}")
    if "format" in node:
        parts.append(f"format {_code(node['format'])}")
    for key, word in (("minLength", ">="), ("maxLength", "<=")):
        if key in node:
            parts.append(f"length {word} {node[key]}")
    if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
        parts.append(f"exactly {node['minItems']} items")
    else:
        for key, word in (("minItems", ">="), ("maxItems", "<=")):
            if key in node:
                parts.append(f"{word} {node[key]} items")
    if node.get("uniqueItems"):
        parts.append("unique items")
    for key, word in (("minProperties", ">="), ("maxProperties", "<=")):
        if key in node:
            parts.append(f"{word} {node[key]} entries")
    if isinstance(node.get("items"), Mapping) and (item := _constraints(node["items"], root)):
        parts.append("each item: " + ", ".join(item))
    branches = node.get("oneOf", node.get("anyOf"))
    if branches:
        words = []
        for branch in branches:
            kind, rest = _type(branch, root), _constraints(branch, root)
            words.append("null" if kind == "null" else " ".join([kind, ", ".join(rest)]).strip())
        parts.append(("exactly one of: " if "oneOf" in node else "any of: ") + "; ".join(words))
    return parts


def _children(node: Mapping[str, Any], root: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(key, subschema, notes) for every key an object may hold; user-chosen keys show as NAME."""
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        yield name, _resolve(sub, root), ["required"] if name in required else []
    name_pattern = node.get("propertyNames", {}).get("pattern")
    for pattern, sub in node.get("patternProperties", {}).items():
        yield NAME, _resolve(sub, root), [f"name matches {_code(pattern)}"]
    if isinstance(node.get("additionalProperties"), Mapping):
        notes = [f"name matches {_code(name_pattern)}"] if name_pattern else []
        yield NAME, _resolve(node["additionalProperties"], root), notes


def _walk(node: dict[str, Any], path: list[str], notes: list[str], root: Mapping[str, Any]) -> Iterator[Row]:
    if path:
        yield Row(
            key=".".join(path).replace(".[]", "[]"),
            type=_type(node, root),
            default=_literal(node["default"]) if "default" in node else "",
            allowed="; ".join(notes + _constraints(node, root)),
            description=" ".join(str(node.get("description", "")).split()),
        )
    for key, sub, sub_notes in _children(node, root):
        yield from _walk(sub, [*path, key], sub_notes, root)
    items = _resolve(node["items"], root) if isinstance(node.get("items"), Mapping) else {}
    if any(_children(items, root)):  # a list of objects: its keys as `key[].field`
        yield from _walk(items, [*path, "[]"], [], root)
    for branch in node.get("oneOf", node.get("anyOf", [])):  # object-valued alternatives document their keys too
        for key, sub, sub_notes in _children(_resolve(branch, root), root):
            yield from _walk(sub, [*path, key], sub_notes, root)


def rows(schema: Mapping[str, Any]) -> list[Row]:
    """Every key path of `schema`, depth first in schema order (YAML keeps it), so the output is stable."""
    return list(_walk(_resolve(schema, schema), [], [], schema))


def _prose(text: str) -> str:
    return _PLAIN.sub(lambda m: "\\" + m.group(), text)


def _code(text: str) -> str:
    """A code span in a table cell: `|` still needs its backslash there (GitHub Markdown)."""
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _table(group: list[Row]) -> list[str]:
    lines = ["| Key | Type | Default | Allowed | Description |", "| --- | --- | --- | --- | --- |"]
    for row in group:
        cells = [_code(row.key), _prose(row.type), _code(row.default), row.allowed, _prose(row.description)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(schema: Mapping[str, Any] | None = None, source: str = SOURCE) -> str:
    """The whole Markdown page; `schema` defaults to the one medxfer.config validates against."""
    schema = cfg.load_schema() if schema is None else schema
    lines = [
        "# Configuration keys",
        "",
        f"<!-- Generated from {source} by `medxfer config-docs`: edit the schema, not this file. -->",
        "",
        f"This file is generated from `{source}`; do not edit it by hand. After changing the schema,",
        "regenerate it with `make docs`, which runs:",
        "",
        "```sh",
        COMMAND,
        "```",
        "",
    ]
    if schema.get("description"):
        lines += [_prose(" ".join(str(schema["description"]).split())), ""]
    lines += [
        f"Keys are dotted paths; `{NAME}` stands for a key you choose (a data set name, say) and `[]` for each item of",
        "a list. Defaults are JSON literals, which are also valid YAML; a nested key's default applies wherever its",
        "parent object is present. A blank default means the key is unset unless given.",
        "",
    ]
    groups: dict[str, list[Row]] = {}
    for row in rows(schema):
        groups.setdefault(re.split(r"[.\[]", row.key, maxsplit=1)[0], []).append(row)
    for top, group in groups.items():
        lines += [f"## {_code(top) if top != NAME else _prose(top)}", "", *_table(group), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
