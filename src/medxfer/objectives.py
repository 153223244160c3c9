"""Training objectives: what a step minimises and how validation scores it (single-label cross-entropy,
multi-label BCE, SimCLR's NT-Xent). The fit loop only sees `views`, `extra`, `targets`, `loss` and `evaluate`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medxfer.augment import build_augment
from medxfer.batches import class_weights, prepare_batch
from medxfer.cache import CachedDataset, Split
from medxfer.imaging import read_mask
from medxfer.inference import predict_logits
from medxfer.ingestbase import NO_LABEL
from medxfer.metrics import classification_metrics
from medxfer.runtime import autocast
from medxfer.sections import PretrainTraining, Training


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


class Supervised:
    """Single-label classification: cross-entropy, class-weighted when `imbalance` is `weighted_loss`."""

    views = 1
    masks: torch.Tensor | None = None  # finding masks of the training images, for objectives that read them

    def __init__(self, data: CachedDataset, params: Training) -> None:
        self.classes = list(data.classes)
        weighted = params.imbalance == "weighted_loss"
        self.weights = class_weights(data.splits["train"].labels, len(self.classes)) if weighted else None
        self.extra = nn.Module()
        self.augment = build_augment(params.augment)
        if self.augment.erase > 0 and not self.augment.erase_findings:  # the rectangles go round the findings
            masks = finding_masks(data.splits["train"], data.size)
            self.masks = masks if masks.any() else None

    def targets(self, split: Split) -> torch.Tensor:
        return torch.tensor(split.labels)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`masks`: the batch's moved finding masks, when the objective loaded them; only MaskGuided reads them."""
        return self.cross_entropy(model(x), y)

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.weights.to(logits.device) if self.weights is not None else None
        return nn.functional.cross_entropy(logits.float(), y, weight=weight)

    def evaluate(self, model: nn.Module, split: Split, device: torch.device) -> tuple[float, dict]:
        logits = predict_logits(model, split.images, device)
        loss = float(nn.functional.cross_entropy(logits, self.targets(split), weight=self.weights))
        return loss, classification_metrics(split.labels, torch.softmax(logits, dim=1).numpy())


def finding_masks(split: Split, size: int) -> torch.Tensor:
    """(N, size, size) bool: each image's finding mask, all False where the data set gives none."""
    masks = torch.zeros(len(split.labels), size, size, dtype=torch.bool)
    for i, ref in enumerate(split.masks):
        mask = read_mask(ref, size)
        if mask is not None:
            masks[i] = torch.from_numpy(mask)
    return masks


def class_evidence_map(model: nn.Module, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, h, w) class activation map (Zhou et al. 2016) of each image's own class against the mean of the others:
    the linear head applied at every cell of the last feature map, whose spatial mean is the logit difference."""
    cam = torch.einsum("bchw,kc->bkhw", features.float(), model.get_classifier().weight.float())
    own = cam.gather(1, y.view(-1, 1, 1, 1).expand(-1, 1, *cam.shape[2:])).squeeze(1)
    return own - (cam.sum(dim=1) - own) / max(cam.shape[1] - 1, 1)


def mass_outside(evidence: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """-log of the share of softmax(evidence over the cells) that falls in cells the mask touches, averaged over
    the images with a mask; 0 when none has one. Lowest when the class evidence sits on the finding alone."""
    cells = nn.functional.adaptive_max_pool2d(masks.unsqueeze(1).float(), evidence.shape[1:]).squeeze(1) > 0
    rows = cells.flatten(1).any(dim=1)
    if not rows.any():
        return evidence.sum() * 0.0
    log_share = torch.log_softmax(evidence[rows].flatten(1), dim=1).masked_fill(~cells[rows].flatten(1), -torch.inf)
    return -torch.logsumexp(log_share, dim=1).mean()


class MaskGuided(Supervised):
    """Cross-entropy plus `mask_guidance` times `mass_outside` on the training images with a finding mask: where
    experts drew the finding, the model is taught to find its evidence there (attention supervision, as in GAIN,
    Li et al. 2018), so its heatmaps point at the finding and not at what merely comes with it. Needs a linear
    head on average-pooled features, where the class activation map is exact."""

    def __init__(self, data: CachedDataset, params: Training, model: nn.Module) -> None:
        head, pool = model.get_classifier(), getattr(model, "global_pool", None)
        if type(head) is not nn.Linear or getattr(pool, "pool_type", None) != "avg":
            raise ValueError(
                f"finetune.mask_guidance needs a linear head on average-pooled features; this model has "
                f"{type(head).__name__} after {getattr(pool, 'pool_type', None) or 'no model-level'} pooling"
            )
        super().__init__(data, params)
        self.weight = params.mask_guidance
        if self.masks is None:  # not read already for erasing that spares the findings
            self.masks = finding_masks(data.splits["train"], data.size)
        if not self.masks.any():
            raise ValueError(
                "finetune.mask_guidance needs finding masks (the data set's `masks` or `npz_masks`), and no training "
                "image of this data set has one"
            )

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = model.forward_features(x)
        loss = self.cross_entropy(model.forward_head(features), y)
        if masks is None:
            return loss
        return loss + self.weight * mass_outside(class_evidence_map(model, features, y), masks)


class MultiLabel(Supervised):
    """Multi-label classification (label sets 'a;b'): one sigmoid per label, BCE with logits; `weighted_loss`
    weighs each label's positives by its negative/positive ratio."""

    def __init__(self, data: CachedDataset, params: Training) -> None:
        self.classes, self.matrix = label_sets(data.classes)
        if not self.classes:
            raise ValueError(f"multi-label training needs labels other than '{NO_LABEL}'; classes: {data.classes}")
        train = self.matrix[data.splits["train"].labels]
        positives = train.sum(axis=0)
        weighted = params.imbalance == "weighted_loss"
        self.pos_weight = torch.tensor((len(train) - positives) / np.maximum(positives, 1)) if weighted else None
        self.extra = nn.Module()
        self.augment = build_augment(params.augment)

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
    masks = None

    def __init__(self, data: CachedDataset, params: PretrainTraining, num_features: int, seed: int) -> None:
        dim = params.projection_dim
        self.extra = nn.Sequential(nn.Linear(num_features, num_features), nn.ReLU(), nn.Linear(num_features, dim))
        self.temperature = params.temperature
        if params.view_size is not None and params.view_size > data.size:
            raise ValueError(f"pretrain.view_size {params.view_size} is larger than the {data.size} px images")
        self.augment = build_augment(params.augment, params.view_size)
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
