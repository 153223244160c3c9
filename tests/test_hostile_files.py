"""Hostile files in a raw data set: links, tiny, transparent, animated, oversized, badly named and system files.

Each case is built on disk in tmp_path and goes through the real readers, decoder, ingest and fingerprint; every
one must end in a quarantine row with a reason, a skip, or an IngestError naming the problem, never a traceback.
"""

import logging
import os
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_imaging import write_dicom

from medxfer import imaging
from medxfer.config import validate
from medxfer.fingerprint import dataset_fingerprint
from medxfer.imaging import ImageError, load_image, read_image, resize
from medxfer.ingest import IngestError, ingest_dataset


def entry(root, **fields) -> dict:
    conf = validate(
        {"datasets": {"d": {"root": str(root)} | fields}, "finetune": {"targets": ["d"], "inits": ["scratch"]}}
    )
    return conf["datasets"]["d"]


def run(out, ds, log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    table = ingest_dataset("d", ds, out / "manifest.csv", out / "quarantine.csv", seed=0, log=log)
    return table, pd.read_csv(out / "quarantine.csv")


def noise(seed: int, shape=(20, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def class_folders(root, classes=("a", "b"), n=6, seed=0) -> None:
    for k, label in enumerate(classes):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(noise(seed + 100 * k + i)).save(root / label / f"{i}.png")


def reason_of(quarantine: pd.DataFrame, path: str) -> str:
    reasons = quarantine.set_index("path")["reason"]
    assert path in reasons.index, quarantine.to_string()
    return reasons[path]


# --- links: followed inside root, quarantined when they leave it, whichever reader finds them -----------------


def test_class_folder_links_inside_root_are_followed_others_quarantined(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    class_folders(root, ("a",))
    class_folders(root / ".pool", ("b",), seed=50)  # hidden: read only through the link
    class_folders(outside, ("c",), seed=90)
    (root / "b").symlink_to(root / ".pool" / "b")
    (root / "c").symlink_to(outside / "c")
    (root / "a" / "far.png").symlink_to(outside / "c" / "0.png")
    (root / "a" / "near.png").symlink_to(root / ".pool" / "b" / "0.png")
    (root / "a" / "ghost.png").symlink_to(root / "a" / "missing.png")
    (root / "a" / "loop").symlink_to(root / "a")
    table, quarantine = run(tmp_path / "o", entry(root, format="imagefolder", max_reject_fraction=1))
    assert sorted(set(table["label_name"])) == ["a", "b"] and len(table) == 13
    assert "a/near.png" in set(table["path"])
    assert "outside the data set root" in reason_of(quarantine, "c")
    assert "outside the data set root" in reason_of(quarantine, "a/far.png")
    assert reason_of(quarantine, "a/ghost.png") == "broken symbolic link"
    assert "loop" in reason_of(quarantine, "a/loop")
    assert len(quarantine) == 4


def test_configured_class_without_images_stops_ingest(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    class_folders(root, ("a",))
    class_folders(outside, ("b",))
    (root / "b").symlink_to(outside / "b")
    ds = entry(root, format="imagefolder", classes=["a", "b"], max_reject_fraction=1)
    with pytest.raises(IngestError, match=r"configured class\(es\) \['b'\] have no accepted image"):
        run(tmp_path / "o", ds)
    assert "outside the data set root" in reason_of(pd.read_csv(tmp_path / "o" / "quarantine.csv"), "b")


def _mura(root, outside):
    for s, (split, n) in enumerate((("train", 4), ("valid", 2))):
        for p in range(n):
            for k, label in enumerate(("negative", "positive")):
                study = root / split / "XR_WRIST" / f"patient{s}{p}{k}" / f"study1_{label}"
                study.mkdir(parents=True)
                Image.fromarray(noise(1000 * k + 10 * p + s)).save(study / "image1.png")
    Image.fromarray(noise(7)).save(outside / "x.png")
    link = root / "train" / "XR_WRIST" / "patient000" / "study1_negative" / "image2.png"
    link.symlink_to(outside / "x.png")
    return {"format": "mura"}, str(link.relative_to(root))


def _imagefolder(root, outside):
    class_folders(root)
    Image.fromarray(noise(7)).save(outside / "x.png")
    (root / "a" / "x.png").symlink_to(outside / "x.png")
    return {"format": "imagefolder"}, "a/x.png"


def _csv(root, outside):
    class_folders(root)
    Image.fromarray(noise(7)).save(outside / "x.png")
    (root / "x.png").symlink_to(outside / "x.png")
    paths = [f"{c}/{i}.png" for c in "ab" for i in range(6)] + ["x.png"]
    pd.DataFrame({"path": paths, "label": [p[0] for p in paths[:-1]] + ["a"]}).to_csv(root / "l.csv", index=False)
    return {"format": "csv", "manifest": str(root / "l.csv")}, "x.png"


def _dicom_tree(root, outside):
    for k, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for i in range(6):
            write_dicom(root / label / f"{i}.dcm", np.full((16, 16), 100.0 * k + i))
    write_dicom(outside / "x.dcm", np.full((16, 16), 9.0))
    (root / "b" / "x.dcm").symlink_to(outside / "x.dcm")
    return {"format": "dicom", "pseudonymous_paths": False}, "b/x.dcm"  # real paths, to find the link's row


def _dicom_series(root, outside):
    for k in range(6):
        (root / f"s{k}").mkdir(parents=True)
        for i in range(2):
            write_dicom(root / f"s{k}" / f"IM{i}", np.full((16, 16), 50.0 * k + i))
    write_dicom(outside / "x.dcm", np.full((16, 16), 9.0))
    (root / "s0" / "IM9").symlink_to(outside / "x.dcm")
    labels = pd.DataFrame({"path": [f"s{k}" for k in range(6)], "label": ["a", "b"] * 3})
    labels.to_csv(root / "l.csv", index=False)
    return {"format": "dicom", "manifest": str(root / "l.csv"), "pseudonymous_paths": False}, "s0/IM9"


@pytest.mark.parametrize("layout", [_mura, _imagefolder, _csv, _dicom_tree, _dicom_series])
def test_a_link_leaving_root_is_quarantined_by_every_reader(tmp_path, layout):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    fields, link = layout(root, outside)
    table, quarantine = run(tmp_path / "o", entry(root, **fields, max_reject_fraction=0.2))
    assert "outside the data set root" in reason_of(quarantine, link) and len(quarantine) == 1
    assert link not in set(table["path"]) and len(table) >= 12


# --- pixels: too small, invisible, animated, too large ---------------------------------------------------------


def test_tiny_and_invisible_images_are_quarantined_with_reasons(tmp_path):
    root = tmp_path / "root"
    class_folders(root)
    Image.new("L", (1, 1), 128).save(root / "a" / "dot.png")
    Image.fromarray(noise(3, (15, 40))).save(root / "a" / "strip.png")
    Image.new("RGBA", (20, 20), (200, 10, 10, 0)).save(root / "a" / "clear.png")
    Image.new("LA", (20, 20), (90, 0)).save(root / "a" / "clear_grey.png")
    Image.new("P", (20, 20), 0).save(root / "a" / "clear_palette.png", transparency=0)
    partly = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    partly.putpixel((3, 3), (255, 255, 255, 255))
    partly.save(root / "b" / "partly.png")
    table, quarantine = run(tmp_path / "o", entry(root, format="imagefolder", max_reject_fraction=1))
    assert reason_of(quarantine, "a/dot.png") == "image is 1 x 1 pixels, smaller than min_image_side 16"
    assert reason_of(quarantine, "a/strip.png") == "image is 40 x 15 pixels, smaller than min_image_side 16"
    for name in ("clear.png", "clear_grey.png", "clear_palette.png"):
        assert reason_of(quarantine, f"a/{name}").startswith("no visible pixel"), name
    assert len(quarantine) == 5 and "b/partly.png" in set(table["path"])
    table, quarantine = run(tmp_path / "o2", entry(root, format="imagefolder", min_image_side=1, max_reject_fraction=1))
    assert {"a/dot.png", "a/strip.png"} <= set(table["path"]) and len(quarantine) == 3


def test_multi_frame_files_are_quarantined_whichever_reader_finds_them(tmp_path):
    root = tmp_path / "root"
    class_folders(root)
    frames = [Image.fromarray(noise(i)) for i in range(3)]
    frames[0].save(root / "a" / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(root / "a" / "pages.tif", save_all=True, append_images=frames[1:])
    frames[1].save(root / "b" / "still.gif")
    table, quarantine = run(tmp_path / "folder", entry(root, format="imagefolder", max_reject_fraction=1))
    paths = sorted(set(table["path"]) | set(quarantine["path"]))
    pd.DataFrame({"path": paths, "label": [p[0] for p in paths]}).to_csv(root / "labels.csv", index=False)
    listed, listed_q = run(
        tmp_path / "csv", entry(root, format="csv", manifest=str(root / "labels.csv"), max_reject_fraction=1)
    )
    for q in (quarantine, listed_q):
        assert reason_of(q, "a/anim.gif") == "multi-frame image (3 frames, GIF): store one frame per file"
        assert reason_of(q, "a/pages.tif") == "multi-frame image (3 frames, TIFF): store one frame per file"
        assert len(q) == 2
    assert "b/still.gif" in set(table["path"]) and "b/still.gif" in set(listed["path"])


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height 8-bit grey pixels and holds none: PIL's size check happens on open."""
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)), (b"IDAT", zlib.compress(b"\0"))]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def test_decompression_bomb_is_quarantined_naming_the_file(tmp_path):
    root = tmp_path / "root"
    class_folders(root)
    (root / "a" / "huge.png").write_bytes(png_header(20_000, 20_000))
    with pytest.raises(ImageError, match=r"huge\.png: too large to decode safely \(Image size \(400000000 pixels\)"):
        read_image(root / "a" / "huge.png", "xray")
    table, quarantine = run(tmp_path / "o", entry(root, format="imagefolder", max_reject_fraction=0.1))
    assert reason_of(quarantine, "a/huge.png").startswith("too large to decode safely") and len(table) == 12


def test_large_images_decode_at_reduced_size_close_to_the_full_decode(tmp_path, monkeypatch):
    """LARGE_PIXELS lowered so small files take the reduced path (JPEG draft, 16-bit strips + box reduce)."""
    y, x = np.mgrid[0:300, 0:260]
    deep = (40_000 + 80 * x + 60 * np.sin(y / 9.0) * 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    rgb = np.stack([(x + y) % 256, (2 * x) % 256, (y * 3) % 256], axis=-1).astype(np.uint8)[:256, :256]
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=95)
    full = {name: resize(read_image(tmp_path / name, "xray"), 32) for name in ("deep.png", "big.jpg")}
    native = read_image(tmp_path / "deep.png", "xray")[0].astype(np.float64)  # 16 bit scaled min..max exactly
    expected = np.round((deep - deep.min()) / (deep.max() - deep.min()) * 255)
    assert np.array_equal(native, expected)
    monkeypatch.setattr(imaging, "LARGE_PIXELS", 0)
    for name, image in full.items():
        reduced = load_image(tmp_path / name, "xray", [], 32)
        assert reduced.shape == (1, 32, 32)
        assert np.abs(reduced.astype(int) - image.astype(int)).mean() < 3, name
    data = (tmp_path / "big.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg: not a readable image"):
        load_image(tmp_path / "cut.jpg", "xray", [], 32)


# --- names: not UTF-8, hidden and system files -------------------------------------------------------------------


def test_file_name_that_is_not_utf8_is_quarantined_and_fingerprinted(tmp_path):
    root = tmp_path / "root"
    class_folders(root)
    bad = os.path.join(os.fsencode(root / "a"), b"img_\xff.png")
    with open(bad, "wb") as fh:
        fh.write((root / "a" / "0.png").read_bytes())
    table, quarantine = run(tmp_path / "o", entry(root, format="imagefolder", max_reject_fraction=0.1))
    assert reason_of(quarantine, "a/img_\\xff.png").startswith("name is not valid UTF-8") and len(table) == 12
    assert "img_" not in (tmp_path / "o" / "manifest.csv").read_text()
    ds = entry(root, format="imagefolder")
    first = dataset_fingerprint("d", ds, tmp_path / "fp")
    assert dataset_fingerprint("d", ds, tmp_path / "fp") == first  # again, from the sidecar
    with open(bad, "ab") as fh:
        fh.write(b"changed")
    assert dataset_fingerprint("d", ds, tmp_path / "fp") != first


def test_hidden_and_system_files_are_skipped_and_logged_once(tmp_path, caplog):
    root = tmp_path / "root"
    class_folders(root)
    for name in ("Thumbs.db", "README.md", ".DS_Store", "desktop.ini"):
        (root / "a" / name).write_bytes(b"\0\1 not an image")
    (root / "README").write_text("how this set was made")
    (root / "b" / "__MACOSX").mkdir()
    (root / "b" / "__MACOSX" / "0.png").write_bytes(b"resource fork")
    log = logging.getLogger("medxfer.test")
    with caplog.at_level(logging.INFO, logger="medxfer.test"):
        table, quarantine = run(tmp_path / "o", entry(root, format="imagefolder", max_reject_fraction=0), log=log)
    assert len(table) == 12 and quarantine.empty
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith("d: skipped 6 hidden or system files")
    for name in ("a/Thumbs.db", "a/README.md", "a/.DS_Store", "a/desktop.ini", "README", "b/__MACOSX"):
        assert name in skipped[0]
