"""Feature extraction speed: medxfer.features.pooled_features vs a bare forward pass of the same model.

Both run in the same process on the same in-memory images, so the ratio measures only what extraction adds on
top of the network (uint8 -> float, normalisation, pooling, copying features back to numpy). Target: >= 0.9.

    .venv/bin/python benchmarks/extract_throughput.py --arch resnet18 --n 512 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from medxfer import models, runtime
from medxfer.features import pooled_features

TARGET = 0.9


def _best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of `repeats` runs each, interleaved, so load from other processes hits both sides alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--n", type=int, default=512, help="images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    runtime.configure(args.threads, seed=0)
    device = runtime.select_device(args.device)
    model = models.create(args.arch, 2, args.channels).to(device).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n, args.channels, args.size, args.size), dtype=np.uint8)
    # the bare pass gets the images already normalised and on the device: the network's own speed is the limit
    batches = [
        models.normalize(torch.from_numpy(images[i : i + args.batch_size])).to(device)
        for i in range(0, args.n, args.batch_size)
    ]

    @torch.inference_mode()
    def bare() -> None:
        for batch in batches:
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def extract() -> np.ndarray:
        return pooled_features(model, images, device, args.batch_size, stages=1)

    extract(), bare()  # warm-up: allocator, kernels, thread pools
    best = _best_times({"bare": bare, "extract": extract}, args.repeats)
    bare_s, extract_s = best["bare"], best["extract"]
    ratio = bare_s / extract_s
    features = extract()
    print(
        json.dumps(
            {
                "benchmark": "extract_throughput",
                "arch": args.arch,
                "device": runtime.describe(device),
                "threads": args.threads,
                "images": args.n,
                "image_shape": [args.channels, args.size, args.size],
                "batch_size": args.batch_size,
                "feature_dim": int(features.shape[1]),
                "bare_forward_images_per_s": round(args.n / bare_s, 1),
                "pooled_features_images_per_s": round(args.n / extract_s, 1),
                "ratio": round(ratio, 3),
                "target": TARGET,
                "meets_target": bool(ratio >= TARGET),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
