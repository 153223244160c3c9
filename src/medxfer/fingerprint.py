"""A content fingerprint of a raw data set, so the workflow re-ingests when the data change and only then.

File times are no evidence of change: `dvc checkout` / `dvc pull`, `cp`, `rsync` and unpacking all reset them,
and a folder's own time does not change when a file inside it is edited. The fingerprint is a digest over the
sorted (relative path, size, sha256) of every file the data set reads. Each file's sha256 is kept in a sidecar
keyed by (size, mtime_ns), so an unchanged tree costs one stat per file and a touched file is re-hashed once. The
sidecar names files by a salted hash of their path only: folder names can identify patients (`DOE^JOHN/...`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medxfer.io import atomic_path, sha256_file, write_json
from medxfer.privacy import salt_of

ABSENT = "absent"
SIDECAR_DIR = Path(".snakemake") / "medxfer" / "fingerprints"


def raw_paths(dataset: Mapping[str, Any]) -> list[Path]:
    """What a data set entry reads: the .npz file, or the root folder plus a manifest / masks folder outside it."""
    root = Path(dataset["root"])
    if dataset["format"] == "npz":
        return [root / dataset["file"]] + ([root / dataset["npz_masks"]["file"]] if dataset.get("npz_masks") else [])
    paths = [root]
    for key in ("manifest", "masks"):
        extra = dataset.get(key)
        if extra and not Path(extra).resolve().is_relative_to(root.resolve()):
            paths.append(Path(extra))
    return paths


def _files(path: Path) -> Iterable[tuple[str, os.stat_result]]:
    """(path, stat) of `path` or of every non-hidden file below it, walked with scandir (one stat per file). Linked
    folders are followed as ingest follows them, each once per chain, so a link loop ends."""
    if path.is_file():
        yield str(path), path.stat()
        return
    stack = [(str(path), frozenset({os.path.realpath(path)}))]
    while stack:
        folder, ancestors = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # .snakemake_timestamp, .DS_Store, .dvc*: not data
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in ancestors:
                        stack.append((entry.path, ancestors | {real}))
                elif entry.is_file():
                    yield entry.path, entry.stat()


def _load_sidecar(path: Path) -> dict[str, list]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def sidecar_key(name: str, salt: str = "") -> str:
    """A file's key in the sidecar: a salted hash of its path, never the path itself."""
    return hashlib.sha256(salt.encode() + b":" + os.fsencode(name)).hexdigest()[:32]  # the name's bytes, UTF-8 or not


def fingerprint(
    paths: Iterable[str | os.PathLike], sidecar: str | os.PathLike | None = None, key_salt: str = ""
) -> dict[str, Any]:
    """{"sha256": digest, "files": n, "bytes": total} of the files under `paths`; "absent" if a path is missing.

    `sidecar` (a JSON file) caches each file's hash by (size, mtime_ns) under `sidecar_key(path, key_salt)`; it is
    rewritten only when it changed.
    """
    paths = [Path(p) for p in paths]
    if not all(p.exists() for p in paths):
        return {"sha256": ABSENT, "files": 0, "bytes": 0}
    cache = _load_sidecar(Path(sidecar)) if sidecar else {}
    fresh: dict[str, list] = {}  # by path, for the digest
    stored: dict[str, list] = {}  # the same entries by key, for the sidecar
    for path in paths:
        for name, st in _files(path):
            key = sidecar_key(name, key_salt)
            known = cache.get(key)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                fresh[name] = stored[key] = known
            else:
                fresh[name] = stored[key] = [st.st_size, st.st_mtime_ns, sha256_file(name)]
    digest = hashlib.sha256()
    for path in paths:
        base = str(path)
        for name in sorted(n for n in fresh if n == base or n.startswith(base + os.sep)):
            size, _, sha = fresh[name]
            rel = os.path.relpath(name, base) if name != base else path.name
            digest.update(os.fsencode(rel) + f"\t{size}\t{sha}\n".encode())  # a name's own bytes, UTF-8 or not
    if sidecar and stored != cache:
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps(stored))
    return {"sha256": digest.hexdigest(), "files": len(fresh), "bytes": sum(v[0] for v in fresh.values())}


def dataset_fingerprint(name: str, dataset: Mapping[str, Any], cache_dir: str | os.PathLike = SIDECAR_DIR) -> str:
    """The fingerprint digest of one configured data set, its per-file hashes cached under `cache_dir` (keyed by
    path hashes salted with the data set's privacy salt)."""
    return fingerprint(raw_paths(dataset), Path(cache_dir) / f"{name}.json", salt_of(dataset))["sha256"]


def generated_fingerprint(
    name: str,
    dataset: Mapping[str, Any],
    stamp: str | os.PathLike,
    settings: Mapping[str, Any],
    cache_dir: str | os.PathLike = SIDECAR_DIR,
) -> str:
    """The fingerprint of a data set the workflow generates itself (its generator writes `stamp`).

    Before generation there is no content to hash, and Snakemake may record the value it computed then: a cluster
    run records the params it evaluated when the DAG was built, before the data existed. So while the data are
    absent or exactly as generated (the stamp's digest), the value is the generator's settings, known from the
    start; only data edited after generation count by content.
    """
    digest = dataset_fingerprint(name, dataset, cache_dir)
    try:
        generated = json.loads(Path(stamp).read_text()).get("sha256")
    except (OSError, ValueError):
        generated = None
    if digest in (ABSENT, generated):
        text = json.dumps(dict(settings), sort_keys=True)
        return "generated " + hashlib.sha256(text.encode()).hexdigest()
    return digest


def write_fingerprint(root: str | os.PathLike, path: str | os.PathLike, **info: Any) -> dict[str, Any]:
    """Record a generated tree's fingerprint (plus `info`, e.g. the generator's settings) as JSON at `path`."""
    record = info | fingerprint([root])
    write_json(path, record)
    return record
