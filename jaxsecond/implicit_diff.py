"""Derivatives of a solution with respect to the objective's arguments, by the implicit function theorem.

At a minimiser ``x*(theta)`` of ``f(x, theta)`` the gradient vanishes, ``grad_x f(x*, theta) = 0``, so
differentiating that identity gives ``H dx = -B dtheta`` with ``H = d2f/dx2`` and ``B = d2f/dx dtheta``
at the solution. The tangent ``dx`` is found by linear CG with Hessian-vector products (``jvp`` of the
gradient, the Hessian is never formed) instead of differentiating through the solver's iterations,
so the cost is that of a few dozen gradient evaluations whatever the number of iterations, and memory
does not grow with them. With bounds, variables at a bound are held there (zero derivative) and the
system is solved over the free ones only. The value's derivative is the envelope theorem's
``df = (df/dtheta) dtheta`` at fixed ``x*``.

The rule is a ``jax.custom_jvp``: reverse mode (``jax.grad``, ``jax.jacrev``) comes from JAX
transposing it, which works because the CG solve is a ``lax.custom_linear_solve``; it composes with
``jit`` and ``vmap``.

References:
  Blondel et al. (2022). Efficient and modular implicit differentiation. NeurIPS.
  Nocedal and Wright (2006), Numerical Optimization, 2nd ed., Section 5.1 (linear CG).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Relative residual of the CG solve (or 10 ulps in a lower precision), and its iteration cap in units
# of n (never reached on a well-conditioned Hessian; the cap keeps a singular one from looping long).
_CG_TOL = 1e-10
_CG_MAXITER_PER_VARIABLE = 10


def differentiable_solve(solve: Callable, value_and_grad: Callable) -> Callable:
    """Wraps a solver so that its solution and value are differentiable in ``args`` implicitly.

    Args:
      solve: ``(x0, args, lower, upper, aux) -> (x, f, g, *integers)`` on flat vectors; ``aux`` is
        anything else the solve reads (tolerances); only ``args`` gets derivatives.
      value_and_grad: ``(x, args) -> (f, g)`` on flat vectors.

    Returns:
      A function with ``solve``'s signature and outputs whose ``jvp`` (and so ``grad``/``vjp``)
      with respect to ``args`` is given by the implicit function theorem.
    """

    @jax.custom_jvp
    def run(x0, args, lower, upper, aux):
        return solve(x0, args, lower, upper, aux)

    @run.defjvp
    def run_jvp(primals, tangents):
        x0, args, lower, upper, aux = primals
        args_dot = tangents[1]
        out = run(x0, args, lower, upper, aux)
        x, f, g = out[:3]
        free = (x > lower) & (x < upper)
        (_, _), (f_dot, b) = jax.jvp(lambda a: value_and_grad(x, a), (args,), (args_dot,))
        x_dot = implicit_tangent(lambda v: _hvp(value_and_grad, x, args, v), -b, free)
        g_dot = _hvp(value_and_grad, x, args, x_dot) + b
        int_dots = [_zero_tangent(o) for o in out[3:]]
        return out, (x_dot, f_dot.astype(f.dtype), g_dot, *int_dots)

    return run


def implicit_tangent(hvp: Callable, rhs, free):
    """Solves ``H_FF u_F = rhs_F`` on the free set ``F`` (``u = 0`` elsewhere) by linear CG.

    Args:
      hvp: ``v -> H v`` (symmetric).
      rhs: right-hand side (flat vector).
      free: boolean mask of the free variables.

    Returns:
      ``u``.
    """
    n = rhs.shape[0]

    def matvec(v):
        # Identity on the fixed variables keeps the system nonsingular without changing u_F.
        return jnp.where(free, hvp(jnp.where(free, v, 0.0)), v)

    tol = max(_CG_TOL, 10 * float(jnp.finfo(rhs.dtype).eps))

    def cg_solve(matvec, b):
        return jax.scipy.sparse.linalg.cg(matvec, b, tol=tol, maxiter=_CG_MAXITER_PER_VARIABLE * n)[0]

    rhs = jnp.where(free, rhs, 0.0)
    return lax.custom_linear_solve(matvec, rhs, cg_solve, symmetric=True)


def _hvp(value_and_grad, x, args, v):
    return jax.jvp(lambda z: value_and_grad(z, args)[1], (x,), (v,))[1]


def _zero_tangent(x):
    return np.zeros(jnp.shape(x), jax.dtypes.float0)
