"""Tiny from-config Hugging Face image classifiers trained here on digits (seconds), shared
by the CLI and pipeline tests."""

from __future__ import annotations

import torch
from transformers import ResNetConfig, ResNetForImageClassification

from modhifi_core.training import TrainConfig, train_model
from modhifi_core.vision import LogitsOnly


def trained_resnet(digits) -> ResNetForImageClassification:
    """96.7% on the digits test split after 6 SGD epochs (~1 s)."""
    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10,
        image_size=8,
    )  # fmt: skip
    model = ResNetForImageClassification(config)
    train_model(LogitsOnly(model), digits.train, TrainConfig(epochs=6, seed=0))
    return model.eval()
