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
from jaxsecond.bounds import max_step_in_box, project, projected_gradient
from jaxsecond.convergence import MESSAGES, Status, gradient_at_rounding_level, status_at_iterate, stop_requested

# Longest distance an unconstrained line search may move, in units of max(1, |x|_inf) (L-BFGS-B's
# ``big`` = 1e10, which scipy measures in direction lengths instead: with a short direction that is a
# short distance, and a convex function with a tiny gradient would look unbounded). A search that
# ends there, having decreased f, has followed a descent ray: the objective is unbounded below.
_BIG_STEP = 1e10


def longest_step(x, d):
    """The step of an unconstrained search at which ``x`` has moved ``_BIG_STEP max(1, |x|_inf)``,
    and never shorter than L-BFGS-B's 1e10 direction lengths (so scipy's searches are unchanged)."""
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(x))) / jnp.max(jnp.abs(d))
    step = _BIG_STEP * jnp.maximum(1.0, jnp.where(jnp.isfinite(scale), scale, 1.0))
    return jnp.minimum(step, jnp.finfo(x.dtype).max)  # a finite limit in float32 too


def rounding_step(x, d):
    """The step below which ``x + stp d`` rounds to ``x`` in every variable: a search needs no shorter
    trial. Taken per variable, so a large variable does not stop the search for a small one."""
    ratio = jnp.where(d != 0, jnp.abs(x) / jnp.where(d != 0, jnp.abs(d), 1.0), jnp.inf)
    return jnp.finfo(x.dtype).eps * jnp.min(ratio, initial=jnp.inf)


class DescentMethod(NamedTuple):
    """What a line-search method contributes to :func:`run_descent` (all pure functions).

    Attributes:
      init_memory: ``(x) -> memory`` curvature information at the start.
      direction: ``(memory, x, g, lower, upper) -> d`` a descent direction (inside the box from ``x``).
      update_memory: ``(memory, s, y, keep) -> memory`` stores the pair when ``keep`` (an accepted
        step with ``s.y > 0``); called every trip, so it must be a masked, in-place O(n) update.
      reset_memory: ``(memory, forget) -> memory`` forgets all curvature when ``forget`` (after a
        failed line search); called every trip, masked like ``update_memory``.
      memory_is_empty: ``(memory) -> bool``.
      c1, c2, xtol: constants of the strong Wolfe search.
      initial_step: ``None`` for L-BFGS-B's first trial step (1, or ``1/|d|`` on the first iteration
        of a problem not bounded on every side), or ``(f, f_prev, g, d, nit) -> stp`` where
        ``f_prev`` is the value at the previous iterate (undefined when ``nit == 0``).
      direction_updates: the fields of the (``NamedTuple``) memory that ``direction`` changes; when
        not empty, ``direction`` returns ``(d, memory)`` instead of ``d`` (nonlinear CG keeps its
        previous direction, L-BFGS-B its free set and that set's Gram matrix). Only these fields
        leave the direction's branch: the large buffers stay in place.
      newton_direction: the direction is a Newton step of a model of the curvature even when the
        memory is empty (Newton, Newton-CG), so ``-g.d / 2`` is the decrease the model predicts.
    """

    init_memory: Callable[[Array], Any]
    direction: Callable[..., Array]
    update_memory: Callable[[Any, Array, Array, Array], Any]
    reset_memory: Callable[[Any, Array], Any]
    memory_is_empty: Callable[[Any], Array]
    c1: float = 1e-3
    c2: float = 0.9
    xtol: float = 0.1
    initial_step: Optional[Callable[..., Array]] = None
    direction_updates: tuple = ()
    newton_direction: bool = False


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


def run_descent(
    value_and_grad, x0, lower, upper, method: DescentMethod, options: DescentOptions, disp=False, on_iterate=None
):
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
      on_iterate: ``None`` or ``(x, f, g, nit, nfev) -> bool`` called at each new iterate (a user's
        callback); ``True`` stops the solve with status ``CALLBACK``.

    Returns:
      A :class:`DescentResult`.
    """
    dtype = x0.dtype
    constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
    boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))

    def direction_and_search(memory, x, f, f_prev, g, nit):
        with jax.named_scope("direction"):  # names in profiles
            d = method.direction(memory, x, g, lower, upper)
        updated = None
        if method.direction_updates:
            d, memory = d
            updated = tuple(getattr(memory, name) for name in method.direction_updates)
        big = longest_step(x, d)
        limit = jnp.where(constrained, max_step_in_box(x, d, lower, upper, big), big)
        first = nit == 0
        if method.initial_step is None:
            # L-BFGS-B's first step: at most 1 in a box, 1/|d| when some variable is unbounded.
            limit = jnp.where(constrained & first, jnp.minimum(limit, 1.0), limit)
            stp = jnp.where(first & ~boxed, 1.0 / jnp.linalg.norm(d), 1.0)
        else:
            stp = method.initial_step(f, f_prev, g, d, nit)
        limit = limit.astype(dtype)
        # Below this step x + stp d rounds to x: the search stops there instead of shrinking forever.
        stpmin = rounding_step(x, d)
        search = ls_lib.line_search_init(f, g @ d, stp, limit, jnp.minimum(stpmin, limit))
        return d, search, updated

    def new_direction(state: _State) -> _State:
        # The memory is only read inside the conditional (and reset by a masked, in-place update
        # outside it): passing large buffers through a branch would make XLA copy them every trip.
        # (Only the small fields named by ``direction_updates`` leave the branch.)
        memory = method.reset_memory(state.memory, state.need_direction & state.forget)
        empty = method.memory_is_empty(memory)
        unchanged = tuple(getattr(memory, name) for name in method.direction_updates) or None
        d, search, updated = lax.cond(
            state.need_direction,
            direction_and_search,
            lambda *_: (state.d, state.search, unchanged),
            memory, state.x, state.f, state.f_prev, state.g, state.nit,
        )
        if method.direction_updates:
            memory = memory._replace(**dict(zip(method.direction_updates, updated)))
        # An uphill direction: retry next trip without memory, or give up if there was none.
        uphill = state.need_direction & (search.task == ls_lib.ERROR)
        status = jnp.where(uphill & empty, Status.LINESEARCH_FAILED, state.status)
        # A zero direction is a zero step: converged under a step-size test (Newton-CG's inner CG
        # proposes no step when the gradient is so small that its curvature is below rounding).
        zero_step = state.need_direction & jnp.all(d == 0) & (options.xtol >= 0)
        status = jnp.where(zero_step, Status.XTOL, status)
        # A non-finite direction at a finite point (Newton's Hessian overflowed) is NONFINITE.
        status = jnp.where(state.need_direction & ~jnp.all(jnp.isfinite(d)), Status.NONFINITE, status)
        status = status.astype(jnp.int32)
        return state._replace(
            d=d, search=search, memory=memory, status=status, need_direction=uphill, forget=uphill
        )

    def advance(state: _State) -> _State:
        """Evaluates the trial point and moves the search, or takes the trial as the next iterate."""
        active = ~state.need_direction & (state.status == Status.RUNNING)
        initial = state.nfev == 0
        x_trial = jnp.where(initial, state.x, project(state.x + state.search.stp * state.d, lower, upper))
        with jax.named_scope("objective"):
            f_trial, g_trial = value_and_grad(x_trial)
        f_trial = jnp.asarray(f_trial, dtype)
        nfev = state.nfev + active.astype(jnp.int32)
        search = ls_lib.line_search_step(
            state.search, f_trial, g_trial @ state.d, method.c1, method.c2, method.xtol
        )
        searching = search.task == ls_lib.SEARCHING
        unbounded = active & ~initial & (f_trial == -jnp.inf)
        stopped = (search.task == ls_lib.CONVERGED) | (search.task == ls_lib.WARNING)
        # MINPACK-2 (and scipy) accept a warning step even where f rose; a descent method must never
        # return a worse point, so such a step is a failed search. So is a step that left f unchanged
        # when ftol is 0 (the default): it is a stall, success only at a rounding-level gradient.
        # With a positive ftol (scipy's) the step is taken as scipy takes it, and the solve stops
        # there, as scipy's, but as LINESEARCH_FAILED: FTOL is never success after an increase.
        refused = ~initial & stopped & (
            ((f_trial > state.f) & (options.ftol <= 0)) | ((f_trial == state.f) & (options.ftol == 0))
        )
        accepted = active & ~unbounded & (initial | (stopped & ~refused))
        failed = active & ~unbounded & ~initial & (
            (search.task == ls_lib.ERROR) | (searching & (search.nfev >= options.maxls)) | refused
        )
        empty = method.memory_is_empty(state.memory)
        out_of_budget = active & ~unbounded & ~initial & ~accepted & ~(failed & empty) & (nfev >= options.maxfun)

        # The trial as the next iterate (used where ``accepted``).
        stp = jnp.where(initial, 0.0, search.stp)
        nit = jnp.where(initial, 0, state.nit + accepted.astype(jnp.int32))
        s, y = x_trial - state.x, g_trial - state.g
        # Keep the pair only if the curvature s.y is safely positive (L-BFGS-B's test).
        keep = accepted & ~initial & (s @ y > jnp.finfo(dtype).eps * (-(state.g @ state.d) * stp))
        with jax.named_scope("update_memory"):
            memory = method.update_memory(state.memory, s, y, keep)
        iterate_status, pg_norm = status_at_iterate(
            x_trial, f_trial, g_trial, jnp.where(initial, f_trial, state.f), lower, upper, nit, nfev,
            options.gtol, options.ftol, options.maxiter, options.maxfun, initial,
        )
        # A search that ended at the longest unconstrained step followed a descent ray.
        ray = (stp >= longest_step(state.x, state.d)) & (f_trial < state.f) & (iterate_status == Status.RUNNING)
        iterate_status = jnp.where(ray, Status.UNBOUNDED, iterate_status)
        rose = ~initial & (f_trial > state.f) & (iterate_status == Status.RUNNING)
        iterate_status = jnp.where(rose, Status.LINESEARCH_FAILED, iterate_status)
        small_step = ~initial & (jnp.sum(jnp.abs(s)) <= options.xtol) & (iterate_status == Status.RUNNING)
        # A small step is convergence if it met the Wolfe conditions, or if rounding stopped the
        # search where the gradient is at the rounding level of f (float32 near a minimiser); a
        # search stopped by rounding at a large gradient (a kink, a discontinuity) failed.
        wolfe = search.task == ls_lib.CONVERGED
        rounding = gradient_at_rounding_level(g_trial, f_trial)
        iterate_status = jnp.where(
            small_step, jnp.where(wolfe | rounding, Status.XTOL, Status.LINESEARCH_FAILED), iterate_status
        )
        if disp:
            lax.cond(
                accepted,
                lambda: jax.debug.print(
                    "iter {:5d}  f = {: .10e}  |proj g| = {:.4e}  nfev = {}", nit, f_trial, pg_norm, nfev
                ),
                lambda: None,
            )

        # A failed search: forget the memory and search again (L-BFGS-B's restart), or give up. A
        # stall where the gradient is at the rounding level of f is success (FTOL: f's reduction
        # reached 0, also for BFGS and CG, which have no ftol option): the gradient is small against
        # f, or the decrease that the
        # curvature model predicts, -g.d / 2, is below the rounding of f (a badly scaled problem at
        # its minimum, whose gradient the arithmetic cannot resolve: Meyer's |g| = 3e-3 at f = 88).
        newton_step = method.newton_direction | ~empty
        predicted_decrease = -0.5 * state.search.ginit
        at_rounding_level = gradient_at_rounding_level(
            projected_gradient(state.x, state.g, lower, upper), state.f
        ) | (newton_step & (predicted_decrease <= jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(state.f), 1.0)))
        converged = refused & at_rounding_level
        failure = jnp.where(search.nonfinite, Status.NONFINITE, Status.LINESEARCH_FAILED)
        status = jnp.where(accepted, iterate_status, state.status)
        status = jnp.where(failed & empty, failure, status)
        status = jnp.where(out_of_budget, Status.MAXFUN, status)
        status = jnp.where(active & converged, Status.FTOL, status)
        status = jnp.where(unbounded, Status.UNBOUNDED, status)
        stop = stop_requested(on_iterate, accepted & ~initial, x_trial, f_trial, g_trial, nit, nfev)
        status = jnp.where(stop & (status == Status.RUNNING), Status.CALLBACK, status).astype(jnp.int32)
        moved = accepted | unbounded
        return _State(
            x=jnp.where(moved, x_trial, state.x),
            f=jnp.where(moved, f_trial, state.f),
            g=jnp.where(moved, g_trial, state.g),
            f_prev=jnp.where(accepted & ~initial, state.f, state.f_prev),
            d=state.d,
            search=_where_tree(active, search, state.search),
            memory=memory,
            nit=nit,
            nfev=nfev,
            status=status,
            need_direction=accepted | (failed & ~empty & ~converged) | state.need_direction,
            forget=(failed & ~empty & ~converged) | state.forget,
        )

    def body(state: _State) -> _State:
        return advance(new_direction(state))

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


def _where_tree(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


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
