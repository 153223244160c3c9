"""Musculoskeletal (MURA-like) demo data: humerus and wrist radiographs in the MURA folder layout."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medxfer.demo.common import (
    TAG_MURA,
    Array,
    Pose,
    ball,
    burn_marker,
    check_args,
    ellipse,
    finish_radiograph,
    mask_from_effect,
    save_png,
    seeded_rng,
    segment,
    soft_inside,
    staged_dir,
    to_uint8,
    tube,
)

MURA_PARTS: tuple[str, ...] = ("HUMERUS", "WRIST")

_MURA_POSITIVE = 0.42
_MURA_VALID = 0.25


@dataclass(frozen=True)
class _Limb:
    """A patient's humerus or wrist in anatomy coordinates (bone axis along y)."""

    part: str
    background: float
    tissue: float
    tissue_r: float
    bone: float
    r_shaft: float
    r_inner: float
    r_second: float
    head_r: float
    offsets: tuple[float, ...]  # small per-patient jitter of bone positions (carpals, metacarpals)
    flip: bool


def _limb_anatomy(rng: np.random.Generator, part: str) -> _Limb:
    humerus = part == "HUMERUS"
    return _Limb(
        part=part,
        background=rng.uniform(0.02, 0.08),
        tissue=rng.uniform(0.2, 0.32),
        tissue_r=rng.uniform(0.42, 0.55) if humerus else rng.uniform(0.36, 0.46),
        bone=rng.uniform(0.42, 0.58),
        r_shaft=rng.uniform(0.11, 0.15) if humerus else rng.uniform(0.085, 0.11),
        r_inner=rng.uniform(0.55, 0.7),
        r_second=rng.uniform(0.055, 0.075),
        head_r=rng.uniform(0.2, 0.26),
        offsets=tuple(rng.uniform(-0.025, 0.025, 24)),
        flip=bool(rng.random() < 0.5),
    )


def _limb_bones(x: Array, y: Array, a: _Limb, px: float) -> tuple[Array, dict[str, Array]]:
    """Soft tissue and the projected bones; bones are returned by name so a finding can alter one of them."""
    o = a.offsets
    bones: dict[str, Array] = {}
    if a.part == "HUMERUS":
        d, _ = segment(x, y, (0.0, -0.5), (0.02, 1.8))
        tissue = tube(np.abs(x - 0.01), a.tissue_r, 0.0) + 0.8 * ellipse(x, y, 0.1, -0.85, 0.6, 0.45, 4 * px)
        bones["shaft"] = tube(d, a.r_shaft, a.r_inner * a.r_shaft)
        hd = np.hypot(x - 0.04, y + 0.7)
        bones["head"] = 0.75 * (ball(hd, a.head_r) - 0.35 * ball(hd, 0.8 * a.head_r))
        bones["tuberosity"] = 0.5 * ball(np.hypot(x - 0.2 - o[0], y + 0.62), 0.1)
        gd, _ = segment(x, y, (-0.05, -1.05), (0.45, -1.15))  # glenoid / acromion, partly in frame
        bones["scapula"] = 0.6 * tube(gd, 0.09, 0.04)
    else:
        d_r, t_r = segment(x, y, (-0.12, 1.8), (-0.13, 0.05))
        r_rad = a.r_shaft * (1.0 + 0.7 * np.clip((t_r - 0.75) / 0.25, 0.0, 1.0) ** 2)
        bones["radius"] = tube(d_r, r_rad, a.r_inner * r_rad)
        d_u, _ = segment(x, y, (0.16, 1.8), (0.15 + o[1], 0.12))
        bones["ulna"] = tube(d_u, a.r_second, a.r_inner * a.r_second)
        carpals = [
            (-0.2, -0.12),
            (-0.06, -0.1),
            (0.08, -0.08),
            (0.2, -0.06),
            (-0.22, -0.3),
            (-0.08, -0.32),
            (0.06, -0.32),
            (0.19, -0.28),
        ]
        bones["carpals"] = sum(
            0.7 * ball(np.hypot(x - cx - o[2 + i], y - cy - o[10 + i]), 0.075 + 0.3 * abs(o[18 + i % 6]))
            for i, (cx, cy) in enumerate(carpals)
        )
        bones["metacarpals"] = sum(
            tube(segment(x, y, (mx, -0.42), (1.5 * mx + o[i], -1.7))[0], 0.05, 0.028)
            for i, mx in enumerate((-0.24, -0.1, 0.03, 0.15, 0.27))
        )
        tissue = tube(np.abs(x - 0.02), a.tissue_r, 0.0) * soft_inside(y + 0.35, 4 * px)
        tissue = np.maximum(tissue, 0.9 * ellipse(x, y, 0.0, -0.85, 0.55, 0.6, 4 * px))
    return a.tissue * np.clip(tissue, 0.0, 1.0), bones


@dataclass(frozen=True)
class _Abnormality:
    """A study's abnormality in anatomy coordinates, so it appears in every view of the study."""

    kind: str  # fracture | lytic | sclerotic | periosteal
    bone: str
    point: tuple[float, float]
    direction: float  # tilt of the fracture line / lesion axis (rad)
    size: float  # lesion half-axis, anatomy units
    strength: float  # 0..1, fraction of the bone's brightness removed or added
    shift: float  # fracture displacement across the bone, in bone radii (signed)
    width: float  # fracture gap width in pixels
    swelling: float  # soft-tissue swelling around the abnormality, fraction of the tissue brightness


def _bone_axis(a: _Limb, bone: str, y: float) -> tuple[float, float]:
    """x of the bone's axis and its radius at height y (anatomy units), to place findings on the cortex."""
    if bone == "radius":
        t = (1.8 - y) / 1.75
        return -0.12 - 0.01 * t, a.r_shaft * (1.0 + 0.7 * min(max((t - 0.75) / 0.25, 0.0), 1.0) ** 2)
    if bone == "ulna":
        return 0.16 + (a.offsets[1] - 0.01) * (1.8 - y) / 1.68, a.r_second
    if bone == "head":
        return 0.04, 0.5 * a.head_r
    if bone == "carpals":
        return -0.2 + a.offsets[2], 0.08
    return 0.0, a.r_shaft


def _limb_abnormality(a: _Limb, rng: np.random.Generator) -> _Abnormality:
    kind = str(rng.choice(["fracture", "fracture", "fracture", "lytic", "sclerotic", "periosteal"]))
    if a.part == "HUMERUS":
        if rng.random() < 0.25:
            bone, py = "head", -0.7 + rng.uniform(0.0, 0.12)
            kind = "fracture" if kind == "periosteal" else kind
        else:
            bone, py = "shaft", rng.uniform(-0.35, 0.5)
    else:
        choice = rng.random()
        if choice < 0.6:
            bone, py = "radius", rng.uniform(0.1, 0.45)
        elif choice < 0.8:
            bone, py = "ulna", rng.uniform(0.15, 0.45)
        else:
            bone, py = "carpals", -0.12 + a.offsets[10]  # scaphoid
            kind = "fracture" if kind == "periosteal" else kind
    ax, _ = _bone_axis(a, bone, py)
    return _Abnormality(
        kind=kind,
        bone=bone,
        point=(ax + (rng.uniform(-0.03, 0.03) if bone == "head" else 0.0), py),
        direction=rng.uniform(-0.6, 0.6),
        size=rng.uniform(0.16, 0.26),
        strength=math.exp(rng.uniform(math.log(0.45), math.log(1.0))),
        shift=float(rng.choice([-1.0, 1.0])) * rng.uniform(0.25, 1.0),
        width=rng.uniform(2.4, 4.0),
        swelling=rng.uniform(0.3, 0.9),
    )


def _limb_effect(
    x: Array, y: Array, a: _Limb, tissue: Array, bones: dict[str, Array], ab: _Abnormality, px: float
) -> tuple[Array, Array]:
    """The abnormality's focal change (its mask) and the diffuse soft-tissue swelling around it, in this view.

    Both are defined in anatomy coordinates, so they move with the bone from view to view. The swelling is a broad,
    low-contrast cue of varying strength: strong swelling makes a positive easy, none leaves only the focal sign.
    """
    bone = bones[ab.bone]
    dx, dy = x - ab.point[0], y - ab.point[1]
    ax, radius = _bone_axis(a, ab.bone, ab.point[1])
    within = np.clip(1.5 * tissue / a.tissue, 0.0, 1.0)
    swelling = ab.swelling * a.tissue * np.exp(-0.5 * (dx * dx + dy * dy) / (5.0 * radius) ** 2) * within
    if ab.kind == "fracture":
        c, s = math.cos(ab.direction), math.sin(ab.direction)
        across = -s * dx + c * dy  # signed distance from a line running (roughly) across the bone
        near = np.exp(-0.5 * (dx * dx + dy * dy) / (3.0 * radius) ** 2)
        moved = soft_inside(across, px) * near  # the distal fragment, displaced sideways near the break
        _, shifted = _limb_bones(x - ab.shift * radius * moved, y, a, px)
        gap = np.exp(-0.5 * (across / (0.5 * ab.width * px)) ** 2) * near
        return a.bone * ((shifted[ab.bone] - bone) - ab.strength * gap * np.maximum(bone, shifted[ab.bone])), swelling
    if ab.kind in ("lytic", "sclerotic"):
        c, s = math.cos(ab.direction), math.sin(ab.direction)
        u, v = (c * dx + s * dy) / (0.8 * ab.size), (-s * dx + c * dy) / (1.3 * ab.size)
        blob = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))
        sign = -1.0 if ab.kind == "lytic" else 1.0
        inside = np.clip(bone / max(float(bone.max()), 1e-6) + 0.3, 0.0, 1.0)
        return sign * a.bone * ab.strength * 0.8 * blob * inside, 0.5 * swelling
    if ab.kind == "periosteal":  # bright new bone along one cortex
        edge_x = ax + (radius if ab.shift > 0 else -radius)
        u = (x - edge_x) / (0.4 * ab.size)
        v = (y - ab.point[1]) / (2.5 * ab.size)
        return a.bone * ab.strength * 0.8 * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None)), 0.7 * swelling
    raise ValueError(f"unknown abnormality '{ab.kind}'")


def _limb_image(
    size: int, a: _Limb, study_pose: Pose, ab: _Abnormality | None, rng: np.random.Generator
) -> tuple[Array, Array]:
    """One view: the study pose plus a view-specific rotation/shift, same anatomy and same abnormality."""
    pose = Pose(
        study_pose.angle + rng.uniform(-0.25, 0.25),
        study_pose.scale * rng.uniform(0.93, 1.07),
        study_pose.tx + rng.uniform(-0.06, 0.06),
        study_pose.ty + rng.uniform(-0.06, 0.06),
        a.flip,
    )
    x, y, px = pose.coords(size)
    tissue, bones = _limb_bones(x, y, a, px)
    focal, diffuse = (np.zeros_like(x),) * 2 if ab is None else _limb_effect(x, y, a, tissue, bones, ab, px)
    img = a.background + tissue + a.bone * sum(bones.values()) + focal + diffuse
    img = finish_radiograph(img, rng, size, (0.012, 0.035))
    if rng.random() < 0.8:
        burn_marker(img, rng, "LR", rng.uniform(0.8, 1.0))
    mask = np.zeros((size, size), np.uint8) if ab is None else mask_from_effect(focal)
    return to_uint8(img), mask


def _split_and_parts(plan: np.random.Generator, n_patients: int) -> tuple[list[str], list[str]]:
    """Patient-level split (~75/25) and body part, balanced within each split so small sets still have both."""
    n_valid = 0 if n_patients < 2 else max(1, int(round(_MURA_VALID * n_patients)))
    order = plan.permutation(n_patients)
    splits = ["train"] * n_patients
    for i in order[:n_valid]:
        splits[int(i)] = "valid"
    return splits, _balanced_parts(plan, splits, ("train", "valid"))


def _balanced_parts(plan: np.random.Generator, splits: list[str], names: tuple[str, ...]) -> list[str]:
    """Each patient's body part, alternating within each split (in `names` order) so small splits hold both."""
    parts = [""] * len(splits)
    for split in names:
        members = [i for i in range(len(splits)) if splits[i] == split]
        start = int(plan.integers(2))
        choice = [MURA_PARTS[(start + j) % 2] for j in range(len(members))]
        plan.shuffle(choice)
        for i, part in zip(members, choice, strict=True):
            parts[i] = part
    return parts


def synthesize_mura(out_dir: Path, n_patients: int, size: int, seed: int) -> None:
    """Binary target set in the MURA folder layout: humerus/wrist radiographs, every view of a positive study abnormal.

    Writes {train,valid}/XR_{HUMERUS,WRIST}/patient{id:05d}/study{n}_{positive,negative}/image{k}.png and the masks
    under masks/ with the same relative paths.
    """
    check_args(size, n_patients, "n_patients")
    plan = seeded_rng(seed, TAG_MURA)
    splits, parts = _split_and_parts(plan, n_patients)
    n_studies = [int(plan.integers(1, 3)) for _ in range(n_patients)]
    positive: dict[tuple[int, int], bool] = {}
    for split in ("train", "valid"):
        keys = [(p, s) for p in range(n_patients) if splits[p] == split for s in range(n_studies[p])]
        if not keys:
            continue
        n_pos = int(round(_MURA_POSITIVE * len(keys)))
        n_pos = min(max(n_pos, 1), len(keys) - 1) if len(keys) >= 2 else n_pos
        chosen = set(plan.permutation(len(keys))[:n_pos].tolist())
        positive.update({key: j in chosen for j, key in enumerate(keys)})
    with staged_dir(Path(out_dir)) as tmp:
        for p in range(n_patients):
            pid = p + 1
            anatomy = _limb_anatomy(seeded_rng(seed, TAG_MURA, pid), parts[p])
            for s in range(n_studies[p]):
                srng = seeded_rng(seed, TAG_MURA, pid, s + 1)
                study_pose = Pose(
                    srng.uniform(-0.5, 0.5), srng.uniform(0.85, 1.12), srng.uniform(-0.1, 0.1), srng.uniform(-0.1, 0.1)
                )
                ab = _limb_abnormality(anatomy, srng) if positive[(p, s)] else None
                status = "positive" if ab is not None else "negative"
                study_dir = f"{splits[p]}/XR_{parts[p]}/patient{pid:05d}/study{s + 1}_{status}"
                for k in range(1, int(srng.integers(2, 4)) + 1):
                    img, mask = _limb_image(size, anatomy, study_pose, ab, seeded_rng(seed, TAG_MURA, pid, s + 1, k))
                    save_png(tmp / study_dir / f"image{k}.png", img)
                    save_png(tmp / "masks" / study_dir / f"image{k}.png", mask)
