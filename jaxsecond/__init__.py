"""jaxsecond: second-order and quasi-Newton optimizers over JAX pytrees."""

__version__ = "0.1.0"

from jaxsecond.curveball import curveball as curveball
from jaxsecond.curveball import CurveBallState as CurveBallState
