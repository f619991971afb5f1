"""Status codes, their messages, and the convergence tests every ``minimize`` method shares."""

import enum

import jax
import jax.numpy as jnp

from jaxsecond.bounds import projected_gradient


class Status(enum.IntEnum):
    """Why a solve stopped. Only ``GTOL``, ``FTOL`` and ``XTOL`` are successes."""

    RUNNING = -1
    GTOL = 0
    FTOL = 1
    MAXITER = 2
    MAXFUN = 3
    LINESEARCH_FAILED = 4
    NONFINITE = 5
    UNBOUNDED = 6
    XTOL = 7
    CALLBACK = 8
    INFEASIBLE = 9


MESSAGES = {
    Status.RUNNING: "RUNNING",
    Status.GTOL: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= GTOL",
    Status.FTOL: "CONVERGENCE: RELATIVE REDUCTION OF F <= FTOL",
    Status.MAXITER: "STOP: TOTAL NUMBER OF ITERATIONS REACHED MAXITER",
    Status.MAXFUN: "STOP: TOTAL NUMBER OF FUNCTION EVALUATIONS REACHED MAXFUN",
    Status.LINESEARCH_FAILED: "ABNORMAL: LINE SEARCH FOUND NO STEP OF SUFFICIENT DECREASE",
    Status.NONFINITE: "ABNORMAL: NON-FINITE OBJECTIVE VALUE OR GRADIENT",
    Status.UNBOUNDED: "ABNORMAL: OBJECTIVE UNBOUNDED BELOW",
    Status.XTOL: "CONVERGENCE: STEP SIZE <= XTOL",
    Status.CALLBACK: "STOP: CALLBACK REQUESTED STOP",
    Status.INFEASIBLE: "ABNORMAL: A BOUND IS NAN OR A LOWER BOUND EXCEEDS ITS UPPER BOUND",
}


def message(status) -> str:
    """Human-readable text for a status code (an int or a 0-d array)."""
    return MESSAGES[Status(int(status))]


def status_at_iterate(x, f, g, f_old, lower, upper, nit, nfev, gtol, ftol, maxiter, maxfun, first):
    """Status after reaching a new iterate: converged, out of budget, or still running.

    The tests are scipy L-BFGS-B's: the infinity norm of the projected gradient is at most ``gtol``,
    or the relative reduction ``(f_old - f) / max(|f_old|, |f|, 1)`` is at most ``ftol`` (not tested at
    the starting point, where there is no previous value). Convergence takes precedence over the
    iteration and evaluation budgets. A value of ``-inf`` means the objective is unbounded below;
    any other non-finite value or gradient is ``NONFINITE``.

    Returns:
      ``(status, pg_norm)``: the status (int32) and the projected gradient's infinity norm.
    """
    pg_norm = jnp.max(jnp.abs(projected_gradient(x, g, lower, upper)), initial=0.0)
    finite = jnp.all(jnp.isfinite(g))
    return iterate_status(f, f_old, pg_norm, finite, nit, nfev, gtol, ftol, maxiter, maxfun, first), pg_norm


def iterate_status(f, f_old, pg_norm, g_finite, nit, nfev, gtol, ftol, maxiter, maxfun, first):
    """:func:`status_at_iterate` from scalars: the projected gradient's infinity norm ``pg_norm``
    and whether every component of the gradient is finite."""
    # An increase of f is never convergence (f <= f_old), whatever ftol.
    rel_reduction = (f <= f_old) & ((f_old - f) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(f_old), jnp.abs(f)), 1.0))
    finite = jnp.isfinite(f) & g_finite
    status = jnp.where(
        ~finite,
        jnp.where(f == -jnp.inf, Status.UNBOUNDED, Status.NONFINITE),
        jnp.where(
            pg_norm <= gtol,
            Status.GTOL,
            jnp.where(
                rel_reduction & ~first,
                Status.FTOL,
                jnp.where(nit >= maxiter, Status.MAXITER, jnp.where(nfev >= maxfun, Status.MAXFUN, Status.RUNNING)),
            ),
        ),
    )
    return status.astype(jnp.int32)


def stop_requested(on_iterate, accepted, x, f, g, nit, nfev):
    """Calls ``on_iterate(x, f, g, nit, nfev) -> bool`` where ``accepted`` (a user's callback, from
    inside the compiled loop); ``False`` where not, or when there is no callback (nothing compiled)."""
    if on_iterate is None:
        return jnp.zeros((), bool)
    return jax.lax.cond(accepted, lambda: on_iterate(x, f, g, nit, nfev), lambda: jnp.zeros((), bool))


def gradient_at_rounding_level(g, f):
    """Whether ``|g|_1 <= n sqrt(eps) max(|f|, 1)``: a gradient no larger than the rounding of ``f``
    can resolve, below which a line search or a curvature test can only see noise."""
    return l1_at_rounding_level(jnp.sum(jnp.abs(g)), f, g.size)


def l1_at_rounding_level(g_l1, f, size: int):
    """:func:`gradient_at_rounding_level` from the gradient's L1 norm ``g_l1`` and its ``size``."""
    eps = jnp.finfo(g_l1.dtype).eps
    return g_l1 <= size * jnp.sqrt(eps) * jnp.maximum(jnp.abs(f), 1.0)
