"""The line-search descent loop shared by the quasi-Newton (and later Newton and CG) methods.

A method supplies a search direction and a curvature memory (:class:`DescentMethod`); this module
does everything else: the initial evaluation, the Moré–Thuente search, the convergence tests, the
restart after a failed search, and the bookkeeping. It is one ``lax.while_loop`` whose body makes
exactly one objective-and-gradient evaluation, in the reverse-communication style of L-BFGS-B:
either the line search wants another trial, or the trial is accepted and the next direction is
computed in the same trip. One evaluation site keeps compile times short, and under ``vmap`` every
problem advances one evaluation per trip and stops on its own criteria.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from jaxsecond import linesearch as ls_lib
from jaxsecond.bounds import max_step_in_box, project
from jaxsecond.convergence import MESSAGES, Status, status_at_iterate

# Largest step of an unconstrained line search (L-BFGS-B's ``big``); a search that ends there has
# followed a descent ray for 1e10 direction lengths: the objective is treated as unbounded below.
_BIG_STEP = 1e10


class DescentMethod(NamedTuple):
    """What a line-search method contributes to :func:`run_descent` (all pure functions).

    Attributes:
      init_memory: ``(x) -> memory`` curvature information at the start.
      direction: ``(memory, x, g, lower, upper) -> d`` a descent direction (inside the box from ``x``).
      update_memory: ``(memory, s, y) -> memory`` after an accepted step with ``s.y > 0``.
      reset_memory: ``(memory) -> memory`` forget curvature (after a failed line search).
      memory_is_empty: ``(memory) -> bool``.
      c1, c2, xtol: constants of the strong Wolfe search.
      initial_step: ``None`` for L-BFGS-B's first trial step (1, or ``1/|d|`` on the first iteration
        of a problem not bounded on every side), or ``(f, f_prev, g, d, nit) -> stp`` where
        ``f_prev`` is the value at the previous iterate (undefined when ``nit == 0``).
      direction_updates_memory: ``direction`` returns ``(d, memory)`` instead of ``d`` (a method
        whose memory is the previous direction, such as nonlinear CG).
    """

    init_memory: Callable[[Array], Any]
    direction: Callable[..., Array]
    update_memory: Callable[[Any, Array, Array], Any]
    reset_memory: Callable[[Any], Any]
    memory_is_empty: Callable[[Any], Array]
    c1: float = 1e-3
    c2: float = 0.9
    xtol: float = 0.1
    initial_step: Optional[Callable[..., Array]] = None
    direction_updates_memory: bool = False


class DescentOptions(NamedTuple):
    gtol: Array
    ftol: Array
    maxiter: Array
    maxfun: Array
    maxls: Array
    xtol: Any = -1.0  # converged when the L1 norm of an accepted step is at most xtol (Newton-CG)


class DescentResult(NamedTuple):
    x: Array
    f: Array
    g: Array
    nit: Array
    nfev: Array
    status: Array


class _State(NamedTuple):
    x: Array  # current iterate and its value and gradient
    f: Array
    g: Array
    f_prev: Array  # value at the previous iterate
    d: Array  # search direction
    search: ls_lib.LineSearchState
    memory: Any
    nit: Array
    nfev: Array
    status: Array
    need_direction: Array  # the next trip starts by computing a direction at x
    forget: Array  # ... after resetting the memory (a search failed or went uphill)


def run_descent(value_and_grad, x0, lower, upper, method: DescentMethod, options: DescentOptions, disp=False):
    """Minimises ``value_and_grad``'s function over the box from ``x0`` (flat vectors).

    Each trip of the loop (1) computes a search direction when the last trip ended at a new iterate,
    (2) evaluates the objective at the line search's trial step (the first trip evaluates ``x0``) and
    (3) advances the line search, accepting the trial as the next iterate when the search stops.
    There is one direction site and one evaluation site in the compiled program.

    Args:
      value_and_grad: ``x -> (f, g)`` on flat vectors.
      x0: starting point, already inside the box.
      lower, upper: box bounds (``±inf`` where unbounded).
      method: the direction and memory of the method.
      options: tolerances and budgets.
      disp: print progress from inside the compiled loop.

    Returns:
      A :class:`DescentResult`.
    """
    dtype = x0.dtype
    constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
    boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))

    def new_direction(state: _State) -> _State:
        memory = lax.cond(state.forget, method.reset_memory, lambda m: m, state.memory)
        empty = method.memory_is_empty(memory)
        d = method.direction(memory, state.x, state.g, lower, upper)
        if method.direction_updates_memory:
            d, memory = d
        limit = jnp.where(constrained, max_step_in_box(state.x, d, lower, upper, _BIG_STEP), _BIG_STEP)
        first = state.nit == 0
        if method.initial_step is None:
            # L-BFGS-B's first step: at most 1 in a box, 1/|d| when some variable is unbounded.
            limit = jnp.where(constrained & first, jnp.minimum(limit, 1.0), limit)
            stp = jnp.where(first & ~boxed, 1.0 / jnp.linalg.norm(d), 1.0)
        else:
            stp = method.initial_step(state.f, state.f_prev, state.g, d, state.nit)
        limit = limit.astype(dtype)
        # Below this step x + stp d rounds to x: the search stops there instead of shrinking forever.
        stpmin = jnp.finfo(dtype).eps * jnp.max(jnp.abs(state.x)) / jnp.max(jnp.abs(d))
        search = ls_lib.line_search_init(state.f, state.g @ d, stp, limit, jnp.minimum(stpmin, limit))
        # An uphill direction: retry next trip without memory, or give up if there was none.
        uphill = search.task == ls_lib.ERROR
        status = jnp.where(uphill & empty, Status.LINESEARCH_FAILED, state.status)
        # A zero direction is a zero step: converged under a step-size test (scipy's Newton-CG, whose
        # inner CG proposes no step when the curvature along -g is below rounding).
        status = jnp.where(jnp.all(d == 0) & (options.xtol >= 0), Status.XTOL, status).astype(jnp.int32)
        return state._replace(
            d=d, search=search, memory=memory, status=status, need_direction=uphill, forget=uphill
        )

    def evaluate(state: _State):
        x_trial = jnp.where(state.nfev == 0, state.x, project(state.x + state.search.stp * state.d, lower, upper))
        f, g = value_and_grad(x_trial)
        return x_trial, jnp.asarray(f, dtype), g

    def new_iterate(state: _State, x_new, f_new, g_new, stp) -> _State:
        first = state.nfev == 1
        nit = jnp.where(first, 0, state.nit + 1)
        s, y = x_new - state.x, g_new - state.g
        # Keep the pair only if the curvature s.y is safely positive (L-BFGS-B's test).
        keep = ~first & (s @ y > jnp.finfo(dtype).eps * (-(state.g @ state.d) * stp))
        memory = lax.cond(keep, method.update_memory, lambda m, s, y: m, state.memory, s, y)
        status, pg_norm = status_at_iterate(
            x_new, f_new, g_new, jnp.where(first, f_new, state.f), lower, upper, nit, state.nfev,
            options.gtol, options.ftol, options.maxiter, options.maxfun, first,
        )
        # A search that ended at the largest unconstrained step followed a descent ray for 1e10.
        ray = (stp >= _BIG_STEP) & (status == Status.RUNNING)
        status = jnp.where(ray, Status.UNBOUNDED, status)
        small_step = ~first & (jnp.sum(jnp.abs(s)) <= options.xtol) & (status == Status.RUNNING)
        status = jnp.where(small_step, Status.XTOL, status)
        if disp:
            jax.debug.print(
                "iter {:5d}  f = {: .10e}  |proj g| = {:.4e}  nfev = {}", nit, f_new, pg_norm, state.nfev
            )
        return state._replace(
            x=x_new, f=f_new, g=g_new, f_prev=state.f, memory=memory, nit=nit, status=status.astype(jnp.int32),
            need_direction=jnp.ones((), bool), forget=jnp.zeros((), bool),
        )

    def failed_search(state: _State, search) -> _State:
        """Forget the memory and search again (L-BFGS-B's restart), or give up if it was empty."""
        empty = method.memory_is_empty(state.memory)
        failure = jnp.where(search.nonfinite, Status.NONFINITE, Status.LINESEARCH_FAILED)
        status = jnp.where(empty, failure, state.status).astype(jnp.int32)
        return state._replace(search=search, status=status, need_direction=~empty, forget=~empty)

    def advance(state: _State) -> _State:
        x_trial, f_trial, g_trial = evaluate(state)
        state = state._replace(nfev=state.nfev + 1)
        search = ls_lib.line_search_step(
            state.search, f_trial, g_trial @ state.d, method.c1, method.c2, method.xtol
        )
        initial = state.nfev == 1
        accepted = initial | (search.task == ls_lib.CONVERGED) | (search.task == ls_lib.WARNING)
        failed = (search.task == ls_lib.ERROR) | ((search.task == ls_lib.SEARCHING) & (search.nfev >= options.maxls))
        out_of_budget = (search.task == ls_lib.SEARCHING) & (state.nfev >= options.maxfun)
        unbounded = ~initial & (f_trial == -jnp.inf)
        branch = jnp.where(
            unbounded, 4, jnp.where(accepted, 1, jnp.where(failed, 2, jnp.where(out_of_budget, 3, 0)))
        )
        return lax.switch(
            branch,
            [
                lambda: state._replace(search=search),
                lambda: new_iterate(state, x_trial, f_trial, g_trial, jnp.where(initial, 0.0, search.stp)),
                lambda: failed_search(state, search),
                lambda: state._replace(search=search, status=jnp.int32(Status.MAXFUN)),
                lambda: state._replace(
                    x=x_trial, f=f_trial, g=g_trial, search=search, status=jnp.int32(Status.UNBOUNDED)
                ),
            ],
        )

    def body(state: _State) -> _State:
        state = lax.cond(state.need_direction, new_direction, lambda s: s, state)
        return lax.cond(state.need_direction | (state.status != Status.RUNNING), lambda s: s, advance, state)

    zero = jnp.zeros((), dtype)
    init = _State(
        x=x0, f=zero, g=jnp.zeros_like(x0), f_prev=zero, d=jnp.zeros_like(x0),
        search=ls_lib.line_search_init(zero, -1.0, 1.0, 1.0), memory=method.init_memory(x0),
        nit=jnp.zeros((), jnp.int32), nfev=jnp.zeros((), jnp.int32), status=jnp.int32(Status.RUNNING),
        need_direction=jnp.zeros((), bool), forget=jnp.zeros((), bool),
    )
    final = lax.while_loop(lambda s: s.status == Status.RUNNING, body, init)
    if disp:
        jax.debug.callback(_print_final, final.status, final.nit, final.nfev, final.f)
    return DescentResult(final.x, final.f, final.g, final.nit, final.nfev, final.status)


def _print_final(status, nit, nfev, f):
    for s, i, e, v in zip(*(np.atleast_1d(a) for a in (status, nit, nfev, f))):
        print(f"{MESSAGES[Status(int(s))]}  (nit = {int(i)}, nfev = {int(e)}, f = {float(v):.10e})")


def wolfe1_initial_step(start_from_gradient_norm: bool):
    """scipy's first trial step for its ``line_search_wolfe1`` methods (BFGS, CG, Newton-CG).

    ``min(1, 1.01 * 2 (f - f_prev) / g.d)``, the step at which a quadratic interpolation through the
    last decrease would reach its minimum, or 1 when that is not positive. On the first iteration
    scipy's BFGS and CG take ``f_prev = f + |g|/2`` (a first step of about unit length), Newton-CG
    takes the unit step.
    """

    def initial_step(f, f_prev, g, d, nit):
        if start_from_gradient_norm:
            f_prev = jnp.where(nit == 0, f + jnp.linalg.norm(g) / 2, f_prev)
        stp = jnp.minimum(1.0, 1.01 * 2 * (f - f_prev) / (g @ d))
        stp = jnp.where(jnp.isfinite(stp) & (stp > 0), stp, 1.0)
        if not start_from_gradient_norm:
            stp = jnp.where(nit == 0, 1.0, stp)
        return stp.astype(d.dtype)

    return initial_step
