"""Perceptual hashes of decoded images and the near-duplicate pairs across splits.

sha256 only matches byte-identical files; the same X-ray saved again as JPEG, resized or re-exported has other bytes
but the same picture, and in two splits it leaks just the same. A 64-bit DCT hash of the decoded pixels survives
that, and pairs of hashes a few bits apart are found with vectorised popcounts, in blocks, so 100k images fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations

import numpy as np
import pandas as pd
from PIL import Image

from medxfer.ingestbase import SPLITS

HASH_SIDE = 32  # grey resize the DCT runs on
HASH_LOW = 8  # the 8 x 8 lowest frequencies give the 64 bits
BLOCK_PAIRS = 1 << 20  # hash pairs compared per numpy block (8 MB of uint64: stays in cache)
DUPLICATE_COLUMNS = ["path_a", "split_a", "path_b", "split_b", "distance"]


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `m @ x @ m.T` is the 2-D DCT of an (n, n) block."""
    k = np.arange(n)
    m = np.sqrt(2 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    m[0] /= np.sqrt(2)
    return m


_DCT_LOW = _dct_matrix(HASH_SIDE)[:HASH_LOW]  # only the low-frequency rows are ever used


def perceptual_hash(image: np.ndarray) -> str:
    """pHash of a decoded (C, H, W) uint8 image as 16 hex digits: one bit per low DCT frequency above their median.
    Channels (CT windows) are averaged; the area-average resize ignores the aspect ratio, as a resized copy may."""
    grey = image[0] if len(image) == 1 else np.round(image.mean(axis=0)).astype(np.uint8)
    small = Image.fromarray(grey).resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    low = (_DCT_LOW @ np.asarray(small, dtype=np.float64) @ _DCT_LOW.T).ravel()
    median = np.sort(low)[low.size // 2 - 1 : low.size // 2 + 1].mean()
    return np.packbits(low > median).tobytes().hex()


def _close_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> Iterator[tuple[np.ndarray, ...]]:
    """(i, j, distance) for hashes a[i], b[j] at most `max_distance` bits apart: a block of rows of a at a time, in
    reused buffers (allocation and the all-false mask scan dominate otherwise)."""
    rows = max(1, min(len(a), BLOCK_PAIRS // max(len(b), 1)))
    xor = np.empty((rows, len(b)), np.uint64)
    distance = np.empty((rows, len(b)), np.uint8)
    close = np.empty((rows, len(b)), bool)
    for start in range(0, len(a), rows):
        n = min(rows, len(a) - start)
        np.bitwise_xor(a[start : start + n, None], b[None, :], out=xor[:n])
        np.bitwise_count(xor[:n], out=distance[:n])
        np.less_equal(distance[:n], max_distance, out=close[:n])
        if close[:n].any():
            i, j = np.nonzero(close[:n])
            yield i + start, j, distance[i, j]


def near_duplicates(table: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Image pairs in different splits whose perceptual hashes differ in at most `max_distance` of 64 bits,
    closest first (path_a in the earlier split)."""
    hashes = np.array([int(h, 16) for h in table["phash"]], dtype=np.uint64)
    split, paths = table["split"].to_numpy(), table["path"].to_numpy()
    found = []
    for first, second in combinations(SPLITS, 2):
        rows_a, rows_b = np.flatnonzero(split == first), np.flatnonzero(split == second)
        for i, j, distance in _close_pairs(hashes[rows_a], hashes[rows_b], max_distance):
            pairs = {"path_a": paths[rows_a[i]], "split_a": first, "path_b": paths[rows_b[j]], "split_b": second}
            found.append(pd.DataFrame(pairs | {"distance": distance.astype(int)}))
    if not found:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    return pd.concat(found).sort_values(["distance", "path_a", "path_b"]).reset_index(drop=True)
