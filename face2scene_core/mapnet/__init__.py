"""MapNet: FaDeX degradation features -> 21 degradation tokens (see :mod:`.model`)."""

from .model import MIN_FEATURE_SIZE, MapNet

__all__ = ["MapNet", "MIN_FEATURE_SIZE"]
