"""Stock widths for a channel-pruned Hugging Face ResNet: the pruned model is exactly what
a fresh build of its new config gives, so stock `from_pretrained` loads its folder.

`ResNetConfig` says one width per stage (`hidden_sizes`) and the stem's (`embedding_size`);
transformers 5.x builds every block of stage `s` from them (`modeling_resnet.py`): the
stage's residual stream (each block's last conv and the first block's shortcut) holds
`hidden_sizes[s]`; a basic block's inner conv the same width, a bottleneck's two inner
convs `hidden_sizes[s] // 4` (`ResNetBottleNeckLayer`'s `reduction`, which `ResNetStage`
never changes). A first block has a shortcut conv iff its input and output widths differ
or it strides, so a stem coupled with stage 0's residual (no shortcut) is that group.

`ResNetWidths` is the pruning loop's `widths` rule (`modhifi_core.pruning.plan.WidthsRule`):
each stage keeps the mean fraction its groups ask for, as one inner width rounded to the
nearest multiple of `round_to` (at least `round_to`; the residual then `4 *` that in a
bottleneck, or the dense width where the inner one stays whole), the stem likewise on its
own; a stem that has a shortcut conv only because its width differs from stage 0's keeps
a different width. `write_stock_config` records the pruned widths in `model.config` and
checks that the config now describes every layer.

ConvNeXt has no such rule: its config fixes the MLP at 4x the stage width, so a stock
ConvNeXt needs its residual stream pruned, and Torch-Pruning can remove those channels
(through every LayerNorm, depthwise conv and `layer_scale_parameter`), but not exactly:
the LayerNorms renormalise over the channels kept, so the result is not the network with
those channels zeroed (the coupling leaves such groups untouched); a pruned ConvNeXt
keeps per-layer MLP widths and `modhifi_shapes.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.pruning.coupling import ChannelGroup
from modhifi_core.vision.hf import model_type, stock_shape_difference

REDUCTION = 4  # ResNetBottleNeckLayer: inner width = out_channels // reduction, reduction 4
_STEM = re.compile(r"(^|\.)embedder\.embedder\.convolution$")
_STAGE_CONV = re.compile(
    r"(^|\.)encoder\.stages\.(\d+)\.layers\.\d+\.(shortcut\.convolution|layer\.(\d+)\.convolution)$"
)


@dataclass(frozen=True)
class ResNetWidths:
    """The stock-width rule of an HF ResNet with `layer_type` blocks (`basic`/`bottleneck`);
    `stem_strides`: stage 0's first block strides (`downsample_in_first_stage`), so it has
    a shortcut conv whatever the widths. Called as `rule(groups, counts) -> counts`."""

    layer_type: str
    round_to: int = 1
    stem_strides: bool = False

    def __call__(self, groups: list[ChannelGroup], counts: dict[str, int]) -> dict[str, int]:
        stem, stages = self.roles(groups)
        chosen = {}
        for stage in sorted(stages):
            chosen.update(self._stage_counts(stages[stage], counts))
        if stem is not None:
            chosen[stem.root] = self._stem_count(stem, counts[stem.root], stages.get(0), chosen)
        return chosen

    def roles(self, groups: list[ChannelGroup]) -> tuple[ChannelGroup | None, dict[int, dict[str, list]]]:
        """`(stem group or None, stage -> {"residual": [group], "inner": [groups]})` by the
        convs producing each group; InputError for a group no ResNet rule describes."""
        last = 2 if self.layer_type == "bottleneck" else 1
        stem, stages = None, {}
        for group in groups:
            roles = {self._role(name, last) for name in group.producers}
            if roles == {"stem"}:
                stem = group
                continue
            found = roles - {"stem"}
            if None in roles or len(found) != 1 or ("stem" in roles and found != {(0, "residual")}):
                producers = list(group.producers)
                raise InputError(f"group {group.root} (producers {producers}) fits no HF ResNet stock width")
            stage, kind = found.pop()
            stages.setdefault(stage, {"residual": [], "inner": []})[kind].append(group)
        for stage, parts in stages.items():
            if len(parts["residual"]) != 1:
                raise InputError(f"stage {stage} of the ResNet has {len(parts['residual'])} residual groups, not 1")
        return stem, stages

    def _role(self, name: str, last: int) -> str | tuple[int, str] | None:
        """The role of conv `name`: "stem", `(stage, "residual" | "inner")`, or None."""
        if _STEM.search(name):
            return "stem"
        match = _STAGE_CONV.search(name)
        if match is None:
            return None
        stage, conv = int(match.group(2)), match.group(4)
        return stage, "residual" if conv is None or int(conv) == last else "inner"

    def _stage_counts(self, parts: dict[str, list], counts: dict[str, int]) -> dict[str, int]:
        """One stage: every inner group `k`, the residual `4k` (bottleneck) or `k` (basic)."""
        members = parts["residual"] + parts["inner"]
        fraction = sum(counts[g.root] for g in members) / sum(g.size for g in members)
        residual = parts["residual"][0]
        inner_size = residual.size // REDUCTION if self.layer_type == "bottleneck" else residual.size
        if any(g.size != inner_size for g in parts["inner"]):
            sizes = sorted({g.size for g in parts["inner"]})
            raise InputError(
                f"the inner widths {sizes} of stage {residual.root} are not {inner_size}: not a stock ResNet"
            )
        inner = self._rounded(fraction * inner_size, inner_size)
        chosen = {g.root: inner for g in parts["inner"]}
        if self.layer_type == "bottleneck":
            chosen[residual.root] = residual.size if inner == inner_size else REDUCTION * inner
        else:
            chosen[residual.root] = inner
        return chosen

    def _stem_count(self, stem: ChannelGroup, count: int, stage0: dict | None, chosen: dict[str, int]) -> int:
        """The stem's own width; kept off stage 0's residual width when its shortcut conv
        exists only because the two differ (equal widths would build no shortcut)."""
        width = self._rounded(count, stem.size)
        if self.stem_strides or stage0 is None or width != chosen[stage0["residual"][0].root]:
            return width
        step = min(self.round_to, stem.size)
        if width - step >= 1:
            return width - step
        if width + step <= stem.size:
            return width + step
        raise InputError(f"the stem {stem.root} cannot keep a width other than stage 0's ({width})")

    def _rounded(self, wanted: float, size: int) -> int:
        """The nearest multiple of `round_to` to `wanted`, within `[round_to, size]` (all
        `size` where that is less than `round_to`)."""
        step = self.round_to
        return min(size, max(step, step * int(wanted / step + 0.5)))


def resnet_widths(model: nn.Module, round_to: int = 1) -> ResNetWidths:
    """The stock-width rule of an HF ResNet classifier under `round_to`."""
    kind = model_type(model)
    if kind != "resnet":
        raise InputError(f"stock ResNet widths need an HF ResNet, not model type {kind!r}")
    config = model.config
    if config.layer_type not in ("basic", "bottleneck"):
        raise InputError(f"unknown ResNet layer_type {config.layer_type!r}")
    return ResNetWidths(config.layer_type, round_to, bool(config.downsample_in_first_stage))


def write_stock_config(model: nn.Module) -> None:
    """Set `embedding_size` and `hidden_sizes` of a pruned HF ResNet's config to the widths
    its layers hold; InputError if a fresh build of that config still differs somewhere."""
    resnet = model.resnet
    config = model.config
    config.embedding_size = resnet.embedder.embedder.convolution.out_channels
    config.hidden_sizes = [stage.layers[-1].layer[-1].convolution.out_channels for stage in resnet.encoder.stages]
    difference = stock_shape_difference(model)
    if difference:
        name = next(iter(difference))
        raise InputError(f"the pruned ResNet's config does not describe {name} {difference[name]}")
