"""Make the Hugging Face ResNet that examples/hf-resnet/params.yaml names: a
`ResNetForImageClassification` built from its config (no download) and trained on
scikit-learn's digits at 16 px, saved as a stock Hugging Face folder.

    python examples/hf-resnet/make_model.py examples/hf-resnet/model

Any local HF image classifier folder works in its place (ResNet, ConvNeXt, ViT, Swin, ...);
its config must have as many labels as `data.dataset` has classes (10).
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import ResNetConfig, ResNetForImageClassification

from modhifi_core.data import load_dataset
from modhifi_core.training import TrainConfig, accuracy, train_model
from modhifi_core.vision import LogitsOnly

IMAGE_SIZE = 16


def main(out: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_dataset("digits", image_size=IMAGE_SIZE, channels=1)
    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        num_labels=10,
        image_size=IMAGE_SIZE,
    )
    model = ResNetForImageClassification(config)
    start = time.perf_counter()
    train_model(LogitsOnly(model), digits.train, TrainConfig(epochs=10, seed=0))
    seconds = time.perf_counter() - start
    model.eval().save_pretrained(out)
    print(f"{out}: {accuracy(LogitsOnly(model).eval(), digits.test):.1f}% on the digits test split, {seconds:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/hf-resnet/model")
