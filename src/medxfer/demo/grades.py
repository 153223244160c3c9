"""Ordinal demo data: humerus and wrist radiographs whose studies carry a fracture severity grade.

Why: there is no graded data to hand, and an ordinal model only has something to gain when the grade is a monotone,
visible property of the image, with neighbouring grades alike and far ones not. Each grade past `intact` draws the
fracture's displacement, gap width, gap depth and soft-tissue swelling from its own range, the ranges disjoint and
increasing with the grade; pose, anatomy, site and detector noise blur the borders between neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medxfer.demo.common import (
    TAG_GRADES,
    Array,
    Pose,
    balanced_labels,
    check_args,
    save_png,
    seeded_rng,
    staged_dir,
    write_csv,
)
from medxfer.demo.limb import _Abnormality, _balanced_parts, _Limb, _limb_abnormality, _limb_anatomy, _limb_image
from medxfer.ingestbase import SPLITS  # the split names a manifest may give

FRACTURE_GRADES: tuple[str, ...] = ("intact", "nondisplaced", "displaced", "severe")
MIN_PATIENTS = 8  # two patients (four or more studies) each for val and test, so both hold every grade

_EVAL_FRACTION = 0.2  # of the patients, for val and for test each
# Per fractured grade: |shift| (bone radii), gap width (pixels), gap depth (fraction of the bone) and swelling
# (fraction of the soft tissue). Disjoint, increasing ranges: the grade is monotone in every one of them.
_GRADE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "nondisplaced": {"shift": (0.0, 0.08), "width": (1.8, 2.5), "strength": (0.6, 0.75), "swelling": (0.0, 0.15)},
    "displaced": {"shift": (0.3, 0.55), "width": (2.7, 3.4), "strength": (0.78, 0.88), "swelling": (0.25, 0.45)},
    "severe": {"shift": (0.8, 1.2), "width": (3.6, 4.6), "strength": (0.9, 1.0), "swelling": (0.6, 0.9)},
}


@dataclass(frozen=True)
class _Plan:
    """Who is in which split, with which body part, how many studies and each study's grade (index)."""

    splits: list[str]
    parts: list[str]
    n_studies: list[int]
    grades: dict[tuple[int, int], int]  # (patient index, study index) -> grade


def _plan(n_patients: int, seed: int) -> _Plan:
    """Patient-level ~60/20/20 split, body parts alternating and grades balanced within each split."""
    plan = seeded_rng(seed, TAG_GRADES)
    n_eval = max(2, int(round(_EVAL_FRACTION * n_patients)))
    order = plan.permutation(n_patients)
    splits = ["train"] * n_patients
    for rank, i in enumerate(order[: 2 * n_eval]):
        splits[int(i)] = "test" if rank < n_eval else "val"
    parts = _balanced_parts(plan, splits, SPLITS)
    n_studies = [int(plan.integers(2, 4)) for _ in range(n_patients)]  # 2-3: every split holds >= 4 studies
    grades: dict[tuple[int, int], int] = {}
    for split in SPLITS:
        keys = [(p, s) for p in range(n_patients) if splits[p] == split for s in range(n_studies[p])]
        labels = balanced_labels(plan, len(keys), [1.0] * len(FRACTURE_GRADES))
        grades.update({key: int(g) for key, g in zip(keys, labels, strict=True)})
    return _Plan(splits, parts, n_studies, grades)


def _graded_fracture(a: _Limb, grade: int, rng: np.random.Generator) -> _Abnormality | None:
    """A fracture at a site drawn as in the MURA demo, with the grade's displacement, gap and swelling."""
    site = _limb_abnormality(a, rng)  # drawn for every grade, so the draws after it never depend on the grade
    ranges = _GRADE_RANGES.get(FRACTURE_GRADES[grade])
    if ranges is None:
        return None
    values = {key: float(rng.uniform(lo, hi)) for key, (lo, hi) in ranges.items()}
    values["shift"] *= float(rng.choice([-1.0, 1.0]))
    return replace(site, kind="fracture", **values)


def _patient_anatomy(seed: int, pid: int, part: str) -> _Limb:
    return _limb_anatomy(seeded_rng(seed, TAG_GRADES, pid), part)


def _study(seed: int, pid: int, s: int, anatomy: _Limb, grade: int) -> tuple[Pose, _Abnormality | None, int]:
    """A study's pose, its fracture (None for grade intact) and its number of views; every view shares them."""
    rng = seeded_rng(seed, TAG_GRADES, pid, s)
    pose = Pose(rng.uniform(-0.5, 0.5), rng.uniform(0.85, 1.12), rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1))
    n_views = int(rng.integers(2, 4))
    return pose, _graded_fracture(anatomy, grade, rng), n_views


def _view(
    seed: int, pid: int, s: int, k: int, size: int, anatomy: _Limb, pose: Pose, fracture: _Abnormality | None
) -> tuple[Array, Array]:
    """View k of a study: image and finding mask. Its own RNG, so the same view without the fracture differs only
    by the fracture."""
    return _limb_image(size, anatomy, pose, fracture, seeded_rng(seed, TAG_GRADES, pid, s, k))


def synthesize_fracture_grades(out_dir: Path, n_patients: int, size: int, seed: int) -> None:
    """Graded target set: humerus/wrist radiographs, every view of a study showing the study's fracture grade.

    Writes images/patient{pid:05d}/study{s}/image{k}.png, the masks under masks/ with the same relative paths
    (empty for grade intact) and labels.csv (path,label,patient_id,study_id,split) with the grade names of
    FRACTURE_GRADES as labels and patient-level train/val/test splits.
    """
    check_args(size, n_patients, "n_patients")
    if int(n_patients) < MIN_PATIENTS:
        raise ValueError(f"n_patients must be >= {MIN_PATIENTS} so val and test hold every grade, got {n_patients}")
    plan = _plan(n_patients, seed)
    rows: list[tuple[str, str, str, str, str]] = []
    with staged_dir(Path(out_dir)) as tmp:
        for p in range(n_patients):
            pid = p + 1
            anatomy = _patient_anatomy(seed, pid, plan.parts[p])
            for s in range(1, plan.n_studies[p] + 1):
                grade = plan.grades[(p, s - 1)]
                pose, fracture, n_views = _study(seed, pid, s, anatomy, grade)
                for k in range(1, n_views + 1):
                    img, mask = _view(seed, pid, s, k, size, anatomy, pose, fracture)
                    rel = f"images/patient{pid:05d}/study{s}/image{k}.png"
                    save_png(tmp / rel, img)
                    save_png(tmp / "masks" / rel, mask)
                    patient = f"GRD{pid:05d}"
                    rows.append((rel, FRACTURE_GRADES[grade], patient, f"{patient}_study{s}", plan.splits[p]))
        write_csv(tmp / "labels.csv", ("path", "label", "patient_id", "study_id", "split"), rows)
