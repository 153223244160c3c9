"""Deterministic demo data: radiograph-like PNGs and DICOM CT slices with learnable findings and their masks.

Why: the workflow must run end to end with nothing downloaded, through the same code paths as real data (a CSV
manifest, the MURA folder layout, DICOM with identifying fields), and the findings must be learnable but not trivial so
that transfer-learning effects stay visible. Every patient, study and image draws from its own RNG derived from
(seed, data set, patient, study, image) with SeedSequence, so output never depends on generation order, and the same
arguments give byte-identical files (no timestamps in PNG or DICOM).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

XRAY_CLASSES: tuple[str, ...] = ("normal", "nodule", "fracture", "effusion")
MURA_PARTS: tuple[str, ...] = ("HUMERUS", "WRIST")
CT_CLASSES: tuple[str, ...] = ("normal", "lesion")

_XRAY_PROBS = (0.36, 0.24, 0.18, 0.22)  # realistic mild imbalance
_MURA_POSITIVE = 0.42
_MURA_VALID = 0.25
_TAG_XRAY, _TAG_MURA, _TAG_CT = 1, 2, 3
_CT_CHEST_MM = 300.0  # z extent that slice positions in [0, 1] map to

Array = np.ndarray


# ----------------------------------------------------------------------------------------------------------- helpers


def _check_args(size: int, count: int, what: str) -> None:
    if int(size) < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if int(count) < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """One independent stream per (seed, data set, patient, ...): items never depend on generation order."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys)))


@contextlib.contextmanager
def _staged_dir(out_dir: Path) -> Iterator[Path]:
    """Build the data set in a hidden sibling and swap it in at the end, so a crash never leaves half a data set."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give it the permissions mkdir would have
        if out_dir.is_symlink() or out_dir.is_file():
            out_dir.unlink()
        elif out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save_png(path: Path, arr: Array) -> None:
    """8-bit grayscale PNG; Pillow writes no tIME chunk, so the bytes depend only on the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(path, format="PNG")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _balanced_labels(rng: np.random.Generator, n: int, probs: Sequence[float]) -> Array:
    """Class counts close to n*probs (largest remainder), at least one of each class when n allows, shuffled."""
    p = np.asarray(probs, dtype=float) / float(np.sum(probs))
    counts = np.floor(p * n).astype(int)
    for i in np.argsort(-(p * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(p):
        for i in np.flatnonzero(counts == 0):
            counts[i] += 1
            counts[int(np.argmax(counts))] -= 1
    labels = np.repeat(np.arange(len(p)), counts)
    rng.shuffle(labels)
    return labels


def _to_uint8(img: Array) -> Array:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _mask_from_effect(effect: Array, frac: float = 0.35) -> Array:
    """Where a finding visibly changes the image: pixels with at least `frac` of its peak effect, as 0/255."""
    mag = np.abs(effect)
    peak = float(mag.max())
    if peak <= 0.0:
        raise RuntimeError("finding fell outside the image; this is a bug in the generator")
    return np.where(mag >= frac * peak, 255, 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y downwards)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


@dataclass(frozen=True)
class _Pose:
    """Where the anatomy sits in the image: rotation (rad), scale, shift, mirror."""

    angle: float
    scale: float
    tx: float
    ty: float
    flip: bool = False

    def coords(self, size: int) -> tuple[Array, Array, float]:
        """Anatomy coordinates of every pixel and the size of one pixel in anatomy units."""
        xx, yy = _grid(size)
        dx, dy = xx - self.tx, yy - self.ty
        c, s = math.cos(self.angle), math.sin(self.angle)
        xa = (c * dx + s * dy) / self.scale
        ya = (-s * dx + c * dy) / self.scale
        if self.flip:
            xa = -xa
        return xa, ya, 2.0 / size / self.scale


def _inside(signed_dist: Array, px: float) -> Array:
    """Anti-aliased indicator: 1 inside, 0 outside, about one pixel of transition."""
    return 0.5 * (1.0 + np.tanh(2.0 * signed_dist / px))


def _ellipse(x: Array, y: Array, cx: float, cy: float, rx: float, ry: float, px: float, angle: float = 0.0) -> Array:
    u, v = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * u + s * v, -s * u + c * v
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return _inside((1.0 - d) * min(rx, ry), px)


def _segment(x: Array, y: Array, p0: tuple[float, float], p1: tuple[float, float]) -> tuple[Array, Array]:
    """Distance to the segment p0-p1 and the position t in [0, 1] of the nearest point on it."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * vx, y - p0[1] - t * vy), t


def _tube(d: Array, r_out: Array | float, r_in: Array | float) -> Array:
    """Projected thickness of a hollow bone (cortex + medulla): bright edges, softer centre, 0 outside."""
    outer = np.sqrt(np.clip(np.square(r_out) - d * d, 0.0, None))
    inner = np.sqrt(np.clip(np.square(r_in) - d * d, 0.0, None))
    return (outer - 0.6 * inner) / r_out


def _ball(d: Array, r: float) -> Array:
    """Projected thickness of a sphere, normalised to 1 at the centre."""
    return np.sqrt(np.clip(1.0 - (d / r) ** 2, 0.0, None))


def _blur(img: Array, sigma: float) -> Array:
    """Separable Gaussian blur (edge padding): the detector's point spread, without needing scipy."""
    if sigma < 0.1:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img, ((0, 0), (r, r)), mode="edge")
    tmp = sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))
    p = np.pad(tmp, ((r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[i : i + h, :] for i in range(2 * r + 1))


_GLYPHS = {
    "L": ("100", "100", "100", "100", "111"),
    "R": ("110", "101", "110", "101", "101"),
    "P": ("110", "101", "110", "100", "100"),
    "A": ("010", "101", "111", "101", "101"),
}


def _burn_marker(img: Array, rng: np.random.Generator, letters: str, value: float) -> None:
    """Burnt-in side/view marker in a random corner, as on real radiographs (independent of the label)."""
    size = img.shape[0]
    m = max(1, size // 64)
    letter = letters[int(rng.integers(len(letters)))]
    bitmap = np.kron(np.array([[c == "1" for c in row] for row in _GLYPHS[letter]]), np.ones((m, m), dtype=bool))
    h, w = bitmap.shape
    margin = max(1, size // 32)
    corner = int(rng.integers(4))
    r0 = margin if corner < 2 else size - margin - h
    c0 = margin if corner % 2 == 0 else size - margin - w
    img[r0 : r0 + h, c0 : c0 + w][bitmap] = value


def _finish_radiograph(img: Array, rng: np.random.Generator, size: int, noise: tuple[float, float]) -> Array:
    """Detector blur, exposure gradient, contrast/gamma and quantum noise: why two equal bodies look different."""
    xx, yy = _grid(size)
    img = _blur(img, 0.45 * size / 64)
    theta = rng.uniform(0, 2 * math.pi)
    img = img * (1.0 + rng.uniform(-0.15, 0.15) * (math.cos(theta) * xx + math.sin(theta) * yy))
    img = rng.uniform(-0.04, 0.04) + rng.uniform(0.85, 1.15) * img
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return img + rng.normal(0.0, rng.uniform(*noise), img.shape)


# ----------------------------------------------------------------------------------------------- chest radiographs


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
    pose: _Pose


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
        pose=_Pose(rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.08), rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)),
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
    keep = _inside(cy - y, 0.04) * _inside(side * x - 0.1, 0.04)
    return _tube(dist, a.rib_w, 0.55 * a.rib_w) * keep


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
    return 1.1 * _tube(_segment(x, y, p0, p1)[0], 0.045, 0.025)


def _lungs(x: Array, y: Array, a: _Chest, px: float, side: float | None = None) -> Array:
    sides = (-1.0, 1.0) if side is None else (side,)
    out = sum(_ellipse(x, y, s * a.lung_cx, a.lung_cy, a.lung_rx, a.lung_ry, 2 * px) for s in sides)
    return out * (1.0 - 0.85 * _ellipse(x, y, 0.12, a.lung_cy + 0.55 * a.lung_ry, a.heart_rx, a.heart_ry, 3 * px))


def _chest_base(x: Array, y: Array, a: _Chest, px: float) -> Array:
    img = 0.06 + a.tissue * _ellipse(x, y, 0.0, a.body_cy, a.body_rx, a.body_ry, 2 * px)
    lungs = _lungs(x, y, a, px)
    img -= a.lung_dark * lungs
    for side, angle, length, strength in a.vessels:  # vascular markings fanning out from the hila
        hilum = (side * 0.16, a.lung_cy + 0.05)
        end = (hilum[0] + side * length * math.cos(angle * 0.5), hilum[1] + length * math.sin(angle * 0.5))
        d, t = _segment(x, y, hilum, end)
        img += strength * np.exp(-0.5 * (d / (0.012 + 0.01 * (1 - t))) ** 2) * (1 - 0.6 * t) * lungs
    spine = _inside(0.075 - np.abs(x), px) * (1.0 + 0.25 * np.cos(y * 2 * math.pi / a.rib_dy))
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
        return amp * _ball(np.hypot(x - cx, y - cy), radius), zero
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
            step = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.3, 0.9) * a.rib_w * _inside(along, px) * near
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
        return amp * lung * _inside(y - level, rng.uniform(0.04, 0.1)), zero
    raise ValueError(f"unknown chest finding '{label}'")


def _chest_image(size: int, a: _Chest, label: str, rng: np.random.Generator) -> tuple[Array, Array]:
    p = a.pose
    pose = _Pose(
        p.angle + rng.uniform(-0.05, 0.05),
        p.scale * rng.uniform(0.96, 1.04),
        p.tx + rng.uniform(-0.03, 0.03),
        p.ty + rng.uniform(-0.03, 0.03),
    )
    x, y, px = pose.coords(size)
    effect, diffuse = _chest_finding(x, y, a, px, label, rng)
    img = _finish_radiograph(_chest_base(x, y, a, px) + effect + diffuse, rng, size, (0.015, 0.04))
    if rng.random() < 0.7:
        _burn_marker(img, rng, "LRPA", rng.uniform(0.85, 1.0))
    mask = np.zeros((size, size), np.uint8) if label == "normal" else _mask_from_effect(effect)
    return _to_uint8(img), mask


def synthesize_xray_source(out_dir: Path, n_images: int, size: int, seed: int) -> None:
    """In-domain pretraining set: chest-radiograph-like PNGs, 1-3 per patient, normal/nodule/fracture/effusion.

    Writes images/patient{pid:05d}_img{k}.png, masks/images/... (0/255, empty for normal) and labels.csv
    (path,label,patient_id).
    """
    _check_args(size, n_images, "n_images")
    plan = _rng(seed, _TAG_XRAY)
    per_patient: list[int] = []
    while sum(per_patient) < n_images:
        per_patient.append(min(int(plan.integers(1, 4)), n_images - sum(per_patient)))
    labels = _balanced_labels(plan, n_images, _XRAY_PROBS)
    rows: list[tuple[str, str, str]] = []
    with _staged_dir(Path(out_dir)) as tmp:
        idx = 0
        for pid, count in enumerate(per_patient, start=1):
            anatomy = _chest_anatomy(_rng(seed, _TAG_XRAY, pid))
            for k in range(1, count + 1):
                label = XRAY_CLASSES[int(labels[idx])]
                idx += 1
                img, mask = _chest_image(size, anatomy, label, _rng(seed, _TAG_XRAY, pid, k))
                rel = f"images/patient{pid:05d}_img{k}.png"
                _save_png(tmp / rel, img)
                _save_png(tmp / "masks" / rel, mask)
                rows.append((rel, label, f"SRC{pid:05d}"))
        _write_csv(tmp / "labels.csv", ("path", "label", "patient_id"), rows)


# ----------------------------------------------------------------------------------- musculoskeletal (MURA-like)


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
        d, _ = _segment(x, y, (0.0, -0.5), (0.02, 1.8))
        tissue = _tube(np.abs(x - 0.01), a.tissue_r, 0.0) + 0.8 * _ellipse(x, y, 0.1, -0.85, 0.6, 0.45, 4 * px)
        bones["shaft"] = _tube(d, a.r_shaft, a.r_inner * a.r_shaft)
        hd = np.hypot(x - 0.04, y + 0.7)
        bones["head"] = 0.75 * (_ball(hd, a.head_r) - 0.35 * _ball(hd, 0.8 * a.head_r))
        bones["tuberosity"] = 0.5 * _ball(np.hypot(x - 0.2 - o[0], y + 0.62), 0.1)
        gd, _ = _segment(x, y, (-0.05, -1.05), (0.45, -1.15))  # glenoid / acromion, partly in frame
        bones["scapula"] = 0.6 * _tube(gd, 0.09, 0.04)
    else:
        d_r, t_r = _segment(x, y, (-0.12, 1.8), (-0.13, 0.05))
        r_rad = a.r_shaft * (1.0 + 0.7 * np.clip((t_r - 0.75) / 0.25, 0.0, 1.0) ** 2)
        bones["radius"] = _tube(d_r, r_rad, a.r_inner * r_rad)
        d_u, _ = _segment(x, y, (0.16, 1.8), (0.15 + o[1], 0.12))
        bones["ulna"] = _tube(d_u, a.r_second, a.r_inner * a.r_second)
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
            0.7 * _ball(np.hypot(x - cx - o[2 + i], y - cy - o[10 + i]), 0.075 + 0.3 * abs(o[18 + i % 6]))
            for i, (cx, cy) in enumerate(carpals)
        )
        bones["metacarpals"] = sum(
            _tube(_segment(x, y, (mx, -0.42), (1.5 * mx + o[i], -1.7))[0], 0.05, 0.028)
            for i, mx in enumerate((-0.24, -0.1, 0.03, 0.15, 0.27))
        )
        tissue = _tube(np.abs(x - 0.02), a.tissue_r, 0.0) * _inside(y + 0.35, 4 * px)
        tissue = np.maximum(tissue, 0.9 * _ellipse(x, y, 0.0, -0.85, 0.55, 0.6, 4 * px))
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
        size=rng.uniform(0.09, 0.16),
        strength=math.exp(rng.uniform(math.log(0.45), math.log(1.0))),
        shift=float(rng.choice([-1.0, 1.0])) * rng.uniform(0.25, 1.0),
        width=rng.uniform(1.4, 2.8),
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
        near = np.exp(-0.5 * (dx * dx + dy * dy) / (2.0 * radius) ** 2)
        moved = _inside(across, px) * near  # the distal fragment, displaced sideways near the break
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
    size: int, a: _Limb, study_pose: _Pose, ab: _Abnormality | None, rng: np.random.Generator
) -> tuple[Array, Array]:
    """One view: the study pose plus a view-specific rotation/shift, same anatomy and same abnormality."""
    pose = _Pose(
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
    img = _finish_radiograph(img, rng, size, (0.012, 0.035))
    if rng.random() < 0.8:
        _burn_marker(img, rng, "LR", rng.uniform(0.8, 1.0))
    mask = np.zeros((size, size), np.uint8) if ab is None else _mask_from_effect(focal)
    return _to_uint8(img), mask


def _split_and_parts(plan: np.random.Generator, n_patients: int) -> tuple[list[str], list[str]]:
    """Patient-level split (~75/25) and body part, balanced within each split so small sets still have both."""
    n_valid = 0 if n_patients < 2 else max(1, int(round(_MURA_VALID * n_patients)))
    order = plan.permutation(n_patients)
    splits = ["train"] * n_patients
    for i in order[:n_valid]:
        splits[int(i)] = "valid"
    parts = [""] * n_patients
    for split in ("train", "valid"):
        members = [i for i in range(n_patients) if splits[i] == split]
        start = int(plan.integers(2))
        choice = [MURA_PARTS[(start + j) % 2] for j in range(len(members))]
        plan.shuffle(choice)
        for i, part in zip(members, choice, strict=True):
            parts[i] = part
    return splits, parts


def synthesize_mura(out_dir: Path, n_patients: int, size: int, seed: int) -> None:
    """Binary target set in the MURA folder layout: humerus/wrist radiographs, every view of a positive study abnormal.

    Writes {train,valid}/XR_{HUMERUS,WRIST}/patient{id:05d}/study{n}_{positive,negative}/image{k}.png and the masks
    under masks/ with the same relative paths.
    """
    _check_args(size, n_patients, "n_patients")
    plan = _rng(seed, _TAG_MURA)
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
    with _staged_dir(Path(out_dir)) as tmp:
        for p in range(n_patients):
            pid = p + 1
            anatomy = _limb_anatomy(_rng(seed, _TAG_MURA, pid), parts[p])
            for s in range(n_studies[p]):
                srng = _rng(seed, _TAG_MURA, pid, s + 1)
                study_pose = _Pose(
                    srng.uniform(-0.5, 0.5), srng.uniform(0.85, 1.12), srng.uniform(-0.1, 0.1), srng.uniform(-0.1, 0.1)
                )
                ab = _limb_abnormality(anatomy, srng) if positive[(p, s)] else None
                status = "positive" if ab is not None else "negative"
                study_dir = f"{splits[p]}/XR_{parts[p]}/patient{pid:05d}/study{s + 1}_{status}"
                for k in range(1, int(srng.integers(2, 4)) + 1):
                    img, mask = _limb_image(size, anatomy, study_pose, ab, _rng(seed, _TAG_MURA, pid, s + 1, k))
                    _save_png(tmp / study_dir / f"image{k}.png", img)
                    _save_png(tmp / "masks" / study_dir / f"image{k}.png", mask)


# ---------------------------------------------------------------------------------------------------------------- CT


@dataclass(frozen=True)
class _ChestCT:
    """A patient's chest in CT coordinates (x right, y posterior, both in half field-of-view units)."""

    fov_mm: float
    body_rx: float
    body_ry: float
    body_cy: float
    fat: float
    fat_hu: float
    tissue_hu: float
    lung_cx: float
    lung_cy: float
    lung_rx: float
    lung_ry: float
    lung_hu: float
    spine_r: float
    cancellous_hu: float
    cortex_hu: float
    contrast: bool
    n_ribs: int
    noise_hu: float
    pose: _Pose
    sex: str
    birth_date: str
    study_date: str


def _ct_anatomy(rng: np.random.Generator) -> _ChestCT:
    year, month, day = int(rng.integers(1935, 1996)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    s_month, s_day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    body_rx, body_ry, body_cy = rng.uniform(0.72, 0.88), rng.uniform(0.5, 0.62), rng.uniform(-0.02, 0.06)
    fat = rng.uniform(0.03, 0.1)
    lung_cx, lung_cy = rng.uniform(0.3, 0.36), body_cy - rng.uniform(0.02, 0.06)
    # the lungs stay inside the rib cage (ribs sit ~0.05 inside the muscle wall)
    lung_rx = min(rng.uniform(0.24, 0.3), body_rx - fat - 0.1 - lung_cx)
    lung_ry = min(rng.uniform(0.34, 0.42), body_ry - fat - 0.1 - (body_cy - lung_cy))
    return _ChestCT(
        fov_mm=rng.uniform(340.0, 420.0),
        body_rx=body_rx,
        body_ry=body_ry,
        body_cy=body_cy,
        fat=fat,
        fat_hu=rng.uniform(-120.0, -80.0),
        tissue_hu=rng.uniform(35.0, 55.0),
        lung_cx=lung_cx,
        lung_cy=lung_cy,
        lung_rx=lung_rx,
        lung_ry=lung_ry,
        lung_hu=rng.uniform(-880.0, -800.0),
        spine_r=rng.uniform(0.08, 0.1),
        cancellous_hu=rng.uniform(220.0, 350.0),
        cortex_hu=rng.uniform(800.0, 1150.0),
        contrast=bool(rng.random() < 0.5),
        n_ribs=int(rng.integers(10, 14)),
        noise_hu=rng.uniform(8.0, 22.0),
        pose=_Pose(rng.uniform(-0.06, 0.06), 1.0, rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04)),
        sex=str(rng.choice(["F", "M"])),
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        study_date=f"2023{s_month:02d}{s_day:02d}",
    )


@dataclass(frozen=True)
class _CTLesion:
    kind: str  # solid | subsolid | soft
    side: float
    u: float  # position inside the lung (lung-normalised) or offset in the anterior mediastinum
    v: float
    radius_mm: float
    hu: float  # absolute HU for lung nodules, contrast above soft tissue for mediastinal masses
    halo: float = 0.0  # ground-glass halo radius as a multiple of the nodule radius (0 = none)
    halo_hu: float = -550.0


def _ct_lesion(rng: np.random.Generator) -> _CTLesion:
    kind = str(rng.choice(["solid", "subsolid", "soft"], p=[0.75, 0.1, 0.15]))
    r, ang = 0.7 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    if kind == "soft":
        return _CTLesion(
            kind,
            float(rng.choice([-1.0, 1.0])),
            rng.uniform(-0.05, 0.05),
            rng.uniform(0.0, 0.1),
            rng.uniform(18.0, 35.0),
            rng.uniform(50.0, 100.0),
        )
    hu = rng.uniform(30.0, 80.0) if kind == "solid" else rng.uniform(-550.0, -250.0)
    radius = math.exp(rng.uniform(math.log(12.0), math.log(40.0)))
    halo = rng.uniform(1.5, 2.5) if kind == "solid" and rng.random() < 0.6 else 0.0
    return _CTLesion(
        kind,
        float(rng.choice([-1.0, 1.0])),
        r * math.cos(ang),
        r * math.sin(ang),
        radius,
        hu,
        halo,
        rng.uniform(-700.0, -450.0),
    )


def _paint(hu: Array, alpha: Array, value: float | Array) -> Array:
    return hu + alpha * (value - hu)


def _ct_slice(
    size: int, a: _ChestCT, z: float, lesion: _CTLesion | None, dz_mm: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """HU image of one axial slice at chest position z in [0, 1] (apex to base) and the lesion mask."""
    x, y, px = a.pose.coords(size)
    hu = np.full((size, size), -1000.0)
    hu = _paint(
        hu,
        _inside(0.025 - np.abs(y - (a.body_cy + a.body_ry + 0.06)), px) * _inside(0.85 - np.abs(x), px),
        rng.uniform(80.0, 200.0),
    )  # table
    hu = _paint(hu, _ellipse(x, y, 0.0, a.body_cy, a.body_rx, a.body_ry, px), a.fat_hu)
    hu = _paint(hu, _ellipse(x, y, 0.0, a.body_cy, a.body_rx - a.fat, a.body_ry - a.fat, px), a.tissue_hu)
    lung_scale = 0.55 + 0.45 * math.sin(math.pi * (0.12 + 0.8 * z))
    lrx, lry = a.lung_rx * (0.8 + 0.2 * lung_scale), a.lung_ry * lung_scale
    lungs = [(_ellipse(x, y, s * a.lung_cx, a.lung_cy, lrx, lry, px), s) for s in (-1.0, 1.0)]
    for alpha, _ in lungs:
        hu = _paint(hu, alpha, a.lung_hu + 60.0 * (y - a.lung_cy) / lry)  # dependent lung is denser
    for alpha, s in lungs:  # vessels: small bright dots that a small nodule can be confused with
        for _ in range(int(rng.integers(3, 9))):
            r, ang = 0.85 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            cx, cy = s * a.lung_cx + r * lrx * math.cos(ang), a.lung_cy + r * lry * math.sin(ang)
            rad = rng.uniform(0.006, 0.018) * (1.3 - 0.6 * r)
            hu = _paint(hu, alpha * _ellipse(x, y, cx, cy, rad, rad, px), rng.uniform(-300.0, 0.0))
    heart = float(np.clip((z - 0.35) / 0.35, 0.0, 1.0))
    if heart > 0:
        hu = _paint(
            hu,
            _ellipse(x, y, 0.06, a.lung_cy - 0.03, 0.3 * heart + 0.02, 0.24 * heart + 0.02, px, 0.4),
            a.fat_hu + 20.0,
        )
        hu = _paint(
            hu,
            _ellipse(x, y, 0.08, a.lung_cy - 0.02, 0.25 * heart + 0.01, 0.2 * heart + 0.01, px, 0.4),
            150.0 if a.contrast else 40.0,
        )
    aorta_hu = 220.0 if a.contrast else 45.0
    spine_cy = a.body_cy + a.body_ry - a.spine_r - 0.12
    hu = _paint(hu, _ellipse(x, y, 0.09, spine_cy - a.spine_r - 0.05, 0.055, 0.055, px), aorta_hu)
    if 0.25 < z < 0.6:
        hu = _paint(hu, _ellipse(x, y, -0.06, a.lung_cy - 0.12, 0.06, 0.06, px), aorta_hu)
    hu = _paint(hu, _ellipse(x, y, 0.0, spine_cy, a.spine_r, a.spine_r, px), a.cortex_hu)
    hu = _paint(hu, _ellipse(x, y, 0.0, spine_cy, 0.72 * a.spine_r, 0.72 * a.spine_r, px), a.cancellous_hu)
    canal_y = spine_cy + a.spine_r + 0.045
    hu = _paint(hu, _ellipse(x, y, 0.0, canal_y, 0.07, 0.06, px), 0.7 * a.cortex_hu)
    hu = _paint(hu, _ellipse(x, y, 0.0, canal_y, 0.04, 0.035, px), 15.0)
    hu = _paint(hu, _ellipse(x, y, 0.0, canal_y + 0.09, 0.02, 0.05, px), 0.8 * a.cortex_hu)
    hu = _paint(hu, _ellipse(x, y, 0.0, a.body_cy - a.body_ry + a.fat + 0.03, 0.05, 0.025, px), 0.6 * a.cortex_hu)
    phase = 0.6 * z
    for i in range(a.n_ribs):  # rib cross-sections just inside the chest wall, skipping front and back midline
        ang = math.pi * (0.15 + 0.7 * (i // 2) / max(1, a.n_ribs // 2 - 1)) + phase * 0.2
        ang = ang if i % 2 == 0 else math.pi - ang
        ang = ang + (math.pi if (i // 2) % 2 else 0.0)
        rx, ry = a.body_rx - a.fat - 0.05, a.body_ry - a.fat - 0.05
        cx, cy = rx * math.cos(ang), a.body_cy + ry * math.sin(ang)
        hu = _paint(hu, _ellipse(x, y, cx, cy, 0.035, 0.024, px, ang), a.cortex_hu * rng.uniform(0.75, 1.0))
    if z < 0.5:  # scapulae
        for s in (-1.0, 1.0):
            sx = s * 0.55 * a.body_rx
            sy = a.body_cy + 0.97 * a.body_ry * math.sqrt(1.0 - (sx / a.body_rx) ** 2) - 0.05
            hu = _paint(hu, _ellipse(x, y, sx, sy, 0.18, 0.025, px, -s * 0.5), 0.7 * a.cortex_hu)
    effect = np.zeros_like(x)
    if lesion is not None:
        r_mm = math.sqrt(max(lesion.radius_mm**2 - dz_mm**2, 0.25 * lesion.radius_mm**2))
        r = r_mm / (a.fov_mm / 2.0)
        if lesion.kind == "soft":  # anterior mediastinal mass: subtle against soft tissue, obvious against lung
            cx, cy = lesion.u, a.body_cy - a.body_ry + a.fat + 0.1 + lesion.v + r
            alpha = _ellipse(x, y, cx, cy, r, r * rng.uniform(0.8, 1.0), px) * (hu < 300.0)
            before = hu
            hu = _paint(hu, alpha, a.tissue_hu + lesion.hu)
            effect = hu - before
        else:
            cx, cy = lesion.side * a.lung_cx + lesion.u * lrx, a.lung_cy + lesion.v * lry
            alpha = _ellipse(x, y, cx, cy, r, r * rng.uniform(0.85, 1.0), px)
            effect = alpha * np.maximum(lesion.hu - hu, 0.0)  # the mask follows the nodule itself, not its halo
            if lesion.halo:
                lung = sum(lung_alpha for lung_alpha, _ in lungs)
                r_halo = min(lesion.halo * r, r + 12.0 / (a.fov_mm / 2.0))
                halo = _ellipse(x, y, cx, cy, r_halo, r_halo, 2 * px) * lung
                hu = _paint(hu, halo, np.maximum(hu, lesion.halo_hu + rng.uniform(0.0, 60.0)))
            hu = _paint(hu, alpha, np.maximum(hu, lesion.hu))  # a nodule adds density, never removes it
    hu = _blur(hu, 0.5 * size / 64) + rng.normal(0.0, a.noise_hu, hu.shape)
    mask = np.zeros((size, size), np.uint8) if lesion is None else _mask_from_effect(_blur(effect, 0.5 * size / 64))
    return hu, mask


def _write_ct_dicom(
    path: Path, stored: Array, a: _ChestCT, uids: dict[str, str], pid: int, k: int, z_mm: float, size: int
) -> None:
    """A valid CT Image Storage file with fake but realistic identifying fields (for privacy handling tests)."""
    spacing = a.fov_mm / size
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = a.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.AccessionNumber = f"ACC{pid:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "medxfer synthetic"
    ds.InstitutionName = "Demo General Hospital"
    ds.InstitutionAddress = "1 Example Street, Demo City"
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.StationName = "DEMOCT01"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "Chest 5mm"
    ds.OperatorsName = "Demo^Operator"
    ds.PatientName = f"Demo^Patient{pid:04d}"
    ds.PatientID = f"DEMO-{pid:04d}"
    ds.PatientBirthDate = a.birth_date
    ds.PatientSex = a.sex
    ds.PatientAge = f"{int(a.study_date[:4]) - int(a.birth_date[:4]):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "5"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = f"{pid:04d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k
    corner = f"{-a.fov_mm / 2 + spacing / 2:.3f}"
    ds.ImagePositionPatient = [corner, corner, f"{z_mm:.2f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.SliceLocation = f"{z_mm:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _ct_uids(seed: int, pid: int, k: int) -> dict[str, str]:
    """Deterministic UIDs: the same seed gives the same study/series/instance UIDs on every run."""
    base = ["medxfer-synth-ct", str(int(seed)), str(pid)]
    return {
        "study": generate_uid(entropy_srcs=[*base, "study"]),
        "series": generate_uid(entropy_srcs=[*base, "series"]),
        "frame": generate_uid(entropy_srcs=[*base, "frame"]),
        "sop": generate_uid(entropy_srcs=[*base, "sop", str(k)]),
    }


def synthesize_ct(out_dir: Path, n_patients: int, size: int, seed: int) -> None:
    """Binary CT target set (lesion vs normal, by patient): 1-3 DICOM slices per patient with HU anatomy.

    Writes dicom/patient{pid:04d}_slice{k}.dcm, masks/dicom/patient{pid:04d}_slice{k}.png and labels.csv
    (path,label,patient_id with patient_id = the DICOM PatientID).
    """
    _check_args(size, n_patients, "n_patients")
    plan = _rng(seed, _TAG_CT)
    has_lesion = _balanced_labels(plan, n_patients, (0.5, 0.5))
    rows: list[tuple[str, str, str]] = []
    with _staged_dir(Path(out_dir)) as tmp:
        for p in range(n_patients):
            pid = p + 1
            prng = _rng(seed, _TAG_CT, pid)
            anatomy = _ct_anatomy(prng)
            lesion = _ct_lesion(prng) if has_lesion[p] else None
            n_slices = int(prng.integers(1, 4))
            z0 = prng.uniform(0.2, 0.85)
            if lesion is None:
                dz = np.sort(prng.choice(np.arange(-3, 4), n_slices, replace=False)) * prng.uniform(5.0, 10.0)
            else:
                dz = np.sort(prng.uniform(-0.6, 0.6, n_slices)) * lesion.radius_mm
            for k in range(1, n_slices + 1):
                z_mm = z0 * _CT_CHEST_MM + float(dz[k - 1])
                hu, mask = _ct_slice(
                    size, anatomy, z_mm / _CT_CHEST_MM, lesion, float(dz[k - 1]), _rng(seed, _TAG_CT, pid, k)
                )
                stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
                rel = f"dicom/patient{pid:04d}_slice{k}.dcm"
                _write_ct_dicom(tmp / rel, stored, anatomy, _ct_uids(seed, pid, k), pid, k, -z_mm, size)
                _save_png(tmp / "masks" / f"dicom/patient{pid:04d}_slice{k}.png", mask)
                rows.append((rel, CT_CLASSES[1] if lesion is not None else CT_CLASSES[0], f"DEMO-{pid:04d}"))
        _write_csv(tmp / "labels.csv", ("path", "label", "patient_id"), rows)
