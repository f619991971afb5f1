"""jaxsecond: second-order and quasi-Newton optimizers over JAX pytrees."""

from jaxsecond import problems, schedules
from jaxsecond.convergence import Status
from jaxsecond.curveball import CurveBallState, curveball
from jaxsecond.lr_range_test import LRRangeTestResult, lr_range_test, plot_lr_range_test
from jaxsecond.optimize import OptimizeResult, minimize
from jaxsecond.transforms import (
    adamw,
    amsgrad,
    heun,
    normalized_weight_decay,
    scale_by_torch_amsgrad,
    sgdw,
)

__version__ = "0.1.0"

__all__ = [
    "CurveBallState",
    "LRRangeTestResult",
    "OptimizeResult",
    "Status",
    "adamw",
    "amsgrad",
    "curveball",
    "heun",
    "lr_range_test",
    "minimize",
    "normalized_weight_decay",
    "plot_lr_range_test",
    "problems",
    "scale_by_torch_amsgrad",
    "schedules",
    "sgdw",
]
