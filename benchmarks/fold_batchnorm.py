"""Inference speed of a model with its BatchNorms folded (what models.load gives) against the same model unfolded.

The same eval forward pass on the same batch, alternating model by model in one process so load from other processes
hits both alike; medians of the per-pass times count. The ratio (folded images per second / unfolded images per
second) must be >= 1.0, or folding costs time instead of saving it. Also prints the largest difference of the two
models' logits, which must stay at float rounding.

    .venv/bin/python benchmarks/fold_batchnorm.py --arch efficientnet_lite1 --size 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from medxfer import models, runtime
from medxfer.fold import FOLDED, fold_batchnorm

TARGET = 1.0
MAX_LOGIT_DIFFERENCE = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    runtime.configure(args.threads, seed=0)
    device = runtime.select_device(args.device)
    unfolded = models.create(args.arch, 2, args.channels).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    for norm in unfolded.modules():  # statistics away from the identity, as after training
        if isinstance(norm, torch.nn.BatchNorm2d):
            stats = torch.rand(2, norm.num_features, generator=generator)
            norm.running_mean.copy_(stats[0] - 0.5)
            norm.running_var.copy_(stats[1] + 0.5)
    sides = {"folded": fold_batchnorm(unfolded), "unfolded": unfolded}
    shape = (args.batch_size, args.channels, args.size, args.size)
    batch = models.normalize(torch.randint(0, 256, shape, dtype=torch.uint8)).to(device)

    @torch.inference_mode()
    def forward(name: str) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        logits = sides[name](batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, logits

    for name in sides:  # warm-up: allocator, kernel selection
        forward(name)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.passes):
        for name in sides:
            times[name].append(forward(name)[0])
    difference = float((forward("folded")[1] - forward("unfolded")[1]).abs().max())
    per_s = {name: args.batch_size / float(np.median(values)) for name, values in times.items()}
    ratio = per_s["folded"] / per_s["unfolded"]
    print(
        json.dumps(
            {
                "benchmark": "fold_batchnorm",
                "arch": args.arch,
                "size": args.size,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "device": runtime.describe(device),
                "folded_norms": getattr(sides["folded"], FOLDED),
                "folded_images_per_s": round(per_s["folded"], 1),
                "unfolded_images_per_s": round(per_s["unfolded"], 1),
                "ratio": round(ratio, 3),
                "target": TARGET,
                "meets_target": ratio >= TARGET,
                "max_logit_difference": difference,
                "max_logit_difference_ok": difference <= MAX_LOGIT_DIFFERENCE,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
