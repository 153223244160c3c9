"""BatchNorm folded into the convolution before it, for inference.

Why: in eval mode a BatchNorm is a fixed per-channel scale and shift, yet on the CPU it is a pass of its own over
every activation: about a third of an EfficientNet forward pass at 128 px (benchmarks/fold_batchnorm.py). Folding
it into the convolution's weights and bias gives the same function, in float rounding, at the convolution's cost.
Features, robustness, heatmaps and bundle predictions never train, so they read folded models.

Which BatchNorm follows which convolution is read from the traced graph (torch.fx), not from module order: a norm
applied to a sum or a concatenation (DenseNet, pre-activation blocks) is left as it is.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

from timm.layers import BatchNormAct2d
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

FOLDED = "medxfer_folded_batchnorms"  # model attribute: how many norms were folded (0: the model is as it was)
# Norms whose forward is known: a scale and shift, then (timm) dropout and activation. A subclass may do more.
FOLDABLE = (nn.BatchNorm2d, BatchNormAct2d)


class _NormsAsLeaves(fx.Tracer):
    """Traces through everything but BatchNorms, so each stays one node whose input can be read."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.BatchNorm2d) or super().is_leaf_module(module, name)


def _without_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What is left of a norm once its scale and shift live in the convolution: timm's BatchNormAct2d keeps its
    dropout and activation, a plain BatchNorm2d leaves nothing."""
    return nn.Sequential(norm.drop, norm.act) if isinstance(norm, BatchNormAct2d) else nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm2d that takes a Conv2d's output, and nothing else does,
    folded into that convolution. A model that cannot be traced is returned as an eval-mode copy, unfolded;
    `getattr(copy, FOLDED)` tells how many norms were folded."""
    folded = copy.deepcopy(model).eval()
    try:
        graph = _NormsAsLeaves().trace(folded)
    except Exception as error:  # noqa: BLE001 - data-dependent control flow: correct unfolded beats fast and wrong
        logging.getLogger(__name__).warning(
            "%s cannot be traced, so its BatchNorms stay unfolded (same outputs, unfolded speed): %s",
            type(model).__name__,
            (str(error) or type(error).__name__).splitlines()[0],
        )
        setattr(folded, FOLDED, 0)
        return folded
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    count = 0
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        if calls[node.target] != 1 or calls[source.target] != 1:  # a module called twice serves two inputs
            continue
        norm, conv = folded.get_submodule(node.target), folded.get_submodule(source.target)
        if not (type(norm) in FOLDABLE and isinstance(conv, nn.Conv2d) and norm.track_running_stats):
            continue
        conv.weight, conv.bias = fuse_conv_bn_weights(  # keeps the weight's layout (channels-last)
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        folded.set_submodule(node.target, _without_norm(norm))
        count += 1
    setattr(folded, FOLDED, count)
    return folded
