"""Chest-radiograph-like demo data: the in-domain pretraining set (normal, nodule, fracture, effusion)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medxfer.demo.common import (
    TAG_XRAY,
    Array,
    Pose,
    balanced_labels,
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
    write_csv,
)

XRAY_CLASSES: tuple[str, ...] = ("normal", "nodule", "fracture", "effusion")

_XRAY_PROBS = (0.36, 0.24, 0.18, 0.22)  # realistic mild imbalance


@dataclass(frozen=True)
class _Chest:
    """A patient's chest anatomy in anatomy coordinates; the same for all of the patient's images."""

    body_rx: float
    body_ry: float
    body_cy: float
    tissue: float
    lung_cx: float
    lung_cy: float
    lung_rx: float
    lung_ry: float
    lung_dark: float
    heart_rx: float
    heart_ry: float
    rib_y0: float
    rib_dy: float
    rib_rx: float
    rib_ry: float
    rib_w: float
    bone: float
    n_ribs: int
    vessels: tuple[tuple[float, float, float, float], ...]  # side, angle, length, strength
    pose: Pose


def _chest_anatomy(rng: np.random.Generator) -> _Chest:
    vessels = tuple(
        (side, rng.uniform(-1.1, 1.6), rng.uniform(0.25, 0.5), rng.uniform(0.02, 0.05))
        for side in (-1.0, 1.0)
        for _ in range(int(rng.integers(4, 8)))
    )
    return _Chest(
        body_rx=rng.uniform(0.8, 0.95),
        body_ry=rng.uniform(1.0, 1.15),
        body_cy=rng.uniform(0.05, 0.2),
        tissue=rng.uniform(0.48, 0.62),
        lung_cx=rng.uniform(0.34, 0.42),
        lung_cy=rng.uniform(-0.12, 0.0),
        lung_rx=rng.uniform(0.24, 0.3),
        lung_ry=rng.uniform(0.5, 0.62),
        lung_dark=rng.uniform(0.24, 0.34),
        heart_rx=rng.uniform(0.2, 0.28),
        heart_ry=rng.uniform(0.17, 0.23),
        rib_y0=rng.uniform(-0.95, -0.85),
        rib_dy=rng.uniform(0.15, 0.19),
        rib_rx=rng.uniform(0.55, 0.68),
        rib_ry=rng.uniform(0.26, 0.34),
        rib_w=rng.uniform(0.035, 0.05),
        bone=rng.uniform(0.09, 0.15),
        n_ribs=int(rng.integers(6, 8)),
        vessels=vessels,
        pose=Pose(rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.08), rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)),
    )


def _rib_centre(a: _Chest, side: float, i: int) -> tuple[float, float]:
    return side * 0.04, a.rib_y0 + i * a.rib_dy + a.rib_ry


def _rib(x: Array, y: Array, *, a: _Chest, side: float, i: int) -> Array:
    """A posterior rib as the upper arc of an ellipse running laterally from the spine."""
    cx, cy = _rib_centre(a, side, i)
    u, v = (x - cx) / a.rib_rx, (y - cy) / a.rib_ry
    d = np.sqrt(u * u + v * v) + 1e-9
    grad = np.sqrt((u / a.rib_rx) ** 2 + (v / a.rib_ry) ** 2) / d + 1e-9
    dist = np.abs(d - 1.0) / grad
    keep = soft_inside(cy - y, 0.04) * soft_inside(side * x - 0.1, 0.04)
    return tube(dist, a.rib_w, 0.55 * a.rib_w) * keep


def _rib_point(a: _Chest, side: float, i: int, phi: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Point at angle phi on rib i and the unit tangent there."""
    cx, cy = _rib_centre(a, side, i)
    p = (cx + side * a.rib_rx * math.cos(phi), cy - a.rib_ry * math.sin(phi))
    tx, ty = -side * a.rib_rx * math.sin(phi), -a.rib_ry * math.cos(phi)
    n = math.hypot(tx, ty)
    return p, (tx / n, ty / n)


def _clavicle_ends(side: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return (side * 0.1, -0.66), (side * 0.64, -0.78)


def _clavicle(x: Array, y: Array, p0: tuple[float, float], p1: tuple[float, float]) -> Array:
    return 1.1 * tube(segment(x, y, p0, p1)[0], 0.045, 0.025)


def _lungs(x: Array, y: Array, a: _Chest, px: float, side: float | None = None) -> Array:
    sides = (-1.0, 1.0) if side is None else (side,)
    out = sum(ellipse(x, y, s * a.lung_cx, a.lung_cy, a.lung_rx, a.lung_ry, 2 * px) for s in sides)
    return out * (1.0 - 0.85 * ellipse(x, y, 0.12, a.lung_cy + 0.55 * a.lung_ry, a.heart_rx, a.heart_ry, 3 * px))


def _chest_base(x: Array, y: Array, a: _Chest, px: float) -> Array:
    img = 0.06 + a.tissue * ellipse(x, y, 0.0, a.body_cy, a.body_rx, a.body_ry, 2 * px)
    lungs = _lungs(x, y, a, px)
    img -= a.lung_dark * lungs
    for side, angle, length, strength in a.vessels:  # vascular markings fanning out from the hila
        hilum = (side * 0.16, a.lung_cy + 0.05)
        end = (hilum[0] + side * length * math.cos(angle * 0.5), hilum[1] + length * math.sin(angle * 0.5))
        d, t = segment(x, y, hilum, end)
        img += strength * np.exp(-0.5 * (d / (0.012 + 0.01 * (1 - t))) ** 2) * (1 - 0.6 * t) * lungs
    spine = soft_inside(0.075 - np.abs(x), px) * (1.0 + 0.25 * np.cos(y * 2 * math.pi / a.rib_dy))
    img += 0.07 * spine
    for side in (-1.0, 1.0):
        for i in range(a.n_ribs):
            img += a.bone * _rib(x, y, a=a, side=side, i=i)
        img += a.bone * _clavicle(x, y, *_clavicle_ends(side))
    return img


def _chest_finding(
    x: Array, y: Array, a: _Chest, px: float, label: str, rng: np.random.Generator
) -> tuple[Array, Array]:
    """The focal change a finding makes (its support is the mask) and a diffuse accompanying change (hematoma)."""
    zero = np.zeros_like(x)
    if label == "normal":
        return zero, zero
    if label == "nodule":
        side = float(rng.choice([-1.0, 1.0]))
        r, ang = 0.75 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        cx, cy = side * a.lung_cx + r * a.lung_rx * math.cos(ang), a.lung_cy + r * a.lung_ry * math.sin(ang)
        radius = math.exp(rng.uniform(math.log(0.05), math.log(0.14)))
        amp = math.exp(rng.uniform(math.log(0.2), math.log(0.45)))
        return amp * ball(np.hypot(x - cx, y - cy), radius), zero
    if label == "fracture":
        effect = np.zeros_like(x)
        side = float(rng.choice([-1.0, 1.0]))
        n_breaks = 1 + int(rng.random() < 0.4) + int(rng.random() < 0.15)
        if rng.random() < 0.25:  # clavicle
            p0, p1 = _clavicle_ends(side)
            t = rng.uniform(0.3, 0.8)
            p = (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
            n = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
            tangent = ((p1[0] - p0[0]) / n, (p1[1] - p0[1]) / n)
            breaks = [(p, tangent, functools.partial(_clavicle, p0=p0, p1=p1))]
        else:
            i0 = int(rng.integers(1, a.n_ribs - n_breaks + 1))
            phi = rng.uniform(0.3, 1.1)
            breaks = [
                (*_rib_point(a, side, i, phi), functools.partial(_rib, a=a, side=side, i=i))
                for i in range(i0, i0 + n_breaks)
            ]
        for p, (tx, ty), bone_fn in breaks:
            delta = rng.uniform(-0.5, 0.5)
            c, s = math.cos(delta), math.sin(delta)
            lx, ly = c * tx - s * ty, s * tx + c * ty  # gap measured along the (tilted) bone direction
            along = (x - p[0]) * lx + (y - p[1]) * ly
            near = np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2) / (2 * (3 * a.rib_w) ** 2))
            step = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.3, 0.9) * a.rib_w * soft_inside(along, px) * near
            bone, moved = bone_fn(x, y), bone_fn(x + step * ty, y - step * tx)  # fragment shifted across the bone
            gap = np.exp(-0.5 * (along / (rng.uniform(0.5, 0.8) * px)) ** 2) * near
            effect += a.bone * ((moved - bone) - rng.uniform(0.6, 1.0) * gap * np.maximum(bone, moved))
        (hx, hy), sigma = breaks[0][0], rng.uniform(0.1, 0.18)  # extrapleural hematoma, of varying size
        hematoma = rng.uniform(0.06, 0.2) * np.exp(-0.5 * ((x - hx - side * 0.05) ** 2 + (y - hy) ** 2) / sigma**2)
        return effect, hematoma
    if label == "effusion":
        side = float(rng.choice([-1.0, 1.0]))
        lung = _lungs(x, y, a, px, side)
        u = np.clip((side * x - a.lung_cx) / a.lung_rx, -1.0, 1.0)  # -1 medial, +1 lateral
        level = a.lung_cy + a.lung_ry * (rng.uniform(0.15, 0.75) - rng.uniform(0.1, 0.3) * (u + 1.0))
        amp = rng.uniform(0.45, 1.0) * a.lung_dark
        return amp * lung * soft_inside(y - level, rng.uniform(0.04, 0.1)), zero
    raise ValueError(f"unknown chest finding '{label}'")


def _chest_image(size: int, a: _Chest, label: str, rng: np.random.Generator) -> tuple[Array, Array]:
    p = a.pose
    pose = Pose(
        p.angle + rng.uniform(-0.05, 0.05),
        p.scale * rng.uniform(0.96, 1.04),
        p.tx + rng.uniform(-0.03, 0.03),
        p.ty + rng.uniform(-0.03, 0.03),
    )
    x, y, px = pose.coords(size)
    effect, diffuse = _chest_finding(x, y, a, px, label, rng)
    img = finish_radiograph(_chest_base(x, y, a, px) + effect + diffuse, rng, size, (0.015, 0.04))
    if rng.random() < 0.7:
        burn_marker(img, rng, "LRPA", rng.uniform(0.85, 1.0))
    mask = np.zeros((size, size), np.uint8) if label == "normal" else mask_from_effect(effect)
    return to_uint8(img), mask


def synthesize_xray_source(out_dir: Path, n_images: int, size: int, seed: int) -> None:
    """In-domain pretraining set: chest-radiograph-like PNGs, 1-3 per patient, normal/nodule/fracture/effusion.

    Writes images/patient{pid:05d}_img{k}.png, masks/images/... (0/255, empty for normal) and labels.csv
    (path,label,patient_id).
    """
    check_args(size, n_images, "n_images")
    plan = seeded_rng(seed, TAG_XRAY)
    per_patient: list[int] = []
    while sum(per_patient) < n_images:
        per_patient.append(min(int(plan.integers(1, 4)), n_images - sum(per_patient)))
    labels = balanced_labels(plan, n_images, _XRAY_PROBS)
    rows: list[tuple[str, str, str]] = []
    with staged_dir(Path(out_dir)) as tmp:
        idx = 0
        for pid, count in enumerate(per_patient, start=1):
            anatomy = _chest_anatomy(seeded_rng(seed, TAG_XRAY, pid))
            for k in range(1, count + 1):
                label = XRAY_CLASSES[int(labels[idx])]
                idx += 1
                img, mask = _chest_image(size, anatomy, label, seeded_rng(seed, TAG_XRAY, pid, k))
                rel = f"images/patient{pid:05d}_img{k}.png"
                save_png(tmp / rel, img)
                save_png(tmp / "masks" / rel, mask)
                rows.append((rel, label, f"SRC{pid:05d}"))
        write_csv(tmp / "labels.csv", ("path", "label", "patient_id"), rows)
