"""Derivatives of a solution with respect to the objective's arguments, by the implicit function theorem.

At a minimiser ``x*(theta)`` of ``f(x, theta)`` the gradient vanishes, ``grad_x f(x*, theta) = 0``, so
differentiating that identity gives ``H dx = -B dtheta`` with ``H = d2f/dx2`` and ``B = d2f/dx dtheta``
at the solution. The tangent ``dx`` is found by linear CG with Hessian-vector products (``jvp`` of the
gradient, the Hessian is never formed) instead of differentiating through the solver's iterations,
so the cost is that of a few dozen gradient evaluations whatever the number of iterations, and memory
does not grow with them. With bounds, variables at a bound are held there (zero derivative) and the
system is solved over the free ones only; a variable held by a bound moves with the bound. The
value's derivative is the envelope theorem's ``df = (df/dtheta) dtheta + g . dx`` (the last term on
the held variables only).

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
        _, args_dot, lower_dot, upper_dot, _ = tangents
        out = run(x0, args, lower, upper, aux)
        x, f, g = out[:3]
        at_lower, at_upper = x <= lower, x >= upper
        free = ~at_lower & ~at_upper
        # A variable held by a bound moves with it, one for one; the free ones respond through the
        # reduced system H_FF dx_F = -(B dtheta + H_FA dx_A). Where lower == upper, the gradient
        # says which bound holds (g < 0 pushes against the upper one).
        held_by_upper = at_upper & (~at_lower | (g < 0))
        held_by_both = at_lower & at_upper & (g == 0)
        x_dot_bound = jnp.where(
            held_by_both,
            0.5 * (lower_dot + upper_dot),
            jnp.where(held_by_upper, upper_dot, jnp.where(at_lower, lower_dot, 0.0)),
        )
        (_, _), (f_dot, b) = jax.jvp(lambda a: value_and_grad(x, a), (args,), (args_dot,))
        rhs = -b - _hvp(value_and_grad, x, args, x_dot_bound)
        x_dot = implicit_tangent(lambda v: _hvp(value_and_grad, x, args, v), rhs, free) + x_dot_bound
        g_dot = _hvp(value_and_grad, x, args, x_dot) + b
        # Envelope theorem: f's change is its partial in theta plus g . dx on the held variables.
        f_dot = f_dot + g @ x_dot_bound
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
