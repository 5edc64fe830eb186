"""modhifi's engine: pure PyTorch model modification without training data.

Statistics, subset fidelity, pruning, unlearning, synthesis, fine-tuning, metrics,
models, data and safe I/O. Never imports prefect, mlflow or dvc.
"""

__version__ = "0.1.0"
