"""ONNX export of a bundle's CNNs, and the onnxruntime counterpart of their forward pass.

Each graph takes the images as the bundle's preprocessing makes them (uint8, N x C x H x W, any batch size) and
returns the logits and the pooled features the classifier reads, so normalisation travels inside the graph and a
bundle predicts the same with either runtime. onnx, onnxscript and onnxruntime are the optional `onnx` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.io import atomic_path, sha256_file, write_json

ONNX_DIR = "onnx"
OPSET = 18
INPUT, OUTPUTS = "images", ("logits", "features")


def _wrapped(model: Any, stages: int) -> Any:
    """The CNN with the workflow's normalisation in front and (logits, pooled features) out."""
    import torch

    from medxfer import models
    from medxfer.features import forward_pooled

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats, logits = forward_pooled(self.model, models.normalize(images), stages)
            return logits.float(), feats.float().flatten(1)

    return Exported().eval()


def export_onnx(bundle_path: str | os.PathLike) -> list[Path]:
    """Write onnx/<arch>.onnx for each CNN of the bundle and record them, with their digests, in bundle.json."""
    import torch

    from medxfer import bundle as bundles
    from medxfer import models

    path = Path(bundle_path)
    meta = bundles.verify(path)
    pre, stages = meta["preprocessing"], meta["predictor"]["features_stages"]
    example = torch.zeros((2, pre["channels"], pre["size"], pre["size"]), dtype=torch.uint8)
    written = []
    for arch in meta["predictor"]["cnns"]:
        model, _ = models.load(path / bundles.CNN_DIR / arch, "cpu")
        out = path / ONNX_DIR / f"{arch}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            torch.onnx.export(
                _wrapped(model, stages),
                (example,),
                str(tmp),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
            )
        written.append(out)
    meta["onnx"] = {
        "models": {arch: f"{ONNX_DIR}/{arch}.onnx" for arch in meta["predictor"]["cnns"]},
        "opset": OPSET,
        "input": f"{INPUT}: uint8 (batch, {pre['channels']}, {pre['size']}, {pre['size']})",
        "outputs": list(OUTPUTS),
    }
    meta["files"] |= {str(p.relative_to(path).as_posix()): sha256_file(p) for p in written}
    write_json(path / bundles.META_FILE, meta)
    return written


class OnnxCNN:
    """One exported CNN on onnxruntime (CPU), called like the torch path: logits and features of uint8 images."""

    def __init__(self, file: Path, threads: int = 1) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise RuntimeError("the onnx runtime needs the optional extra: pip install 'medxfer[onnx]'") from err
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = [], []
        for start in range(0, len(images), batch_size):
            out = self.session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(images[start : start + batch_size])})
            logits.append(out[0])
            feats.append(out[1])
        return np.concatenate(logits), np.concatenate(feats)


def onnx_cnns(bundle_path: Path, meta: dict[str, Any], threads: int = 1) -> list[OnnxCNN]:
    """The bundle's exported CNNs (`meta`: its checked bundle.json), in predictor order; an error naming the command
    when none were exported."""
    if "onnx" not in meta:
        raise ValueError(f"{bundle_path}: no ONNX models in this bundle; run `medxfer export-onnx {bundle_path}` first")
    return [OnnxCNN(bundle_path / meta["onnx"]["models"][arch], threads) for arch in meta["predictor"]["cnns"]]
