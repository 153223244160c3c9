"""Shared pieces of the demo-data generators: seeded RNG streams, atomic output, file writers, geometry, finishing.

Every patient, study and image draws from its own RNG derived from (seed, data set, patient, study, image) with
SeedSequence, so output never depends on generation order, and the same arguments give byte-identical files (no
timestamps in PNG or DICOM).
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
from PIL import Image

TAG_XRAY, TAG_MURA, TAG_CT, TAG_GRADES = 1, 2, 3, 4  # one RNG stream family per data set

Array = np.ndarray


# ----------------------------------------------------------------------------------------------------------- helpers


def check_args(size: int, count: int, what: str) -> None:
    if int(size) < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if int(count) < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """One independent stream per (seed, data set, patient, ...): items never depend on generation order."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys)))


@contextlib.contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
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


def save_png(path: Path, arr: Array) -> None:
    """8-bit grayscale PNG; Pillow writes no tIME chunk, so the bytes depend only on the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(path, format="PNG")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def balanced_labels(rng: np.random.Generator, n: int, probs: Sequence[float]) -> Array:
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


def to_uint8(img: Array) -> Array:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def mask_from_effect(effect: Array, frac: float = 0.35) -> Array:
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
class Pose:
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


def soft_inside(signed_dist: Array, px: float) -> Array:
    """Anti-aliased indicator: 1 inside, 0 outside, about one pixel of transition."""
    return 0.5 * (1.0 + np.tanh(2.0 * signed_dist / px))


def ellipse(x: Array, y: Array, cx: float, cy: float, rx: float, ry: float, px: float, angle: float = 0.0) -> Array:
    u, v = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * u + s * v, -s * u + c * v
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return soft_inside((1.0 - d) * min(rx, ry), px)


def segment(x: Array, y: Array, p0: tuple[float, float], p1: tuple[float, float]) -> tuple[Array, Array]:
    """Distance to the segment p0-p1 and the position t in [0, 1] of the nearest point on it."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * vx, y - p0[1] - t * vy), t


def tube(d: Array, r_out: Array | float, r_in: Array | float) -> Array:
    """Projected thickness of a hollow bone (cortex + medulla): bright edges, softer centre, 0 outside."""
    outer = np.sqrt(np.clip(np.square(r_out) - d * d, 0.0, None))
    inner = np.sqrt(np.clip(np.square(r_in) - d * d, 0.0, None))
    return (outer - 0.6 * inner) / r_out


def ball(d: Array, r: float) -> Array:
    """Projected thickness of a sphere, normalised to 1 at the centre."""
    return np.sqrt(np.clip(1.0 - (d / r) ** 2, 0.0, None))


def blur(img: Array, sigma: float) -> Array:
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


def burn_marker(img: Array, rng: np.random.Generator, letters: str, value: float) -> None:
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


def finish_radiograph(img: Array, rng: np.random.Generator, size: int, noise: tuple[float, float]) -> Array:
    """Detector blur, exposure gradient, contrast/gamma and quantum noise: why two equal bodies look different."""
    xx, yy = _grid(size)
    img = blur(img, 0.45 * size / 64)
    theta = rng.uniform(0, 2 * math.pi)
    img = img * (1.0 + rng.uniform(-0.15, 0.15) * (math.cos(theta) * xx + math.sin(theta) * yy))
    img = rng.uniform(-0.04, 0.04) + rng.uniform(0.85, 1.15) * img
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return img + rng.normal(0.0, rng.uniform(*noise), img.shape)
