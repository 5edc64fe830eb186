"""Model sources beyond modhifi's own zoo: Hugging Face folders, torchvision and timm."""
