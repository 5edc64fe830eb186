"""Model zoo: every architecture builds from config, runs, and trains deterministically."""

from __future__ import annotations

import hashlib

import pytest
import torch

from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model, classifier_name
from modhifi_core.training import TrainConfig, accuracy, train_model


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(name="resnet18", width=4, image_size=8),
        ModelConfig(name="resnet50", width=4, image_size=16, in_channels=3),
        ModelConfig(name="resnet18", width=4, image_size=32, in_channels=3, stem="imagenet"),
        ModelConfig(name="vgg11", width=4, image_size=8),
        ModelConfig(name="vgg19", width=2, image_size=32, in_channels=3),
        ModelConfig(name="vit", width=16, image_size=8, vit_patch=2, vit_depth=2),
    ],
    ids=lambda c: f"{c.name}-{c.image_size}px",
)
def test_every_architecture_builds_and_classifies(config):
    model = build_model(config).eval()
    out = model(torch.randn(2, config.in_channels, config.image_size, config.image_size))
    assert out.shape == (2, config.num_classes)
    assert classifier_name(model) in {"fc", "classifier", "head"}


def test_bad_layer_shapes_are_refused():
    with pytest.raises(InputError, match="does not have"):
        build_model(ModelConfig(layer_shapes={"nope": [1, 1, 1, 1]}))
    with pytest.raises(InputError, match="invalid shape"):
        build_model(ModelConfig(layer_shapes={"conv1": [0, 1, 3, 3]}))


def _state_hash(model):
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_same_seed_same_weights(digits):
    hashes = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(ModelConfig(width=4))
        train_model(model, digits.train.subset(torch.arange(256)), TrainConfig(epochs=2, seed=3))
        hashes.append(_state_hash(model))
    assert hashes[0] == hashes[1]


def test_training_learns(digits, tiny_digits_checkpoint):
    from modhifi_core.checkpoint import load_checkpoint

    assert accuracy(load_checkpoint(tiny_digits_checkpoint).model, digits.test) > 90.0


def test_bad_train_config():
    with pytest.raises(InputError, match="epochs"):
        TrainConfig(epochs=0)
