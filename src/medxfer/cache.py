"""Decode and resize every accepted image once into a uint8 .npy that training memory-maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.config import channels
from medxfer.imaging import ImageError, load_image, resize, withheld_note, withheld_warnings
from medxfer.ingest import classes_of, read_manifest
from medxfer.io import atomic_path
from medxfer.log import mark_work_start
from medxfer.privacy import path_id, private_paths, salt_of
from medxfer.readers import READERS
from medxfer.sections import dataset_entry


def image_files(dataset: Mapping[str, Any], paths: Sequence[str]) -> list[Path]:
    """The files behind manifest paths. Pseudonymous paths are found by listing the data set again with its reader
    and hashing each path as ingest did: the way back needs the raw data and the salt, never a file in results/.
    `dataset`: its config entry (keys it leaves out take the schema's defaults)."""
    dataset = dataset_entry(dataset)
    root = Path(dataset["root"])
    if not private_paths(dataset):
        return [root / p for p in paths]
    salt = salt_of(dataset)
    found = READERS[dataset["format"]](root, dataset)
    files = {path_id(row["path"], salt): row["path"] for row in found.rows}
    missing = [p for p in paths if p not in files]
    if missing:
        raise FileNotFoundError(
            f"data set root {root}: {len(missing)} manifest path(s) match no file any more, e.g. {missing[:3]} "
            "(files renamed or moved since ingest, or another privacy salt: ingest again)"
        )
    return [root / files[p] for p in paths]


def cache_images(
    dataset: Mapping[str, Any], manifest_path: Path, out_path: Path, threads: int = 1, log: Any = None
) -> tuple[int, ...]:
    """Write images in manifest order as a (N, C, size, size) uint8 array; decode in parallel over `threads`.
    `dataset`: its config entry, as ingest read it (keys it leaves out take the schema's defaults)."""
    dataset = dataset_entry(dataset)
    if not Path(manifest_path).is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest; ingest the data set first (a failed one leaves none)")
    manifest = read_manifest(manifest_path)
    size, n_channels = dataset["size"], channels(dataset)
    shape = (len(manifest), n_channels, size, size)
    paths = image_files(dataset, list(manifest["path"]))

    def decode(i: int) -> np.ndarray:
        try:
            return load_image(
                paths[i],
                dataset["modality"],
                dataset["windows"],
                size,
                min_side=dataset["min_image_side"],
                assume_rescale=dataset["assume_rescale"],
            )
        except ImageError as err:  # named as the manifest names it: the real path may be private
            name = manifest["path"][i]
            raise ImageError(name, err.reason.replace(str(paths[i]), name)) from None

    mark_work_start()
    with atomic_path(out_path) as tmp, withheld_warnings() as caught:  # once around the pool: not thread-safe
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for i, image in enumerate(pool.map(decode, range(len(paths)), chunksize=32)):
                if image.shape != shape[1:]:
                    raise ValueError(f"{manifest['path'][i]}: decoded to {image.shape}, expected {shape[1:]}")
                array[i] = image
        array.flush()
        del array
    if log is not None and caught:
        log.warning("%s", withheld_note(caught, "decoding the images"))
    if log is not None:
        log.info("cached %d images as %s into %s", shape[0], shape[1:], out_path)
    return shape


@dataclass(frozen=True)
class Split:
    """One split of a cached data set: images stay uint8 until a batch is built."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    studies: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray | None = None  # a finding's box mask per image where the data set gives one, else ''


@dataclass(frozen=True)
class CachedDataset:
    classes: list[str]
    splits: dict[str, Split]

    @property
    def in_chans(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def size(self) -> int:
        return int(self.splits["train"].images.shape[-1])


def load_cached(manifest_path: Path, images_path: Path) -> CachedDataset:
    """Load the cache into memory split by split (small data sets; the cache is uint8)."""
    manifest = read_manifest(manifest_path)
    images = np.load(images_path, mmap_mode="r")
    if images.shape[0] != len(manifest):
        raise ValueError(f"{images_path}: {images.shape[0]} images but {manifest_path} lists {len(manifest)}")
    splits = {}
    for name in ("train", "val", "test"):
        index = np.flatnonzero(manifest["split"].to_numpy() == name)
        part = manifest.iloc[index]
        splits[name] = Split(
            images=np.array(images[index]),  # a writable in-memory copy
            labels=part["label"].to_numpy(np.int64),
            ids=part["image_id"].to_numpy(str),
            studies=part["study_id"].to_numpy(str),
            masks=part["mask"].to_numpy(str),
            boxes=part["box"].to_numpy(str) if "box" in part else None,
        )
    return CachedDataset(classes=classes_of(manifest), splits=splits)


def resized(data: CachedDataset, size: int | None) -> CachedDataset:
    """`data` with every image at `size` x `size`, resampled as the cache resamples (pretraining below the target's
    size costs a fraction of it); `data` itself for None or its own size."""
    if size is None or size == data.size:
        return data
    splits = {}
    for name, split in data.splits.items():
        images = np.empty((0, data.in_chans, size, size), np.uint8)
        if len(split.images):
            images = np.stack([resize(image, size) for image in split.images])
        splits[name] = replace(split, images=images)
    return replace(data, splits=splits)


def pool(datasets: Sequence[CachedDataset], names: Sequence[str]) -> CachedDataset:
    """Several cached data sets as one, e.g. chest and bone radiographs for in-domain pretraining.

    The label space is shared: the union of the class names in order of first appearance, so a class that two sets
    both name (e.g. 'none') is one class. Images keep their data set's split; ids become '<data set>/<id>'.
    """
    if len(datasets) == 1:
        return datasets[0]
    shapes = {name: data.splits["train"].images.shape[1:] for name, data in zip(names, datasets, strict=True)}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"pooled data sets differ in image shape (channels, size, size): {shapes}; give them the same modality (CT "
            "windows) in the config, and the same size or a pretrain.image_size"
        )
    classes: list[str] = []
    for data in datasets:
        classes += [c for c in data.classes if c not in classes]
    splits = {}
    for split in ("train", "val", "test"):
        parts = [data.splits[split] for data in datasets]
        remaps = [np.array([classes.index(c) for c in data.classes], dtype=np.int64) for data in datasets]
        prefix = [np.array([f"{name}/"] * len(part.ids), dtype=str) for name, part in zip(names, parts, strict=True)]
        splits[split] = Split(
            images=np.concatenate([part.images for part in parts]),
            labels=np.concatenate([remap[part.labels] for remap, part in zip(remaps, parts, strict=True)]),
            ids=np.concatenate([np.char.add(p, part.ids.astype(str)) for p, part in zip(prefix, parts, strict=True)]),
            studies=np.concatenate(
                [np.char.add(p, part.studies.astype(str)) for p, part in zip(prefix, parts, strict=True)]
            ),
            masks=np.concatenate([part.masks for part in parts]),
            boxes=np.concatenate([np.full(len(p.ids), "") if p.boxes is None else p.boxes for p in parts]),
        )
    return CachedDataset(classes=classes, splits=splits)
