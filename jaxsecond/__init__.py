"""jaxsecond: second-order and quasi-Newton optimizers over JAX pytrees."""

from jaxsecond import problems
from jaxsecond.convergence import Status
from jaxsecond.optimize import OptimizeResult, minimize

__version__ = "0.1.0"

__all__ = ["OptimizeResult", "Status", "minimize", "problems"]
