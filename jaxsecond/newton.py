"""Newton's method with the exact Hessian, and truncated Newton (Newton-CG), as line-search methods.

* ``newton``: the Hessian of the flattened objective from ``jax.jacfwd`` of the gradient (forward over
  reverse), factorised by Cholesky. Where it is not positive definite a multiple of the identity is
  added, grown until the factorisation succeeds (Nocedal & Wright, Algorithm 3.3, "Cholesky with added
  multiple of the identity"), so every step is a descent direction; near a strong minimiser no shift is
  needed and the unit step is accepted, which gives quadratic convergence. Memory is O(n^2) and each
  iteration costs n Hessian-vector products plus an O(n^3) factorisation: meant for up to a few
  thousand variables (:data:`MAX_NEWTON_SIZE` is the hard limit).
* ``newton-cg``: scipy's truncated Newton: the Newton system is solved approximately by linear CG with
  Hessian-vector products (``jvp`` of the gradient), never forming the Hessian, stopped at a relative
  residual ``min(0.5, sqrt(|g|_1))`` (in L1 norms, as scipy), at the first direction of non-positive
  curvature (steepest descent if it is the very first CG direction) or after ``20 n`` CG steps.
  Deviation from scipy: where the curvature along ``-g`` is below rounding, scipy proposes no step
  and reports convergence whatever the size of the gradient; we do so only when ``|g|_1 <= n
  sqrt(eps)``, and otherwise take steepest descent, so that a linear or nearly flat objective is
  found unbounded or minimised instead of being reported solved at the start.

Both keep no curvature memory between iterations: the "memory" of :class:`DescentMethod` is empty.

References:
  Nocedal and Wright (2006), Numerical Optimization, 2nd ed., Algorithms 3.3 and 7.1.
  Dembo and Steihaug (1983). Truncated-Newton algorithms for large-scale unconstrained optimization.
  Mathematical Programming 26.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxsecond.convergence import gradient_at_rounding_level
from jaxsecond.descent import DescentMethod, wolfe1_initial_step

# Largest number of variables method="newton" accepts: the Hessian alone then takes 3.2 GB in float64.
MAX_NEWTON_SIZE = 20000

# Cholesky shifts: start at this fraction of the largest diagonal entry, double up to this many times.
_SHIFT_FRACTION = 1e-3
_MAX_SHIFTS = 64


def hessian_vector_product(value_and_grad: Callable, x: Array, v: Array) -> Array:
    """``H(x) v`` as the directional derivative of the gradient (forward over reverse)."""
    return jax.jvp(lambda z: value_and_grad(z)[1], (x,), (v,))[1]


def shifted_cholesky_solve(hess: Array, rhs: Array) -> Array:
    """Solves ``(H + tau I) p = rhs`` with the smallest ``tau`` of the sequence 0, beta, 2 beta, ...
    for which Cholesky succeeds (``tau`` starts above ``-min(diag H)`` when that is negative).

    Returns:
      The solution ``p``; ``H + tau I`` is positive definite, so ``-p`` for ``rhs = g`` is a descent
      direction.
    """
    diag = jnp.diagonal(hess)
    beta = _SHIFT_FRACTION * jnp.maximum(jnp.max(jnp.abs(diag)), 1.0)
    tau0 = jnp.where(jnp.min(diag) > 0, 0.0, beta - jnp.min(diag))
    eye = jnp.eye(hess.shape[0], dtype=hess.dtype)

    def factor(tau):
        return jnp.linalg.cholesky(hess + tau * eye)

    def failed(chol):
        return ~jnp.all(jnp.isfinite(chol))

    def cond(carry):
        i, _, chol = carry
        return failed(chol) & (i < _MAX_SHIFTS)

    def body(carry):
        i, tau, _ = carry
        tau = jnp.maximum(2.0 * tau, beta)
        return i + 1, tau, factor(tau)

    _, _, chol = lax.while_loop(cond, body, (0, tau0, factor(tau0)))
    return jax.scipy.linalg.cho_solve((chol, True), rhs)


def newton(value_and_grad: Callable) -> DescentMethod:
    """Modified Newton (exact Hessian, shifted Cholesky) for :func:`jaxsecond.descent.run_descent`.

    Args:
      value_and_grad: ``x -> (f, g)`` on flat vectors; its gradient is differentiated forward.

    Returns:
      A :class:`DescentMethod` whose first trial step is always the Newton step (``stp = 1``), with
      the strong Wolfe constants of scipy's Newton-type methods (``c1 = 1e-4``, ``c2 = 0.9``).
    """

    def direction(memory, x, g, lower, upper):
        del memory, lower, upper
        hess = jax.jacfwd(lambda z: value_and_grad(z)[1])(x)
        hess = 0.5 * (hess + hess.T)  # symmetric up to rounding; Cholesky reads one triangle
        # A non-finite Hessian gives a non-finite direction, which the loop reports as NONFINITE
        # (the shifted Cholesky would otherwise return some finite, meaningless step).
        return jnp.where(jnp.all(jnp.isfinite(hess)), -shifted_cholesky_solve(hess, g), jnp.nan)

    return _memoryless(direction, initial_step=lambda f, f_prev, gd, g_norm, nit: jnp.ones((), gd.dtype))


def truncated_newton_direction(hvp: Callable[[Array], Array], g: Array) -> Array:
    """scipy's Newton-CG inner solve of ``H p = -g`` by linear CG (see the module docstring)."""
    n = g.shape[0]
    eps = jnp.finfo(jnp.float64).eps  # scipy compares curvature with float64's epsilon
    b = -g
    maggrad = jnp.sum(jnp.abs(b))
    termcond = jnp.minimum(0.5, jnp.sqrt(maggrad)) * maggrad

    # carry: (i, xsupi, ri, psupi, dri0, done)
    def cond(carry):
        i, _, ri, _, _, done = carry
        return ~done & (i < 20 * n) & (jnp.sum(jnp.abs(ri)) > termcond)

    def body(carry):
        i, xsupi, ri, psupi, dri0, _ = carry
        ap = hvp(psupi)
        curv = psupi @ ap
        flat = (curv >= 0) & (curv <= 3 * eps)
        negative = curv < 0
        # Negative curvature on the first CG direction: scaled steepest descent, as scipy.
        first_negative = negative & (i == 0)
        # No curvature along -g: scipy proposes no step and reports convergence whatever the size
        # of the gradient. We do so only for a gradient at the rounding level of an O(1) objective;
        # above it (a linear or nearly flat objective) we take steepest descent, and the line
        # search finds the objective unbounded or its far-away minimiser.
        first_flat = flat & (i == 0) & ~gradient_at_rounding_level(g, 1.0)
        stop = flat | negative
        alpha = dri0 / jnp.where(stop, 1.0, curv)
        x_new = jnp.where(first_negative, dri0 / -jnp.where(negative, curv, -1.0) * b, xsupi + alpha * psupi)
        x_new = jnp.where(stop & ~first_negative, xsupi, x_new)
        x_new = jnp.where(first_flat, b, x_new)
        r_new = ri + alpha * ap
        dri1 = r_new @ r_new
        p_new = -r_new + dri1 / dri0 * psupi
        keep = lambda new, old: jnp.where(stop, old, new)
        return (
            i + 1, x_new, keep(r_new, ri), keep(p_new, psupi), keep(dri1, dri0), stop,
        )

    r0 = -b
    init = (0, jnp.zeros_like(g), r0, b, r0 @ r0, jnp.zeros((), bool))
    return lax.while_loop(cond, body, init)[1]


def newton_cg(value_and_grad: Callable) -> DescentMethod:
    """Truncated Newton (scipy's ``method="Newton-CG"``) for :func:`jaxsecond.descent.run_descent`.

    Args:
      value_and_grad: ``x -> (f, g)`` on flat vectors; Hessian-vector products are its gradient's
        ``jvp``.

    Returns:
      A :class:`DescentMethod` with scipy's line-search constants and first trial step.
    """

    def direction(memory, x, g, lower, upper):
        del memory, lower, upper
        return truncated_newton_direction(lambda v: hessian_vector_product(value_and_grad, x, v), g)

    return _memoryless(direction, initial_step=wolfe1_initial_step(start_from_gradient_norm=False))


def _memoryless(direction, initial_step) -> DescentMethod:
    empty = jnp.zeros((), jnp.int32)
    return DescentMethod(
        init_memory=lambda x: empty,
        direction=direction,
        update_memory=lambda memory, s, y, keep: memory,
        reset_memory=lambda memory, forget: memory,
        memory_is_empty=lambda memory: jnp.ones((), bool),
        c1=1e-4,
        c2=0.9,
        xtol=1e-14,
        initial_step=initial_step,
        newton_direction=True,
    )
