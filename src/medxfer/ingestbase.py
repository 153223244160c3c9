"""What the ingest modules share: the error that stops ingest, the record a format reader fills, and the split and
label names every stage agrees on. Kept apart so readers, splits and ingest import it without importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

NO_LABEL = "none"
SPLITS = ("train", "val", "test")


class IngestError(RuntimeError):
    """The data set as a whole cannot be used (too many rejections, leakage, no images)."""


@dataclass
class Found:
    """What a reader found: candidate rows (path, label_name, patient_id, study_id, split[, source_id]), files it
    rejected with a reason, hidden and system files it skipped (logged, not counted), and the class order the
    source itself defines (e.g. an npz `label_names`), if any."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    classes: list[str] | None = None

    def reject(self, path: str | Path, reason: str) -> None:
        """Record a file that will not be used, so quarantine.csv says why instead of a later stage crashing."""
        self.rejected.append({"path": printable(path), "reason": reason})


def printable(path: str | Path) -> str:
    """The path as text; bytes of a name that is not valid UTF-8 are shown as \\xNN escapes instead of crashing
    the CSV and log writers."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
