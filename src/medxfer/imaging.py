"""Decode one image (PNG/JPEG/DICOM file or one entry of an .npz array) into a uint8 channel-first array.

An image inside an array file is addressed as `<file>.npz#<key>[<index>]`, so every manifest row is one path and
ingest, cache and tests share a single decoder (`read_image` / `load_image`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medxfer.io import sha256_bytes, sha256_file

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
RESAMPLE = Image.Resampling.BILINEAR
LARGE_PIXELS = 4096 * 4096  # above this, rasters are decoded at reduced size when a target size is known
NPZ_REF = re.compile(r"^(?P<file>.+\.npz)#(?P<key>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d+)\]$")


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_dicom(path: Path) -> bool:
    """By extension, DICM preamble, or a bare data set (written without the 128-byte preamble) that starts with a
    group 0002 or 0008 element. A cheap sniff: decoding decides whether it really is DICOM."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        head = fh.read(132)
    return (len(head) == 132 and head[128:132] == b"DICM") or _bare_dicom_start(head)


def _bare_dicom_start(head: bytes) -> bool:
    """A little-endian first element of group 0002 (file meta) or 0008 (identification), explicit VR or implicit."""
    if len(head) < 8 or int.from_bytes(head[:2], "little") not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    return (vr.isalpha() and vr.isupper()) or int.from_bytes(head[4:8], "little") < 1 << 16


@contextlib.contextmanager
def withheld_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings raised in the block instead of printing them, and keep pydicom's log records from
    reaching any handler: pydicom quotes header values in both, and a malformed UID can hold a patient's name.
    Process-wide, so not for use inside threads: enter it once around a thread pool."""
    pydicom_log = logging.getLogger("pydicom")
    propagate = pydicom_log.propagate
    pydicom_log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        pydicom_log.propagate = propagate


def withheld_note(caught: Sequence[warnings.WarningMessage], while_: str = "parsing") -> str:
    """What a caller may log about withheld warnings: how many and of which kind, never their text."""
    kinds = ", ".join(sorted({w.category.__name__ for w in caught}))
    return f"{len(caught)} pydicom warning(s) of kind {kinds} while {while_}; values withheld"


def npz_ref(file: str | Path, key: str, index: int) -> str:
    """The manifest path of entry `index` of array `key` in an .npz file."""
    return f"{Path(file).as_posix()}#{key}[{index}]"


def parse_npz_ref(path: str | Path) -> tuple[Path, str, int] | None:
    """(file, key, index) for an `<file>.npz#<key>[<index>]` path, None for a plain file path."""
    match = NPZ_REF.match(str(path))
    return (Path(match["file"]), match["key"], int(match["index"])) if match else None


def npz_array(file: str | Path, key: str) -> np.ndarray:
    """One array of an .npz file, decompressed once and kept (keyed on mtime/size, so a changed file is re-read)."""
    file = Path(file)
    if not file.is_file():
        raise ImageError(file, "file not found")
    stat = file.stat()
    return _npz_array(str(file), key, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _npz_array(file: str, key: str, mtime_ns: int, size: int) -> np.ndarray:
    try:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.files)
            array = data[key] if key in keys else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ImageError(file, f"not a readable .npz file ({err})") from None
    if array is None:
        raise ImageError(file, f"no array '{key}' in the file (has {keys})")
    array.flags.writeable = False  # shared between threads and callers
    return array


def npz_entry(path: str | Path) -> np.ndarray:
    """The raw array entry an `<file>.npz#<key>[<index>]` path points to."""
    file, key, index = parse_npz_ref(path)
    array = npz_array(file, key)
    if index >= len(array):
        raise ImageError(path, f"index {index} out of range: '{key}' has {len(array)} entries")
    return array[index]


def read_mask(path: str, size: int) -> np.ndarray | None:
    """A finding mask (PNG file or `<file>.npz#<key>[<index>]` entry) resized to the cached image size (nearest),
    or None when the row has none."""
    if not path:
        return None
    try:
        if parse_npz_ref(path):
            entry = np.asarray(npz_entry(path))
            if entry.ndim != 2:
                raise ValueError(f"a mask entry must be 2-D (H, W), got shape {entry.shape}")
            img = Image.fromarray(((entry > 0) * 255).astype(np.uint8))
        else:
            img = Image.open(path)
        with img:
            mask = img.convert("L").resize((size, size), Image.Resampling.NEAREST)
    except (OSError, ValueError, ImageError) as err:
        raise ValueError(f"{path}: cannot read the finding mask ({err})") from None
    return np.asarray(mask) > 0


def content_hash(path: str | Path) -> str:
    """sha256 of what makes the image: the file bytes, or the raw array bytes of an .npz entry."""
    if parse_npz_ref(path):
        return sha256_bytes(np.ascontiguousarray(npz_entry(path)).tobytes())
    return sha256_file(path)


def read_image(
    path: str | Path,
    modality: str,
    windows: Sequence[Sequence[float]] = ((40, 400),),
    assume_rescale: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Return a uint8 array (C, H, W) at native size: C=1 for radiographs, one channel per window for CT.
    `assume_rescale` ({slope, intercept}) stands in for a CT file's missing RescaleSlope/Intercept (the data set's
    config says so); without it such a file is refused, since its values are not known to be HU."""
    return _decode(path, modality, windows, None, assume_rescale=assume_rescale)


def _decode(
    path: str | Path,
    modality: str,
    windows: Sequence[Sequence[float]],
    size: int | None,
    *,
    min_side: int = 1,
    assume_rescale: Mapping[str, float] | None = None,
) -> np.ndarray:
    """read_image; with `size`, rasters may come back already resized (the same pixels, fewer copies) and large
    ones decoded at reduced size. An image whose native height or width is below `min_side` is refused."""
    if parse_npz_ref(path):
        image = array_to_image(npz_entry(path), path, modality, windows)
    else:
        path = Path(path)
        if not path.is_file():
            raise ImageError(path, "file not found")
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        if not is_dicom(path):
            return _read_raster(path, size, min_side)
        image = _read_dicom(path, modality, windows, assume_rescale)
    _check_side(image.shape[-1], image.shape[-2], path, min_side)
    return image


def _check_side(width: int, height: int, path: str | Path, min_side: int) -> None:
    """A thumbnail or icon holds no diagnostic detail and would be blown up to the cache size."""
    if min(width, height) < min_side:
        raise ImageError(path, f"image is {width} x {height} pixels, smaller than min_image_side {min_side}")


def array_to_image(
    values: np.ndarray, where: str | Path, modality: str, windows: Sequence[Sequence[float]]
) -> np.ndarray:
    """An array entry (H, W), (1, H, W) or RGB (H, W, 3|4) as (C, H, W) uint8; CT arrays hold HU and are windowed."""
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 3 and values.shape[-1] in (3, 4) and values.dtype == np.uint8:
        values = np.asarray(Image.fromarray(values[..., :3]).convert("L"))
    if values.ndim != 2:
        raise ImageError(where, f"expected a 2-D image (H, W), (1, H, W) or (H, W, 3), got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ImageError(where, f"image array has non-numeric dtype {values.dtype}")
    if modality == "ct":
        hu = values.astype(np.float64)
        return np.stack([_to_uint8(hu, c - w / 2, c + w / 2) for c, w in windows])
    if values.dtype == np.uint8:
        return values[None].copy()
    if values.dtype == bool:
        return (values.astype(np.uint8) * 255)[None]
    numbers = values.astype(np.float64)
    return _to_uint8(numbers, numbers.min(), numbers.max())[None]


def _read_raster(path: Path, size: int | None = None, min_side: int = 1) -> np.ndarray:
    try:
        with Image.open(path) as img:
            _check_raster(img, path, min_side)
            factor = _reduce_factor(img.size, size)
            if factor > 1:
                img.draft("L", (2 * size, 2 * size))  # JPEG only: DCT scaling decodes at 1/2..1/8 size
            img.load()
            if _fully_transparent(img):
                raise ImageError(path, "no visible pixel: every pixel is fully transparent (alpha 0)")
            factor = _reduce_factor(img.size, size)
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return _grey_16bit(img, factor)[None]
            if img.mode == "I":
                arr = np.asarray(img, dtype=np.float64)
                return _to_uint8(arr, arr.min(), arr.max())[None]
            if img.mode not in ("L", "RGB", "RGBA", "LA", "P", "1"):
                raise ImageError(path, f"unsupported image mode {img.mode}")
            grey = img if img.mode == "L" else img.convert("L")
            if factor > 1:
                grey = grey.reduce(factor)
            if size is not None and grey.size != (size, size):
                grey = grey.resize((size, size), RESAMPLE)  # what resize() would do, without the array round trip
            return np.asarray(grey, dtype=np.uint8)[None]
    except Image.DecompressionBombError as err:
        raise ImageError(path, f"too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(path, f"not a readable image ({err})") from None


def _check_raster(img: Image.Image, path: Path, min_side: int) -> None:
    """What the header already tells: one frame (as for DICOM; GIF/TIFF/APNG may hold many) and the native size."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise ImageError(path, f"multi-frame image ({frames} frames, {img.format}): store one frame per file")
    _check_side(*img.size, path, min_side)


def _reduce_factor(native: tuple[int, int], size: int | None) -> int:
    """Integer shrink for images over LARGE_PIXELS that still leaves twice the target size; 1 = decode as is."""
    if size is None or native[0] * native[1] <= LARGE_PIXELS:
        return 1
    return max(1, min(native) // (2 * size))


def _fully_transparent(img: Image.Image) -> bool:
    """True when the alpha channel (or a palette/tRNS transparency) hides every pixel: grey would be meaningless."""
    if img.mode in ("RGBA", "LA", "PA"):
        return img.getextrema()[-1][1] == 0
    if "transparency" in img.info and img.mode in ("P", "L", "RGB", "1"):
        return img.convert("RGBA").getextrema()[-1][1] == 0
    return False


def _grey_16bit(img: Image.Image, factor: int) -> np.ndarray:
    """16-bit pixels scaled min..max to uint8 through a lookup table (the float copies cost 8x the image), in strips
    of rows, each box-reduced by `factor`, so beside the decoded image only one strip is held at full size."""
    low, high = img.getextrema()
    lut = _to_uint8(np.arange(high + 1, dtype=np.float64), low, high)
    if factor == 1:
        return lut[np.asarray(img)]
    width, height = img.size
    step = factor * max(1, 1024 // factor)
    strips = []
    for top in range(0, height, step):
        strip = lut[np.asarray(img.crop((0, top, width, min(height, top + step))))]
        strips.append(np.asarray(Image.fromarray(strip).reduce(factor)))
    return np.concatenate(strips)


def _read_header(path: str | Path, **options: object) -> object:
    """pydicom's dcmread, as an ImageError when it fails. A file without the 128-byte preamble and DICM prefix is
    read again with force=True and kept only if that gives a real data set (identification elements, group 0008):
    force makes pydicom accept almost any bytes."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, **options)
    except InvalidDicomError:
        pass  # no preamble or DICM prefix: try as a bare data set below
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageError(path, f"not a readable DICOM file ({err})") from None
    try:
        ds = pydicom.dcmread(path, force=True, **options)
        real = any(tag.group == 0x0008 for tag in list(ds.keys()))  # tags only: no value is converted
    except Exception as err:
        raise ImageError(path, f"not a readable DICOM file (no DICM preamble; read without it: {err})") from None
    if not real:
        raise ImageError(path, "not a readable DICOM file (no DICM preamble, and no DICOM data set without it)")
    _infer_transfer_syntax(ds)
    return ds


def _infer_transfer_syntax(ds: object) -> None:
    """A bare data set has no file meta: name the uncompressed syntax it was read in, which decoding needs."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )


def _hounsfield(pixels: np.ndarray, ds: object, path: Path, assume: Mapping[str, float] | None) -> np.ndarray:
    """HU from the file's Modality LUT or RescaleSlope/Intercept; a missing slope or intercept is taken from the
    data set's `assume_rescale`, else the file is refused: raw stored values are not HU (often off by 1024)."""
    from pydicom.pixels import apply_rescale

    given = {key: ds.get(f"Rescale{key.title()}") for key in ("slope", "intercept")}
    given = {key: value for key, value in given.items() if value is not None and str(value).strip()}
    missing = [f"Rescale{key.title()}" for key in ("slope", "intercept") if key not in given]
    if not missing or "ModalityLUTSequence" in ds:
        return apply_rescale(pixels, ds).astype(np.float64)
    if assume is None:
        raise ImageError(
            path,
            f"CT image without {'/'.join(missing)}: its values are not known to be HU (set assume_rescale for "
            "this data set if you know them, e.g. {slope: 1, intercept: -1024})",
        )
    slope, intercept = (float(given.get(key, assume[key])) for key in ("slope", "intercept"))
    return pixels.astype(np.float64) * slope + intercept


def _read_dicom(
    path: Path, modality: str, windows: Sequence[Sequence[float]], assume_rescale: Mapping[str, float] | None = None
) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_rescale, apply_voi_lut

    ds = _read_header(path)
    if "PixelData" not in ds:
        raise ImageError(path, "DICOM file has no pixel data")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        pixels = ds.pixel_array
    except NotImplementedError:
        name = getattr(syntax, "name", "unknown")
        raise ImageError(path, f"unsupported transfer syntax {name} ({syntax}): no decoder installed") from None
    except Exception as err:
        raise ImageError(path, f"cannot decode pixel data (transfer syntax {syntax}: {err})") from None
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(path, f"multi-frame DICOM ({frames} frames): store one frame per file")
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return _rgb_to_grey(pixels)[None]  # colour captures (RGB, YBR decoded to RGB, palette): grey like PNG
    if pixels.ndim != 2:
        raise ImageError(path, f"expected one 2-D frame, got pixel array of shape {pixels.shape}")
    if modality == "ct":
        hu = _hounsfield(pixels, ds, path, assume_rescale)
        return np.stack([_to_uint8(hu, c - w / 2, c + w / 2) for c, w in windows])
    values = apply_voi_lut(apply_rescale(pixels, ds), ds).astype(np.float64)
    low, high = values.min(), values.max()
    image = _to_uint8(values, low, high)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        image = 255 - image
    return image[None]


def _rgb_to_grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) of any bit depth to uint8 grey; 8-bit goes through PIL so it equals a PNG of the same pixels."""
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).convert("L"))
    luma = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return _to_uint8(luma, 0.0, float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "ui" else luma.max())


def dicom_ids(path: str | Path) -> tuple[str, str]:
    """(PatientID, StudyInstanceUID) from a DICOM header, '' where absent; read without pixel data. Callers must
    pseudonymize them before they are written anywhere."""
    ds = _read_header(path, stop_before_pixels=True)
    return str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", "") or "")


def dicom_modality(path: str | Path) -> str:
    """The header's Modality (CT, CR, DX, ...), '' where absent; read without pixel data."""
    return str(_read_header(path, stop_before_pixels=True).get("Modality", "") or "")


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, low, high) - low) / (high - low)
    return np.round(scaled * 255).astype(np.uint8)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a (C, H, W) uint8 image to (C, size, size) with antialiasing."""
    if image.shape[1:] == (size, size):
        return image
    channels = [Image.fromarray(ch).resize((size, size), RESAMPLE) for ch in image]
    return np.stack([np.asarray(ch, dtype=np.uint8) for ch in channels])


def load_image(
    path: str | Path,
    modality: str,
    windows: Sequence[Sequence[float]],
    size: int,
    *,
    min_side: int = 1,
    assume_rescale: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The cached form of one manifest row: decoded and resized to (C, size, size) uint8. Ingest calls it with the
    data set's `min_image_side`, so an image it accepts is one the cache can decode."""
    return resize(_decode(path, modality, windows, size, min_side=min_side, assume_rescale=assume_rescale), size)
