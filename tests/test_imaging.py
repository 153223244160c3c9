import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medxfer.imaging import ImageError, load_image, read_image


def write_dicom(path, pixels, modality="CT", photometric="MONOCHROME2", slope=1.0, intercept=-1024.0, pixel=True):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = modality
    ds.PatientName = "Secret^Person"
    ds.PatientID = "ID-123"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if pixel:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_windows_become_channels_in_hu(tmp_path):
    hu = np.full((32, 32), -1000.0)
    hu[8:24, 8:24] = 40.0  # soft tissue
    hu[14:18, 14:18] = 1000.0  # bone
    path = write_dicom(tmp_path / "ct.dcm", hu + 1024)
    image = read_image(path, "ct", [[40, 400], [500, 2000]])
    assert image.shape == (2, 32, 32) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, 10, 10] == 128 and image[0, 16, 16] == 255  # soft-tissue window
    assert image[1, 10, 10] < image[1, 16, 16]


def test_monochrome1_radiograph_is_inverted(tmp_path):
    pixels = np.tile(np.arange(32, dtype=np.float64) * 100, (32, 1))
    normal = read_image(write_dicom(tmp_path / "a.dcm", pixels, "DX", intercept=0), "xray")
    inverted = read_image(write_dicom(tmp_path / "b.dcm", pixels, "DX", "MONOCHROME1", intercept=0), "xray")
    assert np.array_equal(normal, 255 - inverted)


def test_bad_files_name_the_file_and_problem(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    noise = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    no_pixels = write_dicom(tmp_path / "nopix.dcm", np.zeros((8, 8)), pixel=False)
    cases = {
        "empty.png": "empty file",
        "text.png": "not a readable image",
        "truncated.png": "not a readable image",
        "nopix.dcm": "no pixel data",
        "missing.png": "not found",
    }
    for name, reason in cases.items():
        path = no_pixels if name == "nopix.dcm" else tmp_path / name
        with pytest.raises(ImageError, match=reason) as err:
            read_image(path, "xray")
        assert str(path) in str(err.value)


def test_16bit_png_scaled_and_resized(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) * 10).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "16.png")
    image = load_image(tmp_path / "16.png", "xray", [], 32)
    assert image.shape == (1, 32, 32) and image.min() < 10 and image.max() > 245


def test_rgb_png_becomes_grey(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_image(tmp_path / "rgb.png", "xray").shape == (1, 20, 20)


def test_dicom_read_does_not_need_extension(tmp_path):
    path = write_dicom(tmp_path / "IM0001", np.full((8, 8), 1064.0))
    assert pydicom.dcmread(path).PatientID == "ID-123"
    assert read_image(path, "ct", [[40, 400]]).shape == (1, 8, 8)
