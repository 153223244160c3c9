"""Atomic file writes and hashing: a stage never leaves a half-written artifact behind."""

from __future__ import annotations

import codecs
import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# Temp files of atomic_path modified before this are not this process's: with a dead owner, a killed run left them.
STARTED = time.time()
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _temp_name(path: Path, pid: int) -> str:
    """`.<name>.<pid>.<random>.tmp<suffixes>`: hidden, beside its target, and naming the process that writes it."""
    return f".{path.name}.{pid}.{secrets.token_hex(4)}.tmp{''.join(path.suffixes)}"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """This target's temp names, also those of older versions (`.<name>.<8 random>.tmp<suffixes>`, no pid)."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?:(?P<pid>\d+)\.)?\w{{8}}\.tmp{re.escape(''.join(path.suffixes))}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temp files of `path` that a killed run left (a 1 GB cache, say): last written before this process
    started, by a process that no longer runs. Returns what was removed."""
    path = Path(path)
    pattern, removed = _temp_pattern(path), []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        match = pattern.fullmatch(tmp.name)
        if not match or (match["pid"] and _process_alive(int(match["pid"]))):
            continue
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < STARTED:
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    The temp file is created with the user's umask (not mkstemp's 0600); those a killed run left are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    while True:
        tmp_path = path.parent / _temp_name(path, os.getpid())
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def read_text(path: str | os.PathLike) -> str:
    """A text file as UTF-8 (a BOM is dropped; a UTF-16 file with a BOM is read too); anything else is a
    ValueError naming the file, the first bad byte and its line, since guessing an encoding garbles labels."""
    data = Path(path).read_bytes()
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: starts like UTF-16 but does not decode as UTF-16; save it as UTF-8") from None
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ValueError(f"{path}: NUL bytes from line {line} (UTF-16 without a byte-order mark?); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at line {line}); save it as UTF-8") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
