"""Machine unlearning: ModHiFi-U and the Unlearn-Sparse baselines behind one call (`unlearn`)."""

from modhifi_core.unlearning.api import METHODS, unlearn
from modhifi_core.unlearning.contract import UnlearnResult

__all__ = ["METHODS", "UnlearnResult", "unlearn"]
