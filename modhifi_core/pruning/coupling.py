"""Coupled channel groups (Torch-Pruning's DependencyGraph) and the surgery on them.

A group is a set of channels that must be removed together: the output channels of one
or more producers (convs joined by residual adds), the BatchNorms on them, and the input
channels of every consumer layer that reads them. Channels are kept per group; the
surgery either removes them physically (`prune`: smaller tensors, real speed-ups) or
zeroes the consumers' input slices in place (`mask`: the dense equivalent).

A depthwise conv (one filter per channel, Torch-Pruning's DEPTHWISE_CONV) is a per-channel
pass-through, like a BatchNorm: its filters go with the group's channels (it produces
them again for the consumers after it, so it prices as a producer) and nothing is scored
or refit on it. Groups the method cannot handle exactly are left untouched and reported
by name: grouped convs, splits, LayerNorm or custom parameters on the channels, index
expansions into a consumer, channels that reach the output directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.statistics import is_prunable

_T = tp.ops.OPTYPE
# Operations that pass a channel through unchanged (a concatenation shifts its position:
# the consumer index map of each group records where it lands).
_TRANSPARENT = {_T.ELEMENTWISE, _T.RESHAPE, _T.BN, _T.PRELU, _T.OUTPUT, _T.CONCAT}


@dataclass
class ChannelGroup:
    """One prunable group. `consumers` maps each consumer layer to the input index each of
    the `size` root channels occupies there; `producers` maps each layer whose outputs
    are the channels to the output index each root channel occupies there (-1: not one of
    its outputs, e.g. the other side of a concatenation); `ties` lists the sets of root
    channels that one producer output makes (a depthwise conv's input concatenated with
    its output, as in GhostNet): each set is kept or dropped whole (`close`); `group` is
    Torch-Pruning's full-index group (for importances)."""

    root: str
    size: int
    consumers: dict[str, Tensor]
    producers: dict[str, Tensor]
    group: tp.Group
    ties: list[Tensor] = field(default_factory=list)

    def close(self, keep: Tensor) -> Tensor:
        """`keep` (sorted root channel indices) with every tie set it touches kept whole."""
        if not self.ties:
            return keep
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[keep] = True
        for tie in self.ties:
            if bool(mask[tie].any()):
                mask[tie] = True
        return torch.nonzero(mask).flatten()

    def removed_outputs(self, keep: Tensor) -> dict[str, int]:
        """Per producer, how many of its outputs go when the root channels `keep` stay."""
        removed = {}
        for name, index in self.producers.items():
            kept = torch.zeros(self.size, dtype=torch.bool)
            kept[keep] = True
            held = index >= 0
            removed[name] = len(set(index[held & ~kept].tolist()) - set(index[held & kept].tolist()))
        return removed


def close(kept: dict[str, Tensor], groups: list[ChannelGroup]) -> dict[str, Tensor]:
    """`kept` with every group's tie sets kept whole (`ChannelGroup.close`)."""
    closed = dict(kept)
    for group in groups:
        if group.root in closed:
            closed[group.root] = group.close(closed[group.root])
    return closed


class Coupling:
    """The prunable channel groups of `model`, traced on `example_inputs` (one batch).

    `protected`: layers whose output channels are never pruned (the classifier).
    `skipped` maps each group left untouched (by its root layer) to the reason."""

    def __init__(self, model: nn.Module, example_inputs: Tensor, protected: list[str]) -> None:
        self.model = model
        self.names = {module: name for name, module in model.named_modules()}
        self.names.update({param: name for name, param in model.named_parameters()})
        modules = dict(model.named_modules())
        self.graph = self._trace(example_inputs)
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

    def _trace(self, example_inputs: Tensor) -> tp.DependencyGraph:
        """Torch-Pruning's dependency graph; an `InputError` naming the layer where it cannot
        follow the channels (a channel shuffle's reshape, as in ShuffleNet)."""
        graph = tp.DependencyGraph()
        try:
            with torch.enable_grad():
                return graph.build_dependency(self.model, example_inputs, verbose=False)
        except Exception as exc:  # Torch-Pruning's index mapping fails on this op
            where = self._failing_op(graph) or f"({type(exc).__name__}: {exc})"
            raise InputError(f"cannot couple the model's channels: Torch-Pruning cannot follow {where}") from None

    def _failing_op(self, graph: tp.DependencyGraph) -> str | None:
        """The first op whose channel index mapping fails, by the layer that feeds it."""
        mapping = tp.dependency.index_mapping
        update = {_T.CONCAT: mapping.update_concat_index_mapping, _T.SPLIT: mapping.update_split_index_mapping}
        update.update({_T.RESHAPE: mapping.update_reshape_index_mapping, _T.SLICE: mapping.update_slice_index_mapping})
        for node in list(getattr(graph, "module2node", {}).values()):
            if node.type not in update:
                continue
            try:
                update[node.type](graph, node)
            except Exception:
                op, layer = node.type.name.lower(), self._upstream(node)
                return f"the {op} after layer {layer!r} (a channel shuffle or a reshape that mixes channels)"
        return None

    def _upstream(self, node: object) -> str:
        """The nearest named layer before `node` in the graph."""
        seen, frontier = set(), list(node.inputs)
        while frontier:
            current = frontier.pop(0)
            if current.module in self.names:
                return self.names[current.module]
            if id(current) not in seen:
                seen.add(id(current))
                frontier.extend(current.inputs)
        return "?"

    def _name(self, module: object) -> str:
        return self.names.get(module, type(module).__name__)

    def _unsupported(self, group: tp.Group) -> str | None:
        size = len(group[0].idxs)
        has_consumer = False
        for item in group:
            target = item.dep.target
            module, kind = target.module, target.type
            if _is_depthwise(module):
                continue  # a producer; its share of the channels is mapped in `_describe`
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
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
        size = len(group[0].idxs)
        consumers: dict[str, Tensor] = {}
        producers: dict[str, Tensor] = {}
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            idxs, roots = torch.tensor(item.idxs), torch.tensor(item.root_idxs)
            # Torch-Pruning marks both handlers of a depthwise conv as input pruning.
            if self.graph.is_in_channel_pruning_fn(item.dep.handler) and not _is_depthwise(module):
                index = torch.empty(size, dtype=torch.long)
                index[roots] = idxs
                consumers[self._name(module)] = index
            else:
                index = producers.setdefault(self._name(module), torch.full((size,), -1, dtype=torch.long))
                index[roots] = idxs
        ties = []
        if any(bool((index < 0).any()) for index in producers.values()):
            ties = self._ties(group, producers)
        return ChannelGroup(root, size, consumers, producers, group, ties)

    def _ties(self, group: tp.Group, producers: dict[str, Tensor]) -> list[Tensor]:
        """Where a producer makes only part of the group's channels (the two sides of a
        concatenation added to a residual), probe each root channel: the root channels that
        dropping it drops too form its tie set, and each producer's output index per root
        channel is filled in (Torch-Pruning's full group records each layer only once)."""
        root = group[0].dep.target.module
        handler = group[0].dep.handler
        ties, done = [], set()
        for channel in range(len(group[0].idxs)):
            if channel in done:
                continue
            probe = self.graph.get_pruning_group(root, handler, [channel])
            members = sorted(set(probe[0].idxs))
            done.update(members)
            if len(members) > 1:
                ties.append(torch.tensor(members))
            for item in probe:
                index = producers.get(self.names.get(item.dep.target.module))
                if index is not None and len(set(item.idxs)) == 1:
                    index[[m for m in members if index[m] < 0]] = item.idxs[0]
        return ties


def _complement(keep: Tensor, size: int) -> Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def _is_depthwise(module: nn.Module) -> bool:
    """A conv with one filter per channel (groups = in = out channels > 1)."""
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels > 1


def _describe_conv(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return "depthwise conv" if module.groups == module.in_channels else f"grouped conv, groups={module.groups}"
    return f"padding_mode={getattr(module, 'padding_mode', '?')}"
