"""Trust-region Newton-CG (scipy's ``method="trust-ncg"``): the Steihaug–Toint CG subproblem solver.

Each iteration minimises the quadratic model ``m(p) = f + g.p + p.H p / 2`` inside ``|p| <= radius``
approximately by linear CG with Hessian-vector products (``jvp`` of the gradient, the Hessian is never
formed), stopping at the boundary, at a direction of non-positive curvature (followed to the boundary)
or at a residual below ``min(0.5, sqrt|g|) |g|``. The step is accepted when the actual reduction is
more than ``eta`` times the predicted one; the radius shrinks by 4 when that ratio is below 1/4 and
doubles (up to ``max_trust_radius``) when it is above 3/4 on the boundary -- all as scipy, except
that both reductions are shifted by ten roundings of ``f`` before the ratio is taken, so that near the
minimum, where the predicted reduction is below what ``f`` can resolve, a Newton step is not refused
(and the radius collapsed) on the rounding of ``f``.

There is no line search, so this module has its own loop; it shares the statuses, the convergence
tests and the result type with :mod:`jaxsecond.descent`. The loop is one ``lax.while_loop`` whose
body makes exactly one objective-and-gradient evaluation (the starting point on the first trip, then
one trial point per trip), so under ``vmap`` each problem stops on its own criteria.

References:
  Steihaug (1983). The conjugate gradient method and trust regions in large scale optimization.
  SIAM J. Numer. Anal. 20(3). Nocedal and Wright (2006), Numerical Optimization, 2nd ed.,
  Algorithms 4.1 and 7.2. Conn, Gould and Toint (2000), Trust-Region Methods, SIAM, section 17.4.2
  (the ratio shifted by the rounding level).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxsecond.convergence import Status, status_at_iterate, stop_requested
from jaxsecond.descent import DescentOptions, DescentResult, _print_final
from jaxsecond.newton import hessian_vector_product


class TrustRegionMethod(NamedTuple):
    """Constants of the trust-region loop (scipy's names and defaults)."""

    initial_trust_radius: float = 1.0
    max_trust_radius: float = 1000.0
    eta: float = 0.15


def _boundary_steps(z, d, radius):
    """Both roots ``ta <= tb`` of ``|z + t d| = radius`` (scipy's numerically stable form)."""
    a = d @ d
    b = 2 * (z @ d)
    c = z @ z - radius**2
    aux = b + jnp.copysign(jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0)), b)
    ta, tb = -aux / (2 * a), -2 * c / aux
    return jnp.minimum(ta, tb), jnp.maximum(ta, tb)


def steihaug_cg(hvp: Callable[[Array], Array], g: Array, radius) -> tuple:
    """Approximate minimiser of ``g.p + p.H p / 2`` over ``|p| <= radius`` (Steihaug–Toint CG).

    Args:
      hvp: ``v -> H v``.
      g: the gradient (model's linear term).
      radius: trust-region radius.

    Returns:
      ``(p, hits_boundary)``.
    """
    n = g.shape[0]
    gnorm = jnp.linalg.norm(g)
    tolerance = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm

    # carry: (i, z, r, d, p, hits_boundary, done)
    def cond(carry):
        i, *_, done = carry
        return ~done & (i < n + 1)

    def body(carry):
        i, z, r, d, _, _, _ = carry
        bd = hvp(d)
        dbd = d @ bd
        ta, tb = _boundary_steps(z, d, radius)
        # Non-positive curvature: the boundary point with the lower model value, m(z + t d) - m(z)
        # = t r.d + t^2 dBd / 2.
        model = lambda t: t * (r @ d) + 0.5 * t * t * dbd
        t_neg = jnp.where(model(ta) < model(tb), ta, tb)
        r2 = r @ r
        alpha = r2 / jnp.where(dbd > 0, dbd, 1.0)
        z_next = z + alpha * d
        outside = jnp.linalg.norm(z_next) >= radius
        r_next = r + alpha * bd
        r2_next = r_next @ r_next
        small = jnp.sqrt(r2_next) < tolerance
        p = jnp.where(dbd <= 0, z + t_neg * d, jnp.where(outside, z + tb * d, z_next))
        boundary = (dbd <= 0) | outside
        done = boundary | small
        d_next = -r_next + r2_next / r2 * d
        return i + 1, z_next, r_next, d_next, p, boundary, done

    zero = jnp.zeros_like(g)
    trivial = gnorm < tolerance  # only when g = 0
    init = (0, zero, g, -g, zero, jnp.zeros((), bool), trivial)
    _, _, _, _, p, hits_boundary, _ = lax.while_loop(cond, body, init)
    return p, hits_boundary


class _State(NamedTuple):
    x: Array
    f: Array
    g: Array
    radius: Array
    p: Array  # the step being tried
    predicted: Array  # the model's predicted reduction for it
    hits_boundary: Array
    nit: Array
    nfev: Array
    status: Array


def run_trust_region(
    value_and_grad, x0, lower, upper, method: TrustRegionMethod, options: DescentOptions, disp=False, on_iterate=None
):
    """Minimises ``value_and_grad``'s function from ``x0`` by trust-region Newton-CG (flat vectors).

    Args:
      value_and_grad: ``x -> (f, g)`` on flat vectors.
      x0: starting point.
      lower, upper: must be unbounded (``±inf`` or ``None``); kept for the common solver signature.
      method: the radius constants.
      options: ``gtol`` (on the 2-norm of the gradient, as scipy), ``maxiter``, ``maxfun``.
      disp: print progress from inside the compiled loop.
      on_iterate: as in :func:`jaxsecond.descent.run_descent`.

    Returns:
      A :class:`jaxsecond.descent.DescentResult`.
    """
    dtype = x0.dtype
    never = -jnp.ones((), dtype)

    def status_of(x, f, g, nit, nfev, first):
        status, _ = status_at_iterate(
            x, f, g, f, lower, upper, nit, nfev, never, -jnp.inf, options.maxiter, options.maxfun, first
        )
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        converged = (jnp.linalg.norm(g) < options.gtol) & finite
        return jnp.where(converged, Status.GTOL, status).astype(jnp.int32)

    def body(state: _State) -> _State:
        first = state.nfev == 0
        x_trial = jnp.where(first, state.x, state.x + state.p)
        f_trial, g_trial = value_and_grad(x_trial)
        f_trial = jnp.asarray(f_trial, dtype)
        nfev = state.nfev + 1
        actual = state.f - f_trial
        # Both reductions shifted by the rounding level of f (Conn, Gould & Toint 2000, section
        # 17.4.2, without their floor of 1, so that no increase beyond f's own rounding is accepted
        # when |f| is small): a step whose predicted reduction f cannot resolve is judged by the
        # model, not by which way f's last bits happen to round.
        shift = 10 * jnp.finfo(dtype).eps * jnp.abs(state.f)
        rho = jnp.where(jnp.isfinite(f_trial), (actual + shift) / (state.predicted + shift), -jnp.inf)
        radius = jnp.where(
            rho < 0.25,
            0.25 * state.radius,
            jnp.where((rho > 0.75) & state.hits_boundary, jnp.minimum(2 * state.radius, method.max_trust_radius), state.radius),
        )
        # A trial value of -inf is kept: the status below reports the objective unbounded below.
        accept = first | (rho > method.eta) | (f_trial == -jnp.inf)
        x = jnp.where(accept, x_trial, state.x)
        f = jnp.where(accept, f_trial, state.f)
        g = jnp.where(accept, g_trial, state.g)
        radius = jnp.where(first, state.radius, radius)
        nit = jnp.where(first, 0, state.nit + 1)
        status = status_of(x, f, g, nit, nfev, first)
        # The next step and its predicted reduction (scipy stops when the model predicts none).
        hvp = lambda v: hessian_vector_product(value_and_grad, x, v)
        p, hits_boundary = steihaug_cg(hvp, g, radius)
        predicted = -(g @ p + 0.5 * (p @ hvp(p)))
        no_prediction = (status == Status.RUNNING) & ~(predicted > 0)
        status = jnp.where(no_prediction, Status.LINESEARCH_FAILED, status)
        stop = stop_requested(on_iterate, accept & ~first, x, f, g, nit, nfev)
        status = jnp.where(stop & (status == Status.RUNNING), Status.CALLBACK, status).astype(jnp.int32)
        if disp:
            jax.debug.print("iter {:5d}  f = {: .10e}  |g| = {:.4e}  radius = {:.3e}", nit, f, jnp.linalg.norm(g), radius)
        return _State(x, f, g, radius, p, predicted, hits_boundary, nit, nfev, status)

    zero = jnp.zeros((), dtype)
    init = _State(
        x=x0, f=zero, g=jnp.zeros_like(x0), radius=jnp.asarray(method.initial_trust_radius, dtype),
        p=jnp.zeros_like(x0), predicted=zero, hits_boundary=jnp.zeros((), bool),
        nit=jnp.zeros((), jnp.int32), nfev=jnp.zeros((), jnp.int32), status=jnp.int32(Status.RUNNING),
    )
    final = lax.while_loop(lambda s: s.status == Status.RUNNING, body, init)
    if disp:
        jax.debug.callback(_print_final, final.status, final.nit, final.nfev, final.f)
    return DescentResult(final.x, final.f, final.g, final.nit, final.nfev, final.status)
