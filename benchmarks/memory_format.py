"""Training-step speed of the channels-last layout medxfer uses against the same model and batch in NCHW.

models.create gives channels-last weights and models.normalize channels-last batches, on every device. This measures
why: the same AdamW step on the same model and data in both layouts, alternating step by step in one process so
load from other processes hits both alike; medians of the per-step times count. The ratio (channels-last images per
second / NCHW images per second) must be >= 1.0, or the layout costs time instead of saving it.

    .venv/bin/python benchmarks/memory_format.py --arch efficientnet_lite0 --size 64 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from medxfer import models, runtime

TARGET = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    runtime.configure(args.threads, seed=0)
    device = runtime.select_device(args.device)
    shape = (args.batch_size, args.channels, args.size, args.size)
    batch = models.normalize(torch.randint(0, 256, shape, dtype=torch.uint8)).to(device)
    target = torch.randint(0, 2, (args.batch_size,), device=device)
    channels_last = models.create(args.arch, 2, args.channels).to(device).train()
    sides = {
        "channels_last": (channels_last, batch),
        "nchw": (copy.deepcopy(channels_last).to(memory_format=torch.contiguous_format), batch.contiguous()),
    }
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in sides.items()}

    def step(name: str) -> float:
        model, x = sides[name]
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x).float(), target)
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in sides:  # warm-up: allocator, kernel selection
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.steps):
        for name in sides:
            times[name].append(step(name))
    per_s = {name: args.batch_size / float(np.median(values)) for name, values in times.items()}
    ratio = per_s["channels_last"] / per_s["nchw"]
    print(
        json.dumps(
            {
                "benchmark": "memory_format",
                "arch": args.arch,
                "size": args.size,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "device": runtime.describe(device),
                "channels_last_images_per_s": round(per_s["channels_last"], 1),
                "nchw_images_per_s": round(per_s["nchw"], 1),
                "ratio": round(ratio, 3),
                "target": TARGET,
                "meets_target": ratio >= TARGET,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
