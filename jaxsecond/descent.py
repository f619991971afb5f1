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
from jaxsecond.convergence import MESSAGES, Status, l1_at_rounding_level, stop_requested
from jaxsecond.convergence import iterate_status as iterate_status_of

# Longest distance an unconstrained line search may move, in units of max(1, |x|_inf) (L-BFGS-B's
# ``big`` = 1e10, which scipy measures in direction lengths instead: with a short direction that is a
# short distance, and a convex function with a tiny gradient would look unbounded). A search that
# ends there, having decreased f, has followed a descent ray: the objective is unbounded below.
_BIG_STEP = 1e10


def longest_step(x_norm, d_norm, dtype):
    """The step of an unconstrained search at which ``x`` has moved ``_BIG_STEP max(1, |x|_inf)``,
    and never shorter than L-BFGS-B's 1e10 direction lengths (so scipy's searches are unchanged).
    ``x_norm`` and ``d_norm`` are the infinity norms of the point and the direction."""
    scale = jnp.maximum(1.0, x_norm) / d_norm
    step = _BIG_STEP * jnp.maximum(1.0, jnp.where(jnp.isfinite(scale), scale, 1.0))
    return jnp.minimum(step, jnp.finfo(dtype).max)  # a finite limit in float32 too


def rounding_step(x, d):
    """The step below which ``x + stp d`` rounds to ``x`` in every variable: a search needs no shorter
    trial. Taken per variable, so a large variable does not stop the search for a small one."""
    ratio = jnp.where(d != 0, jnp.abs(x) / jnp.where(d != 0, jnp.abs(d), 1.0), jnp.inf)
    return jnp.finfo(x.dtype).eps * jnp.min(ratio, initial=jnp.inf)


# Branches that read fewer elements than this are computed on every trip and selected, not taken by
# ``lax.cond``: a conditional costs XLA's CPU runtime a few microseconds, more than a pass over a small
# buffer. The L-BFGS direction (two passes over a (2m, n) buffer) is needed on about 6 trips in 7;
# selected, chained Rosenbrock at n = 1000, m = 10 took 27 us per iteration against 31 branched.
SELECT_BELOW = 2**16


def cond_or_select(pred, true_fun, false_fun, *operands, select: bool):
    """``lax.cond(pred, true_fun, false_fun, *operands)``, or both branches and a select when
    ``select`` (a static choice: the branch is cheaper than a conditional)."""
    if not select:
        return lax.cond(pred, true_fun, false_fun, *operands)
    taken, other = true_fun(*operands), false_fun(*operands)
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), taken, other)


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
        of a problem not bounded on every side), or ``(f, f_prev, gd, g_norm, nit) -> stp`` (scalars:
        ``gd = g.d``, ``g_norm = |g|_2``) where ``f_prev`` is the value at the previous iterate
        (undefined when ``nit == 0``).
      direction_updates: the fields of the (``NamedTuple``) memory that ``direction`` changes; when
        not empty, ``direction`` returns ``(d, memory)`` instead of ``d`` (nonlinear CG keeps its
        previous direction, L-BFGS-B its free set and that set's Gram matrix). Only these fields
        leave the direction's branch: the large buffers stay in place.
      newton_direction: the direction is a Newton step of a model of the curvature even when the
        memory is empty (Newton, Newton-CG), so ``-g.d / 2`` is the decrease the model predicts.
      direction_size: ``(memory) -> int``, how many elements computing a direction reads (a static
        estimate of its cost), or ``None`` for an expensive direction (a Hessian). Below
        :data:`SELECT_BELOW` the direction is computed on every trip and selected where needed
        instead of branched to, so it must be pure (no callback) and tolerate the memory and point
        of any trip (a non-finite result there is discarded by the select).
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
    direction_size: Optional[Callable[[Any], int]] = None


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
    longest: Array  # the longest step of the current search (``longest_step``)
    flat: Array  # the projected gradient at x is at the rounding level of f


class _Reductions(NamedTuple):
    """What starting a search needs from the direction's vectors (all 0-d): ``g.d``, the infinity
    norms of ``d`` and ``x``, ``|d|_2`` (or ``|g|_2`` for a method's own first step), the longest
    step inside the box and the step below which ``x + stp d`` rounds to ``x``."""

    gd: Array
    dmax: Array
    xmax: Array
    norm: Array
    box: Array
    stpmin: Array


def _scalar_step(pred, fun, otherwise, *operands):
    """``lax.cond(pred, fun, otherwise, *operands)`` for a step of scalar arithmetic only.

    Besides skipping work, the conditional gives the step's dozens of small kernels their own thunk
    sequence in XLA's CPU runtime. The runtime runs a sequence whose buffers are all small inline
    and in order, but any sequence that touches a larger buffer (the loop body of a problem with
    more than 64 variables) through a concurrent scheduler that hands independent kernels to other
    threads: spread over the body, the line search's scalar kernels cost more in those hand-offs
    than in arithmetic (measured: 9.4 -> 6.7 us per iteration of L-BFGS at n = 100).
    """
    return lax.cond(pred, fun, otherwise, *operands)


def run_descent(
    value_and_grad, x0, lower, upper, method: DescentMethod, options: DescentOptions, disp=False, on_iterate=None
):
    """Minimises ``value_and_grad``'s function over the box from ``x0`` (flat vectors).

    Each trip of the loop (1) computes a search direction when the last trip ended at a new iterate,
    (2) evaluates the objective at the line search's trial step (the first trip evaluates ``x0``) and
    (3) advances the line search, accepting the trial as the next iterate when the search stops.
    There is one direction site and one evaluation site in the compiled program. Each step's
    passes over vectors are kept apart from its scalar logic (:func:`_scalar_step`).

    Args:
      value_and_grad: ``x -> (f, g)`` on flat vectors.
      x0: starting point, already inside the box.
      lower, upper: box bounds (``±inf`` where unbounded), or both ``None`` for an unconstrained
        problem of a method whose direction ignores them (no projections, nor box tests, compiled).
      method: the direction and memory of the method.
      options: tolerances and budgets.
      disp: print progress from inside the compiled loop.
      on_iterate: ``None`` or ``(x, f, g, nit, nfev) -> bool`` called at each new iterate (a user's
        callback); ``True`` stops the solve with status ``CALLBACK``.

    Returns:
      A :class:`DescentResult`.
    """
    dtype = x0.dtype
    size = x0.size
    if (lower is None) != (upper is None):
        raise ValueError("lower and upper must both be arrays or both be None")
    if lower is None:
        constrained = boxed = jnp.zeros((), bool)
    else:
        constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
        boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))

    def direction(memory, x, g):
        """The direction and the reductions over vectors that its search needs."""
        with jax.named_scope("direction"):  # names in profiles
            d = method.direction(memory, x, g, lower, upper)
        updated = None
        if method.direction_updates:
            d, memory = d
            updated = tuple(getattr(memory, name) for name in method.direction_updates)
        reductions = _Reductions(
            gd=g @ d,
            dmax=jnp.max(jnp.abs(d)),
            xmax=jnp.max(jnp.abs(x)),
            norm=jnp.linalg.norm(d if method.initial_step is None else g),
            box=max_step_in_box(x, d, lower, upper, jnp.inf),
            stpmin=rounding_step(x, d),
        )
        return d, updated, reductions

    def start_search(f, f_prev, nit, reductions):
        """Scalars only: the first trial step, the search's limits, and the direction's status."""
        gd, dmax, xmax, norm, box, stpmin = reductions
        big = longest_step(xmax, dmax, dtype)
        limit = jnp.where(constrained, jnp.minimum(box, big), big)
        first = nit == 0
        if method.initial_step is None:
            # L-BFGS-B's first step: at most 1 in a box, 1/|d| when some variable is unbounded.
            limit = jnp.where(constrained & first, jnp.minimum(limit, 1.0), limit)
            stp = jnp.where(first & ~boxed, 1.0 / norm, 1.0)
        else:
            stp = method.initial_step(f, f_prev, gd, norm, nit)
        limit = limit.astype(dtype)
        # Below stpmin x + stp d rounds to x: the search stops there instead of shrinking forever.
        search = ls_lib.line_search_init(f, gd, stp, limit, jnp.minimum(stpmin, limit))
        # A zero direction is a zero step: converged under a step-size test (Newton-CG's inner CG
        # proposes no step when the gradient is so small that its curvature is below rounding).
        # A non-finite direction at a finite point (Newton's Hessian overflowed) is NONFINITE.
        status = jnp.where((dmax == 0) & (options.xtol >= 0), Status.XTOL, Status.RUNNING)
        status = jnp.where(jnp.isfinite(dmax), status, Status.NONFINITE).astype(jnp.int32)
        return search, status, big.astype(dtype)

    def new_direction(state: _State) -> _State:
        # The memory is only read inside the conditional (and reset by a masked, in-place update
        # outside it): passing large buffers through a branch would make XLA copy them every trip.
        # (Only the small fields named by ``direction_updates`` leave the branch.)
        memory = method.reset_memory(state.memory, state.need_direction & state.forget)
        empty = method.memory_is_empty(memory)
        unchanged = tuple(getattr(memory, name) for name in method.direction_updates) or None
        cheap = method.direction_size is not None and method.direction_size(memory) < SELECT_BELOW
        zeros = _Reductions(*(jnp.zeros((), dtype) for _ in _Reductions._fields))
        d, updated, reductions = cond_or_select(
            state.need_direction, direction, lambda *_: (state.d, unchanged, zeros), memory, state.x, state.g,
            select=cheap,
        )
        if method.direction_updates:
            memory = memory._replace(**dict(zip(method.direction_updates, updated)))
        search, direction_status, longest = _scalar_step(
            state.need_direction, start_search,
            lambda *_: (state.search, jnp.int32(Status.RUNNING), state.longest),
            state.f, state.f_prev, state.nit, reductions,
        )
        # An uphill direction: retry next trip without memory, or give up if there was none. So is
        # a non-finite direction from a memory (L-BFGS-B's subspace system singular at a kink): the
        # objective is not at fault; without a memory it is NONFINITE (Newton's Hessian overflowed).
        retry = state.need_direction & ~empty & ~jnp.isfinite(reductions.dmax)
        uphill = state.need_direction & (search.task == ls_lib.ERROR) | retry
        status = jnp.where(uphill & empty, Status.LINESEARCH_FAILED, state.status)
        status = jnp.where((direction_status != Status.RUNNING) & ~retry, direction_status, status)
        return state._replace(
            d=d, search=search, memory=memory, status=status, need_direction=uphill, forget=uphill, longest=longest
        )

    class _Trial(NamedTuple):
        """What the scalar logic of a trip needs from the evaluation (all 0-d)."""

        f: Array
        gd: Array  # g_trial . d
        sy: Array  # s . y of the step to the trial point
        pg_norm: Array  # infinity norm of the projected gradient at the trial point
        g_finite: Array
        s_l1: Array  # L1 norm of the step
        g_l1: Array  # L1 norms of the gradient and projected gradient at the trial point
        pg_l1: Array

    class _Outcome(NamedTuple):
        search: Any
        keep: Array  # store the pair (s, y)
        moved: Array  # the trial is the new iterate
        accepted: Array  # ... after a search (not the first evaluation)
        f: Array
        f_prev: Array
        nit: Array
        nfev: Array
        status: Array
        need_direction: Array
        forget: Array
        flat: Array

    def judge(state: _State, trial: _Trial, empty) -> _Outcome:
        """Scalars only: moves the search, or takes the trial as the next iterate, and the status."""
        f, f_trial = state.f, trial.f
        initial = state.nfev == 0
        nfev = state.nfev + 1
        search = ls_lib.line_search_step(state.search, f_trial, trial.gd, method.c1, method.c2, method.xtol)
        searching = search.task == ls_lib.SEARCHING
        unbounded = ~initial & (f_trial == -jnp.inf)
        stopped = (search.task == ls_lib.CONVERGED) | (search.task == ls_lib.WARNING)
        # MINPACK-2 (and scipy) accept a warning step even where f rose; a descent method must never
        # return a worse point, so such a step is a failed search. So is a step that left f unchanged
        # when ftol is 0 (the default) or absent (BFGS, CG: -inf): it is a stall, success only at a
        # rounding-level gradient.
        # With a positive ftol (scipy's) the step is taken as scipy takes it, and the solve stops
        # there, as scipy's, but as LINESEARCH_FAILED: FTOL is never success after an increase.
        refused = ~initial & stopped & (f_trial >= f) & (options.ftol <= 0)
        accepted = ~unbounded & (initial | (stopped & ~refused))
        failed = ~unbounded & ~initial & (
            (search.task == ls_lib.ERROR) | (searching & (search.nfev >= options.maxls)) | refused
        )
        out_of_budget = ~unbounded & ~initial & ~accepted & ~(failed & empty) & (nfev >= options.maxfun)

        # The trial as the next iterate (used where ``accepted``).
        stp = jnp.where(initial, 0.0, search.stp)
        nit = jnp.where(initial, 0, state.nit + accepted.astype(jnp.int32))
        # Keep the pair only if the curvature s.y is safely positive (L-BFGS-B's test).
        keep = accepted & ~initial & (trial.sy > jnp.finfo(dtype).eps * (-state.search.ginit * stp))
        iterate_status = iterate_status_of(
            f_trial, jnp.where(initial, f_trial, f), trial.pg_norm, trial.g_finite, nit, nfev,
            options.gtol, options.ftol, options.maxiter, options.maxfun, initial,
        )
        # A search that ended at the longest unconstrained step followed a descent ray.
        ray = (stp >= state.longest) & (f_trial < f) & (iterate_status == Status.RUNNING)
        iterate_status = jnp.where(ray, Status.UNBOUNDED, iterate_status)
        rose = ~initial & (f_trial > f) & (iterate_status == Status.RUNNING)
        iterate_status = jnp.where(rose, Status.LINESEARCH_FAILED, iterate_status)
        small_step = ~initial & (trial.s_l1 <= options.xtol) & (iterate_status == Status.RUNNING)
        # A small step is convergence if it met the Wolfe conditions, or if rounding stopped the
        # search where the gradient is at the rounding level of f (float32 near a minimiser); a
        # search stopped by rounding at a large gradient (a kink, a discontinuity) failed.
        wolfe = search.task == ls_lib.CONVERGED
        rounding = l1_at_rounding_level(trial.g_l1, f_trial, size)
        iterate_status = jnp.where(
            small_step, jnp.where(wolfe | rounding, Status.XTOL, Status.LINESEARCH_FAILED), iterate_status
        )

        # A failed search: forget the memory and search again (L-BFGS-B's restart), or give up. A
        # stall where the gradient is at the rounding level of f is success (FTOL: f's reduction
        # reached 0, also for BFGS and CG, which have no ftol option): the gradient is small against
        # f, or the decrease that the curvature model predicts, -g.d / 2, is below the rounding of f
        # (a badly scaled problem at its minimum, whose gradient the arithmetic cannot resolve:
        # Meyer's |g| = 3e-3 at f = 88).
        newton_step = method.newton_direction | ~empty
        predicted_decrease = -0.5 * state.search.ginit
        at_rounding_level = state.flat | (
            newton_step & (predicted_decrease <= jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f), 1.0))
        )
        converged = refused & at_rounding_level
        failure = jnp.where(search.nonfinite, Status.NONFINITE, Status.LINESEARCH_FAILED)
        status = jnp.where(accepted, iterate_status, state.status)
        status = jnp.where(failed & empty, failure, status)
        status = jnp.where(out_of_budget, Status.MAXFUN, status)
        status = jnp.where(converged, Status.FTOL, status)
        status = jnp.where(unbounded, Status.UNBOUNDED, status).astype(jnp.int32)
        moved = accepted | unbounded
        restart = failed & ~empty & ~converged
        return _Outcome(
            search=search, keep=keep, moved=moved, accepted=accepted & ~initial,
            f=jnp.where(moved, f_trial, f), f_prev=jnp.where(accepted & ~initial, f, state.f_prev),
            nit=nit, nfev=nfev, status=status,
            need_direction=accepted | restart, forget=restart,
            flat=jnp.where(moved, l1_at_rounding_level(trial.pg_l1, f_trial, size), state.flat),
        )

    def idle(state: _State, trial: _Trial, empty) -> _Outcome:
        """A trip that evaluates nothing new (the direction just failed or the solve stopped)."""
        false = jnp.zeros((), bool)
        return _Outcome(
            search=state.search, keep=false, moved=false, accepted=false, f=state.f, f_prev=state.f_prev,
            nit=state.nit, nfev=state.nfev, status=state.status, need_direction=state.need_direction,
            forget=state.forget, flat=state.flat,
        )

    def advance(state: _State) -> _State:
        """Evaluates the trial point and moves the search, or takes the trial as the next iterate."""
        active = ~state.need_direction & (state.status == Status.RUNNING)
        initial = state.nfev == 0
        # A trip with no search to advance evaluates the iterate again (and discards it), never a
        # point along a direction that was refused (it may be non-finite: the objective must not see it).
        x_trial = jnp.where(initial | ~active, state.x, project(state.x + state.search.stp * state.d, lower, upper))
        with jax.named_scope("objective"):
            f_trial, g_trial = value_and_grad(x_trial)
        f_trial = jnp.asarray(f_trial, dtype)
        s, y = x_trial - state.x, g_trial - state.g
        # Separate reductions, each reading its operands in one fused pass (stacked into one array,
        # they would be written out first: 40 MB a trip at n = 10^6). Unconstrained, the projected
        # gradient is the gradient and XLA computes each shared reduction once.
        abs_g, abs_pg = jnp.abs(g_trial), jnp.abs(projected_gradient(x_trial, g_trial, lower, upper))
        trial = _Trial(
            f=f_trial, gd=g_trial @ state.d, sy=s @ y, pg_norm=jnp.max(abs_pg, initial=0.0),
            g_finite=jnp.isfinite(jnp.max(abs_g, initial=0.0)),  # max propagates NaN
            s_l1=jnp.sum(jnp.abs(s)), g_l1=jnp.sum(abs_g), pg_l1=jnp.sum(abs_pg),
        )
        scalars = state._replace(x=None, g=None, d=None, memory=None)  # no vector enters the branch
        out = _scalar_step(active, judge, idle, scalars, trial, method.memory_is_empty(state.memory))
        with jax.named_scope("update_memory"):
            memory = method.update_memory(state.memory, s, y, out.keep)
        if disp:
            lax.cond(
                out.accepted | initial,
                lambda: jax.debug.print(
                    "iter {:5d}  f = {: .10e}  |proj g| = {:.4e}  nfev = {}", out.nit, f_trial, trial.pg_norm,
                    out.nfev,
                ),
                lambda: None,
            )
        stop = stop_requested(on_iterate, out.accepted, x_trial, f_trial, g_trial, out.nit, out.nfev)
        status = jnp.where(stop & (out.status == Status.RUNNING), Status.CALLBACK, out.status).astype(jnp.int32)
        return _State(
            x=jnp.where(out.moved, x_trial, state.x),
            f=out.f,
            g=jnp.where(out.moved, g_trial, state.g),
            f_prev=out.f_prev,
            d=state.d,
            search=out.search,
            memory=memory,
            nit=out.nit,
            nfev=out.nfev,
            status=status,
            need_direction=out.need_direction | state.need_direction,
            forget=out.forget | state.forget,
            longest=state.longest,
            flat=out.flat,
        )

    def body(state: _State) -> _State:
        return advance(new_direction(state))

    zero = jnp.zeros((), dtype)
    false = jnp.zeros((), bool)
    init = _State(
        x=x0, f=zero, g=jnp.zeros_like(x0), f_prev=zero, d=jnp.zeros_like(x0),
        search=ls_lib.line_search_init(zero, -1.0, 1.0, 1.0), memory=method.init_memory(x0),
        nit=jnp.zeros((), jnp.int32), nfev=jnp.zeros((), jnp.int32), status=jnp.int32(Status.RUNNING),
        need_direction=false, forget=false, longest=jnp.asarray(jnp.inf, dtype), flat=false,
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

    def initial_step(f, f_prev, gd, g_norm, nit):
        if start_from_gradient_norm:
            f_prev = jnp.where(nit == 0, f + g_norm / 2, f_prev)
        stp = jnp.minimum(1.0, 1.01 * 2 * (f - f_prev) / gd)
        stp = jnp.where(jnp.isfinite(stp) & (stp > 0), stp, 1.0)
        if not start_from_gradient_norm:
            stp = jnp.where(nit == 0, 1.0, stp)
        return stp.astype(gd.dtype)

    return initial_step
