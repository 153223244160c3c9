"""Supervised training shared by pretraining and fine-tuning: one loop, best-on-validation checkpoint, CSV log."""

from __future__ import annotations

import copy
import csv
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from medxfer import models, runtime
from medxfer.augment import augment_batch, build_augment
from medxfer.cache import CachedDataset, Split, load_cached
from medxfer.io import atomic_path, sha256_file, write_json
from medxfer.log import get_logger
from medxfer.metrics import classification_metrics


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, so imbalance does not drown the minority class."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / n_classes
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for uint8 (N, C, H, W) images, in large batches under inference mode."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_device(torch.from_numpy(images[start : start + batch_size]), device)
        with autocast(device):
            logits = model(models.normalize(batch))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _evaluate(model: nn.Module, split: Split, loss_fn: nn.Module, device: torch.device) -> tuple[float, dict]:
    proba = predict_proba(model, split.images, device)
    loss = float(loss_fn(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(split.labels)))
    return loss, classification_metrics(split.labels, proba)


def set_strategy(model: nn.Module, strategy: str) -> None:
    """`full` trains everything; `linear_probe` freezes all but the classifier head."""
    if strategy == "full":
        return
    if strategy != "linear_probe":
        raise ValueError(f"unknown fine-tuning strategy '{strategy}'; allowed: ['full', 'linear_probe']")
    head = models.head_prefix(model) + "."
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(head)


def fit(
    model: nn.Module,
    data: CachedDataset,
    params: Mapping[str, Any],
    device: torch.device,
    log_csv: Path,
    seed: int,
    logger: Any,
) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW + cosine schedule; keep the weights of the epoch with the lowest validation loss."""
    train, val = data.splits["train"], data.splits["val"]
    if len(train.labels) == 0 or len(val.labels) == 0:
        raise ValueError(f"need train and val images; got {len(train.labels)} train, {len(val.labels)} val")
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    n_classes = len(data.classes)
    weights = class_weights(train.labels, n_classes) if params.get("class_weights", True) else None
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None)
    eval_loss = nn.NLLLoss(weight=weights)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params["lr"], weight_decay=params["weight_decay"])
    batch_size = min(params["batch_size"], len(train.labels))
    steps_per_epoch = int(np.ceil(len(train.labels) / batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=params["lr"], total_steps=params["epochs"] * steps_per_epoch, pct_start=0.15
    )
    augment = build_augment(params.get("augment", {}))
    generator = torch.Generator().manual_seed(seed)
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    history, best_loss, best_state = [], float("inf"), None
    for epoch in range(1, params["epochs"] + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total_loss, seen = 0.0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{params['epochs']}",
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        for step in bar:
            index = order[step * batch_size : (step + 1) * batch_size]
            if len(index) < 2:
                continue  # batch norm cannot train on a single image
            batch = augment_batch(images[index].float() / 255.0, augment)
            batch = to_device((batch - models.NORM_MEAN) / models.NORM_STD, device)
            if device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            target = to_device(labels[index], device)
            with autocast(device):
                loss = loss_fn(model(batch).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(index)
            seen += len(index)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        val_loss, val_metrics = _evaluate(model, val, eval_loss, device)
        row = {
            "epoch": epoch,
            "train_loss": total_loss / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_metrics["accuracy"],
            "val_roc_auc": val_metrics["roc_auc"],
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        logger.info(
            "epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_auc %.4f (%.1fs)",
            epoch,
            params["epochs"],
            row["train_loss"],
            val_loss,
            row["val_accuracy"],
            row["val_roc_auc"],
            row["seconds"],
        )
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    with atomic_path(log_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    model.load_state_dict(best_state)
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    logger.info("best epoch %d (val_loss %.4f)", best_epoch, best_loss)
    return model.to(memory_format=torch.contiguous_format), history


def _meta(arch: str, data: CachedDataset, params: Mapping[str, Any], manifest: Path, **extra: Any) -> dict:
    return {
        "arch": arch,
        "classes": data.classes,
        "in_chans": data.in_chans,
        "input_size": [data.in_chans, data.size, data.size],
        "config": dict(params),
        "data_sha256": sha256_file(manifest),
        **extra,
    }


def pretrain_model(
    manifest: Path,
    images: Path,
    arch: str,
    params: Mapping[str, Any],
    out_dir: Path,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
) -> dict:
    """Supervised in-domain pretraining on a labelled source set; writes the checkpoint trio."""
    logger = get_logger(f"medxfer.pretrain.{arch}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = load_cached(manifest, images)
    logger.info(
        "pretraining %s on %s (%d train images, classes %s) on %s with %d threads",
        arch,
        manifest.parent.name,
        len(data.splits["train"].labels),
        data.classes,
        dev,
        threads,
    )
    model = models.create(arch, len(data.classes), data.in_chans)
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger)
    _, test_metrics = (
        _evaluate(model, data.splits["test"], nn.NLLLoss(), dev) if len(data.splits["test"].labels) else (None, {})
    )
    models.save(
        out_dir,
        model,
        _meta(
            arch,
            data,
            params,
            manifest,
            init="scratch",
            stage="pretrain",
            source=manifest.parent.name,
            test_metrics=test_metrics,
        ),
    )
    return test_metrics


def finetune_model(
    manifest: Path,
    images: Path,
    arch: str,
    init: str,
    params: Mapping[str, Any],
    out_dir: Path,
    init_path: Path | None = None,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
) -> dict:
    """Fine-tune from an init on the target set; write the checkpoint trio, test predictions and metrics.json."""
    logger = get_logger(f"medxfer.finetune.{arch}.{init}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = load_cached(manifest, images)
    logger.info(
        "fine-tuning %s (init %s, strategy %s) on %s: %d train / %d val / %d test images on %s",
        arch,
        init,
        params["strategy"],
        manifest.parent.name,
        *(len(s.labels) for s in data.splits.values()),
        dev,
    )
    model = models.create_initialised(arch, len(data.classes), data.in_chans, init, init_path)
    set_strategy(model, params["strategy"])
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger)
    test, val = data.splits["test"], data.splits["val"]
    proba = predict_proba(model, test.images, dev)
    metrics = classification_metrics(test.labels, proba)
    metrics["val"] = classification_metrics(val.labels, predict_proba(model, val.images, dev))
    metrics |= {
        "arch": arch,
        "init": init,
        "strategy": params["strategy"],
        "epochs_trained": len(history),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    write_predictions(out_dir / "predictions.csv", test, proba, data.classes)
    models.save(
        out_dir,
        model,
        _meta(
            arch, data, params, manifest, init=init, stage="finetune", init_path=str(init_path) if init_path else None
        ),
    )
    write_json(out_dir / "metrics.json", metrics)
    logger.info("test metrics: %s", {k: metrics[k] for k in ("accuracy", "f1", "cohen_kappa", "roc_auc")})
    return metrics


def write_predictions(path: Path, split: Split, proba: np.ndarray, classes: list[str]) -> None:
    table = pd.DataFrame(
        {"image_id": split.ids, "study_id": split.studies, "label": split.labels, "prediction": proba.argmax(axis=1)}
    )
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = proba[:, i]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
