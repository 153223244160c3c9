"""Training speed: the real input pipeline vs the same training step on synthetic in-memory tensors.

The real side reads a cached uint8 memmap (.npy, as cache_images writes it) through what medxfer.train.fit uses: the
DataLoader of train_loader (sampler, whole-batch fetch) and prepare_batch (per-image augmentation with the schema's
default `augment`, elastic deformation at --elastic probability, normalisation). The reference side feeds already
normalised tensors from memory into the same model, optimizer and step, in the same process. The two alternate batch
by batch, so load from other processes hits both alike, and the medians of the per-batch times count. The ratio
(real / synthetic images per second) is what the pipeline costs on top of the network. Target: >= 0.9.

    .venv/bin/python benchmarks/train_throughput.py --arch resnet10t --size 64 --n 128 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medxfer import config, models, runtime
from medxfer.augment import build_augment
from medxfer.batches import prepare_batch, train_loader
from medxfer.cache import Split
from medxfer.runtime import autocast

TARGET = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--n", type=int, default=128, help="training images per epoch")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per side, alternating batch by batch")
    parser.add_argument("--elastic", type=float, default=0.5, help="elastic deformation probability")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    runtime.configure(args.threads, seed=0)
    device = runtime.select_device(args.device)
    defaults = config.validate(
        {
            "datasets": {"d": {"format": "npz", "root": ".", "file": "d.npz"}},
            "finetune": {"targets": ["d"], "inits": ["scratch"]},
        }
    )
    augment = config.training_params(defaults, "finetune")["augment"] | {"elastic": args.elastic}
    model = models.create(args.arch, 2, args.channels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(batch: torch.Tensor, target: torch.Tensor) -> None:
        batch, target = batch.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with autocast(device):
            loss = loss_fn(model(batch).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rng = np.random.default_rng(0)
    labels = np.arange(args.n, dtype=np.int64) % 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"images_{args.size}.npy"
        cache = np.lib.format.open_memmap(path, "w+", np.uint8, (args.n, args.channels, args.size, args.size))
        cache[:] = rng.integers(0, 256, cache.shape, dtype=np.uint8)
        cache.flush()
        del cache
        images = np.load(path, mmap_mode="r")
        split = Split(images, labels, labels.astype(str), labels.astype(str), labels.astype(str))
        loader = train_loader(
            split,
            torch.from_numpy(labels),
            args.batch_size,
            torch.Generator().manual_seed(0),
            "none",
            device.type == "cuda",
        )
        transform = build_augment(augment)
        synthetic = [
            (
                models.normalize(torch.from_numpy(np.array(images[i : i + args.batch_size]))),
                torch.from_numpy(labels[i : i + args.batch_size]),
            )
            for i in range(0, args.n, args.batch_size)
        ]

        for batch, target in synthetic[:2]:  # warm-up: allocator, kernels
            step(batch, target)
        times: dict[str, list[float]] = {"real": [], "synthetic": [], "input": []}
        for _ in range(args.repeats):
            fetch = iter(loader)
            for reference in synthetic:
                start = time.perf_counter()
                batch, target = next(fetch)
                prepared = prepare_batch(batch, transform, device)
                times["input"].append(time.perf_counter() - start)
                step(prepared, target)
                times["real"].append(time.perf_counter() - start)
                start = time.perf_counter()
                step(*reference)
                times["synthetic"].append(time.perf_counter() - start)
    # medians of per-batch times: robust to bursts of load from other processes on a shared machine
    median = {name: float(np.median(values)) for name, values in times.items()}
    best = {name: args.batch_size / median[name] for name in ("real", "synthetic")}
    ratio = best["real"] / best["synthetic"]
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "arch": args.arch,
                "size": args.size,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "device": runtime.describe(device),
                "augment": augment,
                "input_ms_per_batch": round(median["input"] * 1000, 1),
                "real_images_per_s": round(best["real"], 1),
                "synthetic_images_per_s": round(best["synthetic"], 1),
                "ratio": round(ratio, 3),
                "target": TARGET,
                "meets_target": ratio >= TARGET,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
