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
    rejected with a reason, hidden and system files it skipped (logged, not counted), the class order the source
    itself defines (e.g. an npz `label_names`), if any, and notes on files that are kept but worth a log line (e.g.
    withheld pydicom warnings)."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    notes: list[dict] = field(default_factory=list)

    def reject(self, path: str | Path, reason: str) -> None:
        """Record a file that will not be used, so quarantine.csv says why instead of a later stage crashing."""
        self.rejected.append({"path": printable(path), "reason": reason})

    def note(self, path: str | Path, text: str) -> None:
        """Something ingest logs about a file it keeps; like a reason, the text must not quote header values."""
        self.notes.append({"path": printable(path), "note": text})


def printable(path: str | Path) -> str:
    """The path as text; bytes of a name that is not valid UTF-8 are shown as \\xNN escapes instead of crashing
    the CSV and log writers."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
