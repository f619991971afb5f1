"""jaxsecond: second-order and quasi-Newton optimizers over JAX pytrees."""

__version__ = "0.1.0"

from jaxsecond import problems
