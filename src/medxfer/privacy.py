"""Pseudonyms for whatever could identify a patient in results/: patient and study ids, and file paths (a PACS
export names folders after patients, `DOE^JOHN/...`). All are salted hashes, so the same raw value and salt give
the same pseudonym on every run and nothing in results/ can be read back without the salt.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medxfer.io import atomic_path

SALT_ENV = "MEDXFER_SALT"
DEFAULT_SALT = "medxfer-default-salt"
PATH_ID_PREFIX = "file-"


def salt_of(dataset: Mapping[str, Any]) -> str:
    """The pseudonymisation salt: config `privacy.salt` (top level or per data set), else $MEDXFER_SALT."""
    salt = (dataset.get("privacy") or {}).get("salt")
    return salt if salt else os.environ.get(SALT_ENV, DEFAULT_SALT)


def pseudonymize(raw_id: str, salt: str | None = None) -> str:
    """Salted hash of a patient or study id, so no real identifier reaches results/."""
    salt = salt if salt is not None else os.environ.get(SALT_ENV, DEFAULT_SALT)
    return hashlib.sha256(f"{salt}:{raw_id}".encode("utf-8", "surrogateescape")).hexdigest()[:16]  # any name's bytes


def private_paths(dataset: Mapping[str, Any]) -> bool:
    """Whether results/ name this data set's files by pseudonym: `pseudonymous_paths`, where `auto` means yes for
    DICOM (whose exports name folders after patients) and no for the other formats. `dataset`: an entry with the
    schema's defaults filled in (medxfer.sections.dataset_entry)."""
    setting = dataset["pseudonymous_paths"]
    return dataset["format"] == "dicom" if setting == "auto" else bool(setting)


def path_id(path: str | Path, salt: str) -> str:
    """The pseudonym of a file path relative to the data set root (`file-<16 hex>`); domain-separated from the
    patient hashes, so a path never shares a pseudonym with an id."""
    return PATH_ID_PREFIX + pseudonymize(f"path:{Path(path).as_posix()}", salt)


def write_path_lookup(path: str | Path, pairs: Iterable[tuple[str, str]]) -> None:
    """The private way back from pseudonyms to real paths (path, source_path), for the user only: config
    `path_lookup` names where it goes, and the config check keeps it outside results/."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source_path"])
        writer.writerows(sorted(set(pairs)))
