"""Coupled channel groups (Torch-Pruning's DependencyGraph) and the surgery on them.

A group is a set of channels that must be removed together: the output channels of one
or more producers (convs joined by residual adds), the BatchNorms on them, and the input
channels of every consumer layer that reads them. Channels are kept per group; the
surgery either removes them physically (`prune`: smaller tensors, real speed-ups) or
zeroes the consumers' input slices in place (`mask`: the dense equivalent).

Groups the method cannot handle exactly are left untouched and reported by name:
grouped/depthwise convs, concatenations, splits, LayerNorm or custom parameters on the
channels, index expansions into a consumer, channels that reach the output directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

from modhifi_core.statistics import is_prunable

_T = tp.ops.OPTYPE
# Operations that pass a channel through unchanged (a concatenation shifts its position:
# the consumer index map of each group records where it lands).
_TRANSPARENT = {_T.ELEMENTWISE, _T.RESHAPE, _T.BN, _T.PRELU, _T.OUTPUT, _T.CONCAT}


@dataclass
class ChannelGroup:
    """One prunable group. `consumers` maps each consumer layer to the input index each of
    the `size` root channels occupies there; `producers` lists the layers whose outputs
    are the channels; `group` is Torch-Pruning's full-index group (for importances)."""

    root: str
    size: int
    consumers: dict[str, Tensor]
    producers: list[str]
    group: tp.Group


class Coupling:
    """The prunable channel groups of `model`, traced on `example_inputs` (one batch).

    `protected`: layers whose output channels are never pruned (the classifier).
    `skipped` maps each group left untouched (by its root layer) to the reason."""

    def __init__(self, model: nn.Module, example_inputs: Tensor, protected: list[str]) -> None:
        self.model = model
        self.names = {module: name for name, module in model.named_modules()}
        self.names.update({param: name for name, param in model.named_parameters()})
        modules = dict(model.named_modules())
        with torch.enable_grad():
            self.graph = tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
        self.groups: list[ChannelGroup] = []
        self.skipped: dict[str, str] = {}
        ignored = [modules[name] for name in protected]
        for group in self.graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
            root = self._name(group[0].dep.target.module)
            reason = self._unsupported(group)
            if reason:
                self.skipped[root] = reason
            else:
                self.groups.append(self._describe(root, group))

    def feeds_batchnorm(self, layer: str) -> bool:
        """True when every consumer of `layer`'s output is a BatchNorm (centred fidelity)."""
        node = self.graph.module2node[self.model.get_submodule(layer)]
        return bool(node.outputs) and all(out.type == _T.BN for out in node.outputs)

    def following_batchnorm(self, layer: str) -> nn.Module | None:
        """The BatchNorm that normalises `layer`'s output (its only consumer), or None."""
        node = self.graph.module2node[self.model.get_submodule(layer)]
        if len(node.outputs) == 1 and node.outputs[0].type == _T.BN:
            return node.outputs[0].module
        return None

    def output_centre(self, layer: str) -> Tensor | None:
        """`m_c` of method.md §1 for `layer`'s bias-free output `Y_c`: the running mean of the
        BatchNorm that follows it, minus the layer's bias (float64 `(c_out,)`); None (= 0)
        where no BatchNorm follows or it tracks no running statistics."""
        bn = self.following_batchnorm(layer)
        if bn is None or getattr(bn, "running_mean", None) is None:
            return None
        centre = bn.running_mean.detach().double().clone()
        bias = getattr(self.model.get_submodule(layer), "bias", None)
        return centre - bias.detach().double() if bias is not None else centre

    def consumer_layers(self) -> list[str]:
        return sorted({name for group in self.groups for name in group.consumers})

    def kept_inputs(self, kept: dict[str, Tensor]) -> dict[str, Tensor]:
        """For each consumer of a group with dropped channels, its kept input indices
        (sorted). A consumer of a concatenation reads several groups: it keeps every input
        that none of them drops."""
        modules = dict(self.model.named_modules())
        dropped: dict[str, list[Tensor]] = {}
        for group in self.groups:
            keep = kept.get(group.root)
            if keep is None or len(keep) == group.size:
                continue
            for layer, index in group.consumers.items():
                dropped.setdefault(layer, []).append(index[_complement(keep, group.size)])
        result = {}
        for layer, parts in dropped.items():
            inputs = torch.ones(modules[layer].weight.shape[1], dtype=torch.bool)
            inputs[torch.cat(parts)] = False
            result[layer] = torch.nonzero(inputs).flatten()
        return result

    @torch.no_grad()
    def mask(self, kept: dict[str, Tensor]) -> None:
        """Zero every consumer's input slices `W[:, i]` of the channels not in `kept`
        (group root -> kept channel indices): the dense twin of `prune`."""
        modules = dict(self.model.named_modules())
        for group in self.groups:
            if group.root not in kept:
                continue
            dropped = _complement(kept[group.root], group.size)
            for layer, index in group.consumers.items():
                modules[layer].weight[:, index[dropped]] = 0.0

    def prune(self, kept: dict[str, Tensor]) -> None:
        """Physically remove, group by group, every channel not in `kept`."""
        modules = dict(self.model.named_modules())
        for group in self.groups:
            if group.root not in kept:
                continue
            dropped = _complement(kept[group.root], group.size)
            if len(dropped) == 0:
                continue
            root = modules[group.root]
            handler = self.graph.get_pruner_of_module(root).prune_out_channels
            self.graph.get_pruning_group(root, handler, dropped.tolist()).prune()

    def _name(self, module: object) -> str:
        return self.names.get(module, type(module).__name__)

    def _unsupported(self, group: tp.Group) -> str | None:
        size = len(group[0].idxs)
        has_consumer = False
        for item in group:
            target = item.dep.target
            module, kind = target.module, target.type
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if not is_prunable(module):
                    return f"coupled with unsupported layer {self._name(module)!r} ({_describe_conv(module)})"
                if self.graph.is_in_channel_pruning_fn(item.dep.handler):
                    if len(item.idxs) != size:
                        return f"channels expand into several inputs of {self._name(module)!r}"
                    has_consumer = True
            elif kind not in _TRANSPARENT:
                what = type(module).__name__ if not isinstance(module, nn.Parameter) else "parameter"
                return f"coupled with {self._name(module)!r} ({what}), which cannot be pruned exactly"
        if not has_consumer:
            return "its channels reach the model output without a consumer layer"
        return None

    def _describe(self, root: str, group: tp.Group) -> ChannelGroup:
        consumers, producers = {}, []
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            if self.graph.is_in_channel_pruning_fn(item.dep.handler):
                index = torch.empty(len(item.idxs), dtype=torch.long)
                index[torch.tensor(item.root_idxs)] = torch.tensor(item.idxs)
                consumers[self._name(module)] = index
            else:
                producers.append(self._name(module))
        return ChannelGroup(root, len(group[0].idxs), consumers, producers, group)


def _complement(keep: Tensor, size: int) -> Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def _describe_conv(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return "depthwise conv" if module.groups == module.in_channels else f"grouped conv, groups={module.groups}"
    return f"padding_mode={getattr(module, 'padding_mode', '?')}"
