"""The model zoo: every network is rebuilt from a `ModelConfig`, never unpickled.

A pruned network is the dense network of its config with some layers resized:
`ModelConfig.layer_shapes` lists those layers (module name -> weight shape), so a
checkpoint of a physically pruned model still loads from config + state dict alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.models.resnet import resnet18, resnet50
from modhifi_core.models.vgg import vgg
from modhifi_core.models.vit import ViT

MODEL_NAMES = ("resnet18", "resnet50", "vgg11", "vgg19", "vit")


class ModelConfig(BaseModel):
    """Everything needed to rebuild a network's architecture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["resnet18", "resnet50", "vgg11", "vgg19", "vit"] = "resnet18"
    num_classes: int = Field(10, ge=2)
    in_channels: int = Field(1, ge=1)
    width: int = Field(16, ge=1)
    image_size: int = Field(8, ge=4)
    stem: Literal["cifar", "imagenet"] = "cifar"
    vit_patch: int = Field(2, ge=1)
    vit_depth: int = Field(4, ge=1)
    layer_shapes: dict[str, list[int]] = Field(default_factory=dict)

    def dense(self) -> ModelConfig:
        """The same architecture before any pruning."""
        return self.model_copy(update={"layer_shapes": {}})


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network of `config` (resized to its `layer_shapes`)."""
    if config.name in ("resnet18", "resnet50"):
        factory = resnet18 if config.name == "resnet18" else resnet50
        model = factory(config.num_classes, config.in_channels, config.width, config.stem)
    elif config.name in ("vgg11", "vgg19"):
        model = vgg(config.name, config.num_classes, config.in_channels, config.width, config.image_size)
    else:
        if config.image_size % config.vit_patch:
            raise InputError(f"vit_patch {config.vit_patch} does not divide image_size {config.image_size}")
        model = ViT(
            config.num_classes, config.in_channels, config.width, config.image_size, config.vit_patch, config.vit_depth
        )
    for name, shape in config.layer_shapes.items():
        _resize_module(model, name, shape)
    return model


def parameter_bytes(config: ModelConfig) -> int:
    """Bytes of the parameters and buffers of `config`'s network, counted on the meta
    device: nothing is allocated, so a config far too large for memory can be refused."""
    with torch.device("meta"):
        model = build_model(config)
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Weight shape of every conv, linear and norm layer, by module name."""
    return {
        name: list(module.weight.shape)
        for name, module in model.named_modules()
        if isinstance(module, _RESIZABLE) and getattr(module, "weight", None) is not None
    }


def config_for(model: nn.Module, dense_config: ModelConfig) -> ModelConfig:
    """The config that rebuilds `model`: `dense_config` plus the layers whose shape differs."""
    dense = layer_shapes(build_model(dense_config.dense()))
    changed = {name: shape for name, shape in layer_shapes(model).items() if dense.get(name) != shape}
    return dense_config.model_copy(update={"layer_shapes": changed})


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear layer: its outputs (the classes) are never pruned."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise InputError("the model has no Linear classifier")
    return names[-1]


def output_layer_name(model: nn.Module) -> str:
    """The layer whose outputs are the classes, never pruned: the last Linear, or in a
    network with none (a conv classifier, e.g. SqueezeNet) the last Conv2d."""
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if convs and not any(isinstance(module, nn.Linear) for module in model.modules()):
        return convs[-1]
    return classifier_name(model)


_RESIZABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm)


def _resize_module(model: nn.Module, name: str, shape: list[int]) -> None:
    """Give module `name` new (uninitialised) parameters of weight shape `shape`."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise InputError(f"config names layer {name!r}, which the architecture does not have") from None
    if not isinstance(module, _RESIZABLE):
        raise InputError(f"config resizes layer {name!r} of unsupported type {type(module).__name__}")
    expected_rank = {nn.Conv2d: 4, nn.Linear: 2, nn.BatchNorm2d: 1, nn.LayerNorm: 1}[type(module)]
    if len(shape) != expected_rank or min(shape) < 1:
        raise InputError(f"config gives layer {name!r} an invalid shape {shape}")
    if isinstance(module, nn.Conv2d):
        module.out_channels, module.in_channels = shape[0], shape[1]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape[0], shape[1]
    elif isinstance(module, nn.BatchNorm2d):
        module.num_features = shape[0]
        for buffer in ("running_mean", "running_var"):
            setattr(module, buffer, getattr(module, buffer).new_zeros(shape[0]))
    else:
        module.normalized_shape = (shape[0],)
    module.weight = nn.Parameter(module.weight.new_empty(shape))
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(module.bias.new_empty(shape[0]))
