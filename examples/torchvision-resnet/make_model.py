"""Make the torchvision ResNet-18 weights that examples/torchvision-resnet/params.yaml
names: `torchvision.models.resnet18(num_classes=10)` built from its constructor (no
download), trained on scikit-learn's digits at 16 px (3 channels), saved as a plain
safetensors state dict, the format of any torchvision checkpoint converted to safetensors.

    .venv/zoo/bin/python examples/torchvision-resnet/make_model.py examples/torchvision-resnet/resnet18.safetensors

Needs the zoo venv (`scripts/zoo_venv.sh`: torch 2.14.1 + torchvision 0.29.1). Any
ResNet-18 state dict with a 10-class head works in its place (a torch.save'd one is read
with weights_only=True).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from modhifi_core.data import load_dataset
from modhifi_core.sources.torchvision_zoo import build_zoo_model
from modhifi_core.training import TrainConfig, accuracy, train_model

SOURCE, IMAGE_SIZE, CLASSES, EPOCHS = "torchvision:resnet18", 16, 10, 3


def main(out: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_dataset("digits", image_size=IMAGE_SIZE, channels=3)
    model = build_zoo_model(SOURCE, num_classes=CLASSES)
    start = time.perf_counter()
    train_model(model, digits.train, TrainConfig(epochs=EPOCHS, seed=0))
    seconds = time.perf_counter() - start
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in model.eval().state_dict().items()}, out)
    print(f"{out}: {accuracy(model, digits.test):.1f}% on the digits test split, {seconds:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/torchvision-resnet/resnet18.safetensors")
