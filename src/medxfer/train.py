"""Training shared by pretraining and fine-tuning: one loop for every objective (medxfer.objectives), the
best-on-validation checkpoint, early stopping, a CSV log and the per-epoch resume state (medxfer.resume).

Batches come from medxfer.batches."""

from __future__ import annotations

import copy
import csv
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from medxfer import models, runtime
from medxfer.batches import prepare_batch, train_loader
from medxfer.cache import CachedDataset, Split, load_cached, pool, resized
from medxfer.calibration import N_BINS, calibration_report, fit_temperature
from medxfer.identity import identity
from medxfer.inference import predict_logits, softmax_proba
from medxfer.io import atomic_path, sha256_bytes, sha256_file, write_json
from medxfer.log import get_logger, mark_work_start
from medxfer.metrics import choose_threshold, classification_metrics
from medxfer.objectives import MaskGuided, MultiLabel, SimCLR, Supervised
from medxfer.plots import plot_reliability
from medxfer.prediction_files import write_predictions
from medxfer.resume import clear_resume, load_resume, resume_fingerprint, save_resume
from medxfer.runtime import autocast
from medxfer.sections import DecisionSection, FinetuneTraining, PretrainTraining, Training

STRATEGIES = ("full", "linear_probe", "truncated")


def set_strategy(model: nn.Module, strategy: str) -> None:
    """`full` and `truncated` train everything (truncation happens when the model is built); `linear_probe`
    freezes all but the classifier head."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fine-tuning strategy '{strategy}'; allowed: {list(STRATEGIES)}")
    head = models.head_prefix(model) + "."
    for name, param in model.named_parameters():
        param.requires_grad = strategy != "linear_probe" or name.startswith(head)


# --- the loop --------------------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, extra: nn.Module, params: Training) -> list[dict]:
    """The new head (and SimCLR projector) at `lr`, the (pretrained) backbone at `lr * backbone_lr_mult`."""
    head = models.head_prefix(model) + "."
    named = list(model.named_parameters())
    backbone = [p for n, p in named if not n.startswith(head)]
    new = [p for n, p in named if n.startswith(head)] + list(extra.parameters())
    lr = params.lr
    groups = [{"params": backbone, "lr": lr * params.backbone_lr_mult}, {"params": new, "lr": lr}]
    return [g for g in groups if g["params"]]


def _scheduler(optimizer: torch.optim.Optimizer, params: Training, total_steps: int) -> Any:
    kind = params.schedule
    if kind == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=0.15)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise ValueError(f"unknown schedule '{kind}'; allowed: ['onecycle', 'cosine']")


def _freeze_for_epoch(model: nn.Module, trainable: Mapping[str, bool], epoch: int, unfreeze_epoch: int | None) -> None:
    """Gradual unfreezing: before `unfreeze_epoch` only the head trains; the strategy's own freezing always holds.
    Batch norms whose parameters are all frozen keep their running statistics (eval mode)."""
    head = models.head_prefix(model) + "."
    warmup = unfreeze_epoch is not None and epoch < unfreeze_epoch
    for name, param in model.named_parameters():
        param.requires_grad = trainable[name] and (name.startswith(head) or not warmup)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and own and not any(p.requires_grad for p in own):
            module.eval()


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    desc: str,
) -> float:
    """One pass over the training batches, a scheduler step per batch; the mean training loss per image."""
    total_loss, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty())
    for images, target, *masks in bar:  # masks: only for an objective that reads them (MaskGuided)
        inputs = prepare_batch(images, objective.augment, device, objective.views, *masks)
        batch, *moved = inputs if masks else (inputs,)
        with autocast(device):
            loss = objective.loss(model, batch, target.to(device, non_blocking=True), *moved)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(batch)
        seen += len(batch)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return total_loss / max(seen, 1)


def _end_epoch(state: dict, row: dict, model: nn.Module, patience: int | None, epochs: int, logger: Any) -> None:
    """Log the epoch, keep the weights if validation loss improved, and decide on early stopping."""
    epoch, val_loss = row["epoch"], row["val_loss"]
    state["history"].append(row)
    logger.info(
        "epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_auc %.4f (%.1fs)",
        epoch,
        epochs,
        row["train_loss"],
        val_loss,
        row["val_accuracy"],
        row["val_roc_auc"],
        row["seconds"],
    )
    if val_loss < state["best_loss"]:
        state |= {"best_loss": val_loss, "best_state": copy.deepcopy(model.state_dict()), "bad_epochs": 0}
    else:
        state["bad_epochs"] += 1
    if patience is not None and state["bad_epochs"] >= patience and epoch < epochs:
        logger.info("early stop: no better val_loss for %d epochs", patience)
        state["stopped"] = True
    state["epoch"] = epoch


def _write_log(log_csv: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch rows as CSV, replaced atomically."""
    with atomic_path(log_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def fit(
    model: nn.Module,
    data: CachedDataset,
    params: Training,
    device: torch.device,
    log_csv: Path,
    seed: int,
    logger: Any,
    objective: Any = None,
    resume_dir: Path | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW + one-cycle or cosine schedule; keep the weights of the epoch with the lowest validation
    loss; stop after `patience` epochs without improvement. One loop on purpose: resume must restore exactly the
    state this function holds between epochs, which is easiest to check when it all sits here.

    With `resume_dir`, the complete state (weights, optimizer, scheduler, RNGs, best-so-far, log) is written there
    atomically after every epoch, and a later call with the same model, data, settings and seed continues after the
    last completed epoch: on CPU it ends with the same weights, bit for bit, as a run that was never interrupted.
    `on_epoch_end(epoch)` runs after that state is written.
    """
    # Setup stays inline: bit-for-bit determinism (and resume) depend on the order in which the optimizer, scheduler
    # and generator are created and draw.
    train, val = data.splits["train"], data.splits["val"]
    if len(train.labels) == 0 or len(val.labels) == 0:
        raise ValueError(f"need train and val images; got {len(train.labels)} train, {len(val.labels)} val")
    if objective is None:
        objective = MaskGuided(data, params, model) if params.mask_guidance > 0 else Supervised(data, params)
    fingerprint = resume_fingerprint(model, data, params.as_dict(), seed) if resume_dir is not None else ""
    model, extra = model.to(device), objective.extra.to(device)
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(_param_groups(model, extra, params), weight_decay=params.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    targets, pin = objective.targets(train), device.type == "cuda"
    loader = train_loader(train, targets, params.batch_size, generator, params.imbalance, pin, objective.masks)
    if objective.masks is not None:
        drawn = int(objective.masks.flatten(1).any(dim=1).sum())
        logger.info("mask guidance %g on the %d training images with a finding mask", params.mask_guidance, drawn)
    scheduler = _scheduler(optimizer, params, params.epochs * len(loader))
    state = {"epoch": 0, "history": [], "best_loss": float("inf"), "best_state": None, "bad_epochs": 0}
    state["stopped"] = False
    resumed = load_resume(resume_dir, fingerprint, model, extra, optimizer, scheduler, generator, device, logger)
    state |= resumed or {}
    mark_work_start()
    for epoch in range(state["epoch"] + 1, params.epochs + 1):
        if state["stopped"]:
            break
        row = _run_epoch(epoch, model, extra, trainable, loader, objective, optimizer, scheduler, val, device, params)
        _end_epoch(state, row, model, params.patience, params.epochs, logger)
        if resume_dir is not None:
            save_resume(resume_dir, fingerprint, state, model, extra, optimizer, scheduler, generator, device)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    history = _restore_best(model, state, log_csv, logger)
    return model.to(memory_format=torch.contiguous_format), history


def _run_epoch(
    epoch: int,
    model: nn.Module,
    extra: nn.Module,
    trainable: Mapping[str, bool],
    loader: DataLoader,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    val: Split,
    device: torch.device,
    params: Training,
) -> dict[str, Any]:
    """Train one epoch, then score val; the row log.csv and early stopping read."""
    started = time.perf_counter()
    model.train()
    extra.train()
    _freeze_for_epoch(model, trainable, epoch, params.unfreeze_epoch)
    desc = f"epoch {epoch}/{params.epochs}"
    train_loss = _train_epoch(model, loader, objective, optimizer, scheduler, device, desc)
    val_loss, val_metrics = objective.evaluate(model, val, device)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": val_metrics["accuracy"],
        "val_roc_auc": val_metrics["roc_auc"],
        "lr": scheduler.get_last_lr()[-1],
        "seconds": time.perf_counter() - started,
    }


def _restore_best(model: nn.Module, state: Mapping[str, Any], log_csv: Path, logger: Any) -> list[dict]:
    """Write log.csv, then load the weights of the best validation epoch; the log comes first so that a run that
    diverged still leaves its per-epoch losses to look at."""
    history = state["history"]
    _write_log(log_csv, history)
    if state["best_state"] is None:
        raise ValueError(f"validation loss was never finite ({[r['val_loss'] for r in history]}): training diverged")
    model.load_state_dict(state["best_state"])
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    logger.info("best epoch %d (val_loss %.4f)", best_epoch, state["best_loss"])
    return history


# --- stages ----------------------------------------------------------------------------------------------------


def _meta(arch: str, data: CachedDataset, params: Training, data_sha256: str, **extra: Any) -> dict:
    """What the checkpoint's model.json records, so a reader can rebuild the model and trace its data and settings."""
    return {
        "arch": arch,
        "classes": data.classes,
        "in_chans": data.in_chans,
        "input_size": [data.in_chans, data.size, data.size],
        "config": params.as_dict(),
        "data_sha256": data_sha256,
        **extra,
    }


def _as_list(value: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, str | Path) else [Path(v) for v in value]


def _pretrain_objective(
    kind: str, data: CachedDataset, params: PretrainTraining, arch: str, seed: int, source: str
) -> tuple[Any, nn.Module]:
    """The objective and the freshly initialised model it trains (in this order of random draws)."""
    if kind == "simclr":
        model = models.create(arch, 0, data.in_chans)
        return SimCLR(data, params, getattr(model, "head_hidden_size", model.num_features), seed), model
    if params.multilabel:
        objective = MultiLabel(data, params)
        return objective, models.create(arch, len(objective.classes), data.in_chans)
    if len(data.classes) < 2:
        raise ValueError(
            f"{source}: supervised pretraining needs at least two classes, found {data.classes}; "
            "use pretrain.objective simclr for unlabeled images"
        )
    objective = Supervised(data, params)
    return objective, models.create(arch, len(data.classes), data.in_chans)


def pretrain_model(
    manifest: Path | Sequence[Path],
    images: Path | Sequence[Path],
    arch: str,
    params: PretrainTraining,
    out_dir: Path,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
    resume_dir: Path | None = None,
    resume_root: Path | None = None,
    init_path: Path | None = None,
) -> dict:
    """In-domain pretraining on one or several (pooled) source sets; writes the checkpoint trio.

    `objective: supervised` trains on the labels (`multilabel: true`: each ';'-joined label its own sigmoid);
    `simclr` ignores labels and saves the backbone without a head (the projection head is dropped).
    `init_path`: an ImageNet weights file to start the backbone from (`pretrain.init: imagenet`), else scratch.
    `resume_dir`: per-epoch state for a re-run after a kill; removed when done (see `clear_resume` for `resume_root`).
    """
    manifests, caches = _as_list(manifest), _as_list(images)
    names = [m.parent.name for m in manifests]
    logger = get_logger(f"medxfer.pretrain.{arch}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = pool([resized(load_cached(m, i), params.image_size) for m, i in zip(manifests, caches, strict=True)], names)
    kind = params.objective
    init = "scratch" if init_path is None else "imagenet"
    logger.info(
        "pretraining %s (%s, from %s) on %s (%d train images at %d px%s, classes %s) on %s",
        arch,
        kind,
        init,
        "+".join(names),
        len(data.splits["train"].labels),
        data.size,
        f" in {params.view_size} px windows" if params.view_size else "",
        data.classes,
        runtime.describe(dev),
    )
    objective, model = _pretrain_objective(kind, data, params, arch, seed, "+".join(names))
    models.initialise(model, arch, init, init_path)
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger, objective, resume_dir)
    test = data.splits["test"]
    test_metrics = objective.evaluate(model, test, dev)[1] if len(test.labels) else {}
    digests = [sha256_file(m) for m in manifests]
    meta = _meta(arch, data, params, digests[0] if len(digests) == 1 else sha256_bytes("".join(digests).encode()))
    meta |= {
        "classes": objective.classes,
        "objective": kind,
        "multilabel": isinstance(objective, MultiLabel),
        "init": init,
        "init_path": str(init_path) if init_path else None,
        "stage": "pretrain",
        "source": "+".join(names),
        "test_metrics": test_metrics,
    }
    models.save(out_dir, model, meta)
    clear_resume(resume_dir, resume_root)
    return test_metrics


def finetune_model(
    manifest: Path,
    images: Path,
    arch: str,
    init: str,
    params: FinetuneTraining,
    out_dir: Path,
    *,
    decision: DecisionSection,
    init_path: Path | None = None,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
    resume_dir: Path | None = None,
    resume_root: Path | None = None,
    target: str | None = None,
    run: str | None = None,
    ordinal: bool = False,
) -> dict:
    """Fine-tune from an init on the target set; write the checkpoint trio, test predictions and metrics.json.
    Long for its parameters: the job's whole sequence (init, fit, threshold on val, one look at test) stays in view.

    `decision` (the config's section): argmax, or the metric whose best binary threshold is chosen on the val split
    (never on test).
    `target` (default: the manifest's folder, as ingest names it) and `run` (the seed replicate's name, default
    `init`) go into the identity model.json and metrics.json carry (medxfer.identity).
    `resume_dir`: per-epoch state for a re-run after a kill; removed when done (see `clear_resume` for `resume_root`).
    `ordinal`: the target's classes are grades (its data set says so): graded metrics; `params.head` may be ordinal.
    """
    # Long because it is the whole stage in order (build, fit, choose the decision on val, score test, write the
    # outputs), and each step feeds the records the next writes.
    logger = get_logger(f"medxfer.finetune.{arch}.{init}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = load_cached(manifest, images)
    strategy = params.strategy
    logger.info(
        "fine-tuning %s (init %s, strategy %s) on %s: %d train / %d val / %d test images on %s",
        arch,
        init,
        strategy,
        manifest.parent.name,
        *(len(s.labels) for s in data.splits.values()),
        runtime.describe(dev),
    )
    truncate = params.truncate_stages if strategy == "truncated" else None
    if params.tta and params.augment["hflip"] == 0:
        raise ValueError(f"{manifest}: tta mirrors images, but this target's augmentation never flips them (hflip 0)")
    if params.head == "ordinal" and not ordinal:
        raise ValueError(f"{manifest}: head 'ordinal' needs graded labels; its data set does not say 'ordinal: true'")
    model = models.create_initialised(
        arch, len(data.classes), data.in_chans, init, init_path, truncate, params.head, params.output_stride
    )
    set_strategy(model, strategy)
    logger.info(
        "%s: %d parameters (truncate_stages %s, output_stride %d)",
        arch,
        models.num_parameters(model),
        truncate,
        params.output_stride,
    )
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger, None, resume_dir)
    test, val = data.splits["test"], data.splits["val"]
    logits, val_logits = (predict_logits(model, s.images, dev, mirror=params.tta) for s in (test, val))
    proba, val_proba = softmax_proba(logits), softmax_proba(val_logits)
    temperature = fit_temperature(val_logits.numpy(), val.labels)
    rule = decision.threshold
    threshold = None if rule == "argmax" else choose_threshold(val.labels, val_proba, rule)
    metrics = classification_metrics(test.labels, proba, threshold, ordinal)
    metrics["val"] = classification_metrics(val.labels, val_proba, threshold, ordinal)
    ident = identity(target or manifest.parent.name, init, seed, run, features=arch, classifier="cnn")
    metrics |= {
        "identity": ident,
        "decision": _decision_record(rule, threshold),
        "arch": arch,
        "init": init,
        "strategy": strategy,
        "head": params.head,
        "tta": params.tta,
        "truncate_stages": truncate,
        "output_stride": params.output_stride,
        "epochs_trained": len(history),
        "best_epoch": min(history, key=lambda r: r["val_loss"])["epoch"],
        "num_parameters": models.num_parameters(model),
        "calibration": {
            "temperature": temperature,
            "fitted_on": "val",
            "n_bins": N_BINS,
            **{
                name: calibration_report(split.labels, z.numpy(), temperature)
                for name, z, split in (("test", logits, test), ("val", val_logits, val))
            },
        },
    }
    test_arrays = {"ids_test": test.ids, "study_test": test.studies, "y_test": test.labels, "classes": data.classes}
    write_predictions(out_dir / "predictions.csv", test_arrays, proba, threshold)
    meta = _meta(arch, data, params, sha256_file(manifest), init=init, stage="finetune", ordinal=ordinal)
    meta |= {"init_path": str(init_path) if init_path else None, "decision": metrics["decision"], "identity": ident}
    meta["calibration"] = {"temperature": temperature, "fitted_on": "val"}  # readers may scale the logits by it
    models.save(out_dir, model, meta)  # the decision travels with the model: its readers predict as it was scored
    write_json(out_dir / "metrics.json", metrics)
    title = f"{arch} ({ident['run']}) on {ident['target']}: test"
    plot_reliability(metrics["calibration"]["test"], f"T = {temperature:.2f}", out_dir / "reliability.png", title)
    clear_resume(resume_dir, resume_root)
    logger.info("test metrics: %s", {k: metrics[k] for k in ("accuracy", "f1", "cohen_kappa", "roc_auc")})
    return metrics


def _decision_record(rule: str, threshold: float | None) -> dict[str, Any]:
    """What metrics.json says about the decision: the rule, the cut-off, where it was chosen, or why argmax."""
    if threshold is not None:
        return {"rule": rule, "threshold": threshold, "chosen_on": "val"}
    if rule == "argmax":
        return {"rule": rule, "threshold": None}
    return {"rule": rule, "threshold": None, "skipped": "multi-class, or a class missing from the val split: argmax"}
