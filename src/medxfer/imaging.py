"""Decode one image file (PNG/JPEG/DICOM) into a uint8 channel-first array at a fixed size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DICOM_SUFFIXES = {".dcm", ".dicom", ""}


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path, modality: str, windows: Sequence[Sequence[float]] = ((40, 400),)) -> np.ndarray:
    """Return a uint8 array (C, H, W) at native size: C=1 for radiographs, one channel per window for CT."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    if is_dicom(path):
        return _read_dicom(path, modality, windows)
    return _read_raster(path)


def _read_raster(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                return _to_uint8(arr, arr.min(), arr.max())[None]
            if mode not in ("L", "RGB", "RGBA", "LA", "P", "1"):
                raise ImageError(path, f"unsupported image mode {mode}")
            return np.asarray(img.convert("L"), dtype=np.uint8)[None]
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(path, f"not a readable image ({err})") from None


def _read_dicom(path: Path, modality: str, windows: Sequence[Sequence[float]]) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_rescale, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageError(path, f"not a readable DICOM file ({err})") from None
    if "PixelData" not in ds:
        raise ImageError(path, "DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageError(path, f"cannot decode pixel data (transfer syntax {syntax}: {err})") from None
    if pixels.ndim != 2:
        raise ImageError(path, f"expected one 2-D frame, got pixel array of shape {pixels.shape}")
    if modality == "ct":
        hu = apply_rescale(pixels, ds).astype(np.float64)
        return np.stack([_to_uint8(hu, c - w / 2, c + w / 2) for c, w in windows])
    values = apply_voi_lut(apply_rescale(pixels, ds), ds).astype(np.float64)
    low, high = values.min(), values.max()
    image = _to_uint8(values, low, high)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        image = 255 - image
    return image[None]


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, low, high) - low) / (high - low)
    return np.round(scaled * 255).astype(np.uint8)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a (C, H, W) uint8 image to (C, size, size) with antialiasing."""
    if image.shape[1:] == (size, size):
        return image
    channels = [Image.fromarray(ch).resize((size, size), Image.Resampling.BILINEAR) for ch in image]
    return np.stack([np.asarray(ch, dtype=np.uint8) for ch in channels])


def load_image(path: str | Path, modality: str, windows: Sequence[Sequence[float]], size: int) -> np.ndarray:
    return resize(read_image(path, modality, windows), size)
