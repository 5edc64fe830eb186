"""Where models come from besides modhifi's own zoo: local Hugging Face folders (DIR,
`huggingface.py`) and torchvision/timm architectures with a weights file
(`torchvision:ARCH`, `timm:ARCH`, `torchvision_zoo.py`)."""

from modhifi_core.sources.huggingface import (
    KINDS,
    LoadedModel,
    check_folder,
    load_hf,
    model_kind,
    position_limit,
    save_hf,
)

__all__ = [
    "KINDS",
    "LoadedModel",
    "check_folder",
    "load_hf",
    "model_kind",
    "position_limit",
    "save_hf",
]
