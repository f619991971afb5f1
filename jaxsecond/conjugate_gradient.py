"""Nonlinear conjugate gradient (scipy's ``method="CG"``): Polak–Ribière+ with a strong Wolfe search.

The direction is ``d+ = -g+ + beta d`` with ``beta = max(0, (g+ - g).g+ / g.g)`` (Polak–Ribière
clipped at zero, Powell 1986). scipy additionally makes its line search reject steps after which the
new direction would not satisfy ``d+.g+ <= -0.01 g+.g+``; the shared line search here knows nothing of
directions, so a direction failing that test is replaced by steepest descent instead (a restart).

References:
  Polak and Ribière (1969). Note sur la convergence de méthodes de directions conjuguées. Revue
  française d'informatique et de recherche opérationnelle 3(16). Nocedal and Wright (2006), Numerical
  Optimization, 2nd ed., Section 5.2.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from jaxsecond.descent import DescentMethod, wolfe1_initial_step

# scipy's ``sigma_3``: a direction must make an angle with -g of at most arccos(0.01)-ish.
_DESCENT_FRACTION = 0.01


class PreviousStep(NamedTuple):
    """The previous direction and gradient, whether they exist (false after a restart), and whether
    the current direction used them (false when it is steepest descent, which a restart cannot
    improve on: a search that fails along it ends the solve)."""

    d: Array
    g: Array
    valid: Array
    conjugate: Array


def polak_ribiere_direction(memory: PreviousStep, x, g, lower, upper):
    """The Polak–Ribière+ direction at ``g``, and the memory holding it for the next iteration."""
    del x, lower, upper
    beta = jnp.maximum(0.0, (g - memory.g) @ g / (memory.g @ memory.g))
    beta = jnp.where(memory.valid & jnp.isfinite(beta), beta, 0.0)
    d = -g + beta * memory.d
    conjugate = (beta != 0) & (d @ g <= -_DESCENT_FRACTION * (g @ g))
    d = jnp.where(conjugate, d, -g)
    return d, PreviousStep(d=d, g=g, valid=jnp.ones((), bool), conjugate=conjugate)


def _init(x) -> PreviousStep:
    false = jnp.zeros((), bool)
    return PreviousStep(d=jnp.zeros_like(x), g=jnp.ones_like(x), valid=false, conjugate=false)


def cg() -> DescentMethod:
    """Polak–Ribière+ nonlinear CG for :func:`jaxsecond.descent.run_descent`, with scipy's strong
    Wolfe constants (``c1 = 1e-4``, ``c2 = 0.4``) and first trial step."""
    return DescentMethod(
        init_memory=_init,
        direction=polak_ribiere_direction,
        update_memory=lambda memory, s, y, keep: memory,
        reset_memory=lambda memory, forget: memory._replace(
            valid=memory.valid & ~forget, conjugate=memory.conjugate & ~forget
        ),
        memory_is_empty=lambda memory: ~memory.conjugate,
        c1=1e-4,
        c2=0.4,
        xtol=1e-14,
        initial_step=wolfe1_initial_step(start_from_gradient_norm=True),
        direction_updates=PreviousStep._fields,
    )
