"""Training shared by pretraining and fine-tuning: one loop for supervised, multi-label and SimCLR objectives,
best-on-validation checkpoint, early stopping, CSV log, and a per-epoch resume state that survives a killed job."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler
from tqdm import tqdm

from medxfer import models, runtime
from medxfer.augment import BatchAugment, build_augment
from medxfer.cache import CachedDataset, Split, load_cached, pool
from medxfer.identity import identity
from medxfer.inference import predict_logits, predict_proba
from medxfer.ingest import NO_LABEL
from medxfer.io import atomic_path, sha256_bytes, sha256_file, write_json
from medxfer.log import get_logger, mark_work_start
from medxfer.metrics import choose_threshold, classification_metrics, write_predictions
from medxfer.runtime import autocast

STRATEGIES = ("full", "linear_probe", "truncated")
RESUME_FILE = "state.pt"


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, so imbalance does not drown the minority class."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / n_classes
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def set_strategy(model: nn.Module, strategy: str) -> None:
    """`full` and `truncated` train everything (truncation happens when the model is built); `linear_probe`
    freezes all but the classifier head."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fine-tuning strategy '{strategy}'; allowed: {list(STRATEGIES)}")
    head = models.head_prefix(model) + "."
    for name, param in model.named_parameters():
        param.requires_grad = strategy != "linear_probe" or name.startswith(head)


def label_sets(classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Multi-label view of label-set classes ('a;b'): the single labels and a (classes, labels) 0/1 matrix."""
    names: list[str] = []
    for cls in classes:
        names += [p for p in cls.split(";") if p != NO_LABEL and p not in names]
    matrix = np.zeros((len(classes), len(names)), dtype=np.float32)
    for i, cls in enumerate(classes):
        for part in cls.split(";"):
            if part in names:
                matrix[i, names.index(part)] = 1.0
    return names, matrix


# --- objectives: what a step minimises and how validation scores it -------------------------------------------


class Supervised:
    """Single-label classification: cross-entropy, class-weighted when `imbalance` is `weighted_loss`."""

    views = 1

    def __init__(self, data: CachedDataset, params: Mapping[str, Any]) -> None:
        self.classes = list(data.classes)
        weighted = params.get("imbalance", "weighted_loss") == "weighted_loss"
        self.weights = class_weights(data.splits["train"].labels, len(self.classes)) if weighted else None
        self.extra = nn.Module()

    def targets(self, split: Split) -> torch.Tensor:
        return torch.tensor(split.labels)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.weights.to(x.device) if self.weights is not None else None
        return nn.functional.cross_entropy(model(x).float(), y, weight=weight)

    def evaluate(self, model: nn.Module, split: Split, device: torch.device) -> tuple[float, dict]:
        logits = predict_logits(model, split.images, device)
        loss = float(nn.functional.cross_entropy(logits, self.targets(split), weight=self.weights))
        return loss, classification_metrics(split.labels, torch.softmax(logits, dim=1).numpy())


class MultiLabel(Supervised):
    """Multi-label classification (label sets 'a;b'): one sigmoid per label, BCE with logits; `weighted_loss`
    weighs each label's positives by its negative/positive ratio."""

    def __init__(self, data: CachedDataset, params: Mapping[str, Any]) -> None:
        self.classes, self.matrix = label_sets(data.classes)
        if not self.classes:
            raise ValueError(f"multi-label training needs labels other than '{NO_LABEL}'; classes: {data.classes}")
        train = self.matrix[data.splits["train"].labels]
        positives = train.sum(axis=0)
        weighted = params.get("imbalance", "weighted_loss") == "weighted_loss"
        self.pos_weight = torch.tensor((len(train) - positives) / np.maximum(positives, 1)) if weighted else None
        self.extra = nn.Module()

    def targets(self, split: Split) -> torch.Tensor:
        return torch.from_numpy(self.matrix[split.labels])

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pos_weight = self.pos_weight.to(x.device) if self.pos_weight is not None else None
        return nn.functional.binary_cross_entropy_with_logits(model(x).float(), y, pos_weight=pos_weight)

    def evaluate(self, model: nn.Module, split: Split, device: torch.device) -> tuple[float, dict]:
        logits, target = predict_logits(model, split.images, device), self.targets(split)
        loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight))
        proba, truth = torch.sigmoid(logits).numpy(), target.numpy()
        scorable = [k for k in range(truth.shape[1]) if 0 < truth[:, k].sum() < len(truth)]
        from sklearn.metrics import roc_auc_score  # multi-label only: the other jobs need no sklearn

        auc = float(np.mean([roc_auc_score(truth[:, k], proba[:, k]) for k in scorable])) if scorable else np.nan
        return loss, {"accuracy": float(((proba > 0.5) == truth).mean()), "roc_auc": auc, "labels": self.classes}


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's normalised-temperature cross-entropy over 2B views; also the share of views whose nearest other
    view is their own pair (contrastive accuracy)."""
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target), (sim.argmax(dim=1) == target).float().mean()


class SimCLR:
    """Self-supervised contrastive pretraining (Chen et al. 2020): two augmented views of each image, a small MLP
    projection head (trained here, not saved) and the NT-Xent loss. Labels are not used, so unlabeled images
    give an in-domain checkpoint."""

    views = 2

    def __init__(self, data: CachedDataset, params: Mapping[str, Any], num_features: int, seed: int) -> None:
        dim = params.get("projection_dim", 128)
        self.extra = nn.Sequential(nn.Linear(num_features, num_features), nn.ReLU(), nn.Linear(num_features, dim))
        self.temperature = params.get("temperature", 0.2)
        self.augment = build_augment(params.get("augment", {}))
        self.seed, self.classes = seed, []

    def targets(self, split: Split) -> torch.Tensor:
        return torch.zeros(len(split.labels))

    def _pairs(self, model: nn.Module, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.extra(model(views.flatten(0, 1).contiguous(memory_format=torch.channels_last)).float())
        z = z.view(len(views), 2, -1)
        return nt_xent(z[:, 0], z[:, 1], self.temperature)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._pairs(model, x)[0]

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, split: Split, device: torch.device) -> tuple[float, dict]:
        """NT-Xent on views drawn with a fixed seed, so epochs compare on the same pairs and the training RNG is
        left as it was."""
        model.eval()
        self.extra.eval()
        losses, accs = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for start in range(0, len(split.images), 256):
                images = torch.from_numpy(split.images[start : start + 256])
                with autocast(device):
                    loss, acc = self._pairs(model, prepare_batch(images, self.augment, device, views=2))
                losses.append(float(loss) * len(images))
                accs.append(float(acc) * len(images))
        n = max(len(split.images), 1)
        return sum(losses) / n, {"accuracy": sum(accs) / n, "roc_auc": float("nan")}


# --- data ------------------------------------------------------------------------------------------------------


class CachedImages(Dataset):
    """uint8 images (an in-memory array or a memmap) with their targets, fetched a whole batch at a time (one fancy
    index instead of one call per image); augmentation happens afterwards on the batch (see `prepare_batch`)."""

    def __init__(self, images: np.ndarray, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.images[index])), self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices)
        return torch.from_numpy(np.asarray(self.images[index])), self.targets[torch.from_numpy(index)]


def _whole_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch  # __getitems__ already returns the stacked batch


def train_loader(
    split: Split,
    targets: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    imbalance: str = "none",
    pin_memory: bool = False,
) -> DataLoader:
    """uint8 batches, shuffled (or, with `weighted_sampler`, class-balanced with replacement) from `generator`.

    A last batch of one image is dropped: batch norm cannot train on it.
    """
    dataset = CachedImages(split.images, targets)
    if imbalance == "weighted_sampler":
        per_class = class_weights(split.labels, int(split.labels.max()) + 1)
        sampler = WeightedRandomSampler(per_class[split.labels].double(), len(dataset), generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    batch_size = min(batch_size, len(dataset))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,
        collate_fn=_whole_batch,
        pin_memory=pin_memory,
        drop_last=len(dataset) % batch_size == 1,
    )


def prepare_batch(images: torch.Tensor, augment: BatchAugment, device: torch.device, views: int = 1) -> torch.Tensor:
    """uint8 (B, C, H, W) -> on `device`, augmented per image, normalised; `views=2` stacks two independent
    augmentations of each image as (B, 2, C, H, W) (SimCLR). On CUDA the augmentation runs on the GPU."""
    batch = images.to(device, non_blocking=True).float() / 255.0
    if views == 1:
        return models.standardize(augment(batch))
    return torch.stack([models.standardize(augment(batch)) for _ in range(views)], dim=1)


# --- the loop --------------------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, extra: nn.Module, params: Mapping[str, Any]) -> list[dict]:
    """The new head (and SimCLR projector) at `lr`, the (pretrained) backbone at `lr * backbone_lr_mult`."""
    head = models.head_prefix(model) + "."
    named = list(model.named_parameters())
    backbone = [p for n, p in named if not n.startswith(head)]
    new = [p for n, p in named if n.startswith(head)] + list(extra.parameters())
    lr = params["lr"]
    groups = [{"params": backbone, "lr": lr * params.get("backbone_lr_mult", 1.0)}, {"params": new, "lr": lr}]
    return [g for g in groups if g["params"]]


def _scheduler(optimizer: torch.optim.Optimizer, params: Mapping[str, Any], total_steps: int) -> Any:
    kind = params.get("schedule", "onecycle")
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


def _fingerprint(model: nn.Module, data: CachedDataset, params: Mapping[str, Any], seed: int) -> str:
    """What a resume state must match: settings, seed, the initial weights and the training data."""
    digest = hashlib.sha256(json.dumps({"params": params, "seed": seed}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    train = data.splits["train"]
    digest.update(np.ascontiguousarray(train.images).tobytes())
    digest.update(train.labels.tobytes())
    return digest.hexdigest()


def fit(
    model: nn.Module,
    data: CachedDataset,
    params: Mapping[str, Any],
    device: torch.device,
    log_csv: Path,
    seed: int,
    logger: Any,
    objective: Any = None,
    resume_dir: Path | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW + one-cycle or cosine schedule; keep the weights of the epoch with the lowest validation
    loss; stop after `patience` epochs without improvement.

    With `resume_dir`, the complete state (weights, optimizer, scheduler, RNGs, best-so-far, log) is written there
    atomically after every epoch, and a later call with the same model, data, settings and seed continues after the
    last completed epoch: on CPU it ends with the same weights, bit for bit, as a run that was never interrupted.
    `on_epoch_end(epoch)` runs after that state is written.
    """
    train, val = data.splits["train"], data.splits["val"]
    if len(train.labels) == 0 or len(val.labels) == 0:
        raise ValueError(f"need train and val images; got {len(train.labels)} train, {len(val.labels)} val")
    objective = objective or Supervised(data, params)
    fingerprint = _fingerprint(model, data, params, seed) if resume_dir is not None else ""
    model, extra = model.to(device), objective.extra.to(device)
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(_param_groups(model, extra, params), weight_decay=params["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    imbalance = params.get("imbalance", "weighted_loss")
    augment = build_augment(params.get("augment", {}))
    loader = train_loader(
        train, objective.targets(train), params["batch_size"], generator, imbalance, device.type == "cuda"
    )
    scheduler = _scheduler(optimizer, params, params["epochs"] * len(loader))
    state = {"epoch": 0, "history": [], "best_loss": float("inf"), "best_state": None, "bad_epochs": 0}
    state["stopped"] = False
    resumed = _load_resume(resume_dir, fingerprint, model, extra, optimizer, scheduler, generator, device, logger)
    state |= resumed or {}
    patience, unfreeze = params.get("patience"), params.get("unfreeze_epoch")
    mark_work_start()
    for epoch in range(state["epoch"] + 1, params["epochs"] + 1):
        if state["stopped"]:
            break
        started = time.perf_counter()
        model.train()
        extra.train()
        _freeze_for_epoch(model, trainable, epoch, unfreeze)
        total_loss, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{params['epochs']}", leave=False, disable=not sys.stderr.isatty())
        for images, target in bar:
            batch = prepare_batch(images, augment, device, objective.views)
            with autocast(device):
                loss = objective.loss(model, batch, target.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        val_loss, val_metrics = objective.evaluate(model, val, device)
        row = {
            "epoch": epoch,
            "train_loss": total_loss / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_metrics["accuracy"],
            "val_roc_auc": val_metrics["roc_auc"],
            "lr": scheduler.get_last_lr()[-1],
            "seconds": time.perf_counter() - started,
        }
        state["history"].append(row)
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
        if val_loss < state["best_loss"]:
            state |= {"best_loss": val_loss, "best_state": copy.deepcopy(model.state_dict()), "bad_epochs": 0}
        else:
            state["bad_epochs"] += 1
        if patience is not None and state["bad_epochs"] >= patience and epoch < params["epochs"]:
            logger.info("early stop: no better val_loss for %d epochs", patience)
            state["stopped"] = True
        state["epoch"] = epoch
        if resume_dir is not None:
            _save_resume(resume_dir, fingerprint, state, model, extra, optimizer, scheduler, generator, device)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    history = state["history"]
    with atomic_path(log_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    if state["best_state"] is None:
        raise ValueError(f"validation loss was never finite ({[r['val_loss'] for r in history]}): training diverged")
    model.load_state_dict(state["best_state"])
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    logger.info("best epoch %d (val_loss %.4f)", best_epoch, state["best_loss"])
    return model.to(memory_format=torch.contiguous_format), history


def _save_resume(
    resume_dir: Path,
    fingerprint: str,
    state: Mapping[str, Any],
    model: nn.Module,
    extra: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """One file, replaced atomically: tensors, numbers, strings and containers only (loads with weights_only)."""
    payload = {
        "fingerprint": fingerprint,
        **{k: state[k] for k in ("epoch", "history", "best_loss", "best_state", "bad_epochs", "stopped")},
        "model": model.state_dict(),
        "extra": extra.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generator": generator.get_state(),
    }
    with atomic_path(Path(resume_dir) / RESUME_FILE) as tmp:
        torch.save(payload, tmp)


def _load_resume(
    resume_dir: Path | None,
    fingerprint: str,
    model: nn.Module,
    extra: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
    logger: Any,
) -> dict | None:
    """Restore a resume state written by this same run (same fingerprint); anything else is ignored."""
    path = Path(resume_dir) / RESUME_FILE if resume_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged state only costs the epochs it held
        logger.warning("%s: unreadable resume state (%s); starting from epoch 1", path, err)
        return None
    if payload.get("fingerprint") != fingerprint:
        logger.warning("%s: resume state of another run (settings, data or init differ); starting from epoch 1", path)
        return None
    model.load_state_dict(payload["model"])
    extra.load_state_dict(payload["extra"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng_cpu"])
    if device.type == "cuda" and payload["rng_cuda"] is not None:
        torch.cuda.set_rng_state(payload["rng_cuda"], device)
    generator.set_state(payload["generator"])
    logger.info("resuming from %s after epoch %d", path, payload["epoch"])
    return {k: payload[k] for k in ("epoch", "history", "best_loss", "best_state", "bad_epochs", "stopped")}


def clear_resume(resume_dir: Path | None, root: Path | None = None) -> None:
    """Remove a finished run's resume state (after its outputs are written) and each folder above it, up to and
    including `root` (the folder of all runs' states), that this leaves empty: the last run leaves no empty tree.
    """
    if resume_dir is None:
        return
    resume_dir = Path(resume_dir).resolve()
    if resume_dir.exists():
        shutil.rmtree(resume_dir)
    if root is None:
        return
    root = Path(root).resolve()
    for folder in resume_dir.parents:
        if folder != root and root not in folder.parents:
            break
        try:
            folder.rmdir()  # only if empty, so a sibling run's state (being written now, too) stays
        except OSError:
            break
        if folder == root:
            break


# --- stages ----------------------------------------------------------------------------------------------------


def _meta(arch: str, data: CachedDataset, params: Mapping[str, Any], data_sha256: str, **extra: Any) -> dict:
    return {
        "arch": arch,
        "classes": data.classes,
        "in_chans": data.in_chans,
        "input_size": [data.in_chans, data.size, data.size],
        "config": dict(params),
        "data_sha256": data_sha256,
        **extra,
    }


def _as_list(value: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, str | Path) else [Path(v) for v in value]


def pretrain_model(
    manifest: Path | Sequence[Path],
    images: Path | Sequence[Path],
    arch: str,
    params: Mapping[str, Any],
    out_dir: Path,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
    resume_dir: Path | None = None,
    resume_root: Path | None = None,
) -> dict:
    """In-domain pretraining on one or several (pooled) source sets; writes the checkpoint trio.

    `objective: supervised` trains on the labels (`multilabel: true`: each ';'-joined label its own sigmoid);
    `simclr` ignores labels and saves the backbone without a head (the projection head is dropped).
    `resume_dir`: per-epoch state for a re-run after a kill; removed when done (see `clear_resume` for `resume_root`).
    """
    manifests, caches = _as_list(manifest), _as_list(images)
    names = [m.parent.name for m in manifests]
    logger = get_logger(f"medxfer.pretrain.{arch}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = pool([load_cached(m, i) for m, i in zip(manifests, caches, strict=True)], names)
    kind = params.get("objective", "supervised")
    logger.info(
        "pretraining %s (%s) on %s (%d train images, classes %s) on %s",
        arch,
        kind,
        "+".join(names),
        len(data.splits["train"].labels),
        data.classes,
        runtime.describe(dev),
    )
    if kind == "simclr":
        model = models.create(arch, 0, data.in_chans)
        objective: Any = SimCLR(data, params, getattr(model, "head_hidden_size", model.num_features), seed)
    elif params.get("multilabel", False):
        objective = MultiLabel(data, params)
        model = models.create(arch, len(objective.classes), data.in_chans)
    else:
        if len(data.classes) < 2:
            raise ValueError(
                f"{'+'.join(names)}: supervised pretraining needs at least two classes, found {data.classes}; "
                "use pretrain.objective simclr for unlabeled images"
            )
        objective = Supervised(data, params)
        model = models.create(arch, len(data.classes), data.in_chans)
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger, objective, resume_dir)
    test = data.splits["test"]
    test_metrics = objective.evaluate(model, test, dev)[1] if len(test.labels) else {}
    digests = [sha256_file(m) for m in manifests]
    meta = _meta(arch, data, params, digests[0] if len(digests) == 1 else sha256_bytes("".join(digests).encode()))
    meta |= {
        "classes": objective.classes,
        "objective": kind,
        "multilabel": isinstance(objective, MultiLabel),
        "init": "scratch",
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
    params: Mapping[str, Any],
    out_dir: Path,
    init_path: Path | None = None,
    threads: int = 1,
    seed: int = 0,
    device: str = "auto",
    log_path: Path | None = None,
    resume_dir: Path | None = None,
    resume_root: Path | None = None,
    decision: str = "argmax",
    target: str | None = None,
    run: str | None = None,
) -> dict:
    """Fine-tune from an init on the target set; write the checkpoint trio, test predictions and metrics.json.

    `decision`: argmax, or the metric whose best binary threshold is chosen on the val split (never on test).
    `target` (default: the manifest's folder, as ingest names it) and `run` (the seed replicate's name, default
    `init`) go into the identity model.json and metrics.json carry (medxfer.identity).
    `resume_dir`: per-epoch state for a re-run after a kill; removed when done (see `clear_resume` for `resume_root`).
    """
    logger = get_logger(f"medxfer.finetune.{arch}.{init}", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    data = load_cached(manifest, images)
    strategy = params["strategy"]
    logger.info(
        "fine-tuning %s (init %s, strategy %s) on %s: %d train / %d val / %d test images on %s",
        arch,
        init,
        strategy,
        manifest.parent.name,
        *(len(s.labels) for s in data.splits.values()),
        runtime.describe(dev),
    )
    truncate = params.get("truncate_stages", 3) if strategy == "truncated" else None
    model = models.create_initialised(arch, len(data.classes), data.in_chans, init, init_path, truncate)
    set_strategy(model, strategy)
    logger.info("%s: %d parameters (truncate_stages %s)", arch, models.num_parameters(model), truncate)
    model, history = fit(model, data, params, dev, out_dir / "log.csv", seed, logger, None, resume_dir)
    test, val = data.splits["test"], data.splits["val"]
    proba, val_proba = predict_proba(model, test.images, dev), predict_proba(model, val.images, dev)
    threshold = None if decision == "argmax" else choose_threshold(val.labels, val_proba, decision)
    metrics = classification_metrics(test.labels, proba, threshold)
    metrics["val"] = classification_metrics(val.labels, val_proba, threshold)
    ident = identity(target or manifest.parent.name, init, seed, run, features=arch, classifier="cnn")
    metrics |= {
        "identity": ident,
        "decision": _decision_record(decision, threshold),
        "arch": arch,
        "init": init,
        "strategy": strategy,
        "truncate_stages": truncate,
        "epochs_trained": len(history),
        "best_epoch": min(history, key=lambda r: r["val_loss"])["epoch"],
        "num_parameters": models.num_parameters(model),
    }
    test_arrays = {"ids_test": test.ids, "study_test": test.studies, "y_test": test.labels, "classes": data.classes}
    write_predictions(out_dir / "predictions.csv", test_arrays, proba, threshold)
    meta = _meta(arch, data, params, sha256_file(manifest), init=init, stage="finetune")
    meta |= {"init_path": str(init_path) if init_path else None, "decision": metrics["decision"], "identity": ident}
    models.save(out_dir, model, meta)  # the decision travels with the model: its readers predict as it was scored
    write_json(out_dir / "metrics.json", metrics)
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
