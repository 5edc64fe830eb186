"""Tiny from-config Hugging Face image classifiers trained here on digits (seconds), shared
by the CLI and pipeline tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

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


def trained_vit(digits) -> ViTForImageClassification:
    """90% on the digits test split after 10 AdamW epochs (~3 s; SGD does not train it)."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10,
    )  # fmt: skip
    model = ViTForImageClassification(config)
    network = LogitsOnly(model).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    for epoch in range(10):
        for images, labels in digits.train.loader(64, shuffle=True, seed=epoch):
            loss = F.cross_entropy(network(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
