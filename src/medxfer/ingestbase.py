"""What the ingest modules share: the error that stops ingest, the record a format reader fills, and the split and
label names every stage agrees on. Kept apart so readers, splits and ingest import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NO_LABEL = "none"
SPLITS = ("train", "val", "test")


class IngestError(RuntimeError):
    """The data set as a whole cannot be used (too many rejections, leakage, no images)."""


@dataclass
class Found:
    """What a reader found: candidate rows (path, label_name, patient_id, study_id, split[, source_id]), files it
    rejected with a reason, and the class order the source itself defines (e.g. an npz `label_names`), if any."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    classes: list[str] | None = None

    def reject(self, path: str | Path, reason: str) -> None:
        """Record a file that will not be used, so quarantine.csv says why instead of a later stage crashing."""
        self.rejected.append({"path": str(path), "reason": reason})
