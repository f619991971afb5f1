"""The line-search descent loop shared by the quasi-Newton (and later Newton and CG) methods.

A method supplies a search direction and a curvature memory (:class:`DescentMethod`); this module
does everything else: the initial evaluation, the Moré–Thuente search, the convergence tests, the
restart after a failed search, and the bookkeeping. It is one ``lax.while_loop`` whose body makes
exactly one objective-and-gradient evaluation, in the reverse-communication style of L-BFGS-B:
either the line search wants another trial, or the trial is accepted and the next direction is
computed in the same trip. One evaluation site keeps compile times short, and under ``vmap`` every
problem advances one evaluation per trip and stops on its own criteria.
"""

from typing import Any, Callable, NamedTuple

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
    """

    init_memory: Callable[[Array], Any]
    direction: Callable[..., Array]
    update_memory: Callable[[Any, Array, Array], Any]
    reset_memory: Callable[[Any], Any]
    memory_is_empty: Callable[[Any], Array]
    c1: float = 1e-3
    c2: float = 0.9
    xtol: float = 0.1


class DescentOptions(NamedTuple):
    gtol: Array
    ftol: Array
    maxiter: Array
    maxfun: Array
    maxls: Array


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
    d: Array  # search direction
    search: ls_lib.LineSearchState
    memory: Any
    nit: Array
    nfev: Array
    status: Array


def run_descent(value_and_grad, x0, lower, upper, method: DescentMethod, options: DescentOptions, disp=False):
    """Minimises ``value_and_grad``'s function over the box from ``x0`` (flat vectors).

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

    def start_search(memory, x, f, g, nit):
        """Direction and first trial step at a new iterate; retries once without memory if uphill."""

        def attempt(memory):
            d = method.direction(memory, x, g, lower, upper)
            limit = jnp.where(constrained, max_step_in_box(x, d, lower, upper, _BIG_STEP), _BIG_STEP)
            limit = jnp.where(constrained & (nit == 0), jnp.minimum(limit, 1.0), limit)
            first = nit == 0
            stp = jnp.where(first & ~boxed, 1.0 / jnp.linalg.norm(d), 1.0)
            return d, ls_lib.line_search_init(f, g @ d, stp, limit.astype(dtype))

        d, search = attempt(memory)
        retry = (search.task == ls_lib.ERROR) & ~method.memory_is_empty(memory)
        memory = lax.cond(retry, method.reset_memory, lambda m: m, memory)
        d, search = lax.cond(retry, lambda: attempt(memory), lambda: (d, search))
        return memory, d, search

    def initial_state():
        f0, g0 = value_and_grad(x0)
        memory = method.init_memory(x0)
        nit = jnp.zeros((), jnp.int32)
        nfev = jnp.ones((), jnp.int32)
        status, pg_norm = status_at_iterate(
            x0, f0, g0, f0, lower, upper, nit, nfev, options.gtol, options.ftol,
            options.maxiter, options.maxfun, first=True,
        )
        memory, d, search = start_search(memory, x0, f0, g0, nit)
        status = jnp.where(
            (status == Status.RUNNING) & (search.task == ls_lib.ERROR), Status.LINESEARCH_FAILED, status
        )
        if disp:
            jax.debug.print("iter {:5d}  f = {: .10e}  |proj g| = {:.4e}  nfev = {}", nit, f0, pg_norm, nfev)
        return _State(x0, f0, g0, d, search, memory, nit, nfev, status)

    def accept(state: _State, x_new, f_new, g_new, search):
        s, y = x_new - state.x, g_new - state.g
        nit = state.nit + 1
        # Keep the pair only if the curvature s.y is safely positive (L-BFGS-B's test).
        curvature_ok = s @ y > jnp.finfo(dtype).eps * (-(state.g @ state.d) * search.stp)
        memory = lax.cond(curvature_ok, method.update_memory, lambda m, s, y: m, state.memory, s, y)
        status, pg_norm = status_at_iterate(
            x_new, f_new, g_new, state.f, lower, upper, nit, state.nfev, options.gtol, options.ftol,
            options.maxiter, options.maxfun, first=False,
        )
        ray = (search.stp >= _BIG_STEP) & (status == Status.RUNNING)
        status = jnp.where(ray, Status.UNBOUNDED, status)
        if disp:
            jax.debug.print(
                "iter {:5d}  f = {: .10e}  |proj g| = {:.4e}  nfev = {}", nit, f_new, pg_norm, state.nfev
            )
        memory, d, new_search = start_search(memory, x_new, f_new, g_new, nit)
        status = jnp.where(
            (status == Status.RUNNING) & (new_search.task == ls_lib.ERROR), Status.LINESEARCH_FAILED, status
        )
        return _State(x_new, f_new, g_new, d, new_search, memory, nit, state.nfev, status)

    def restart(state: _State, search):
        """After a failed search: forget the memory and search again, or give up if it was empty."""
        empty = method.memory_is_empty(state.memory)
        memory = method.reset_memory(state.memory)
        memory, d, new_search = start_search(memory, state.x, state.f, state.g, state.nit)
        give_up = empty | (new_search.task == ls_lib.ERROR)
        failure = jnp.where(search.nonfinite, Status.NONFINITE, Status.LINESEARCH_FAILED)
        status = jnp.where(
            give_up, failure, jnp.where(state.nfev >= options.maxfun, Status.MAXFUN, Status.RUNNING)
        )
        return state._replace(d=d, search=new_search, memory=memory, status=status.astype(jnp.int32))

    def body(state: _State):
        x_trial = project(state.x + state.search.stp * state.d, lower, upper)
        f_trial, g_trial = value_and_grad(x_trial)
        state = state._replace(nfev=state.nfev + 1)
        search = ls_lib.line_search_step(
            state.search, f_trial, g_trial @ state.d, method.c1, method.c2, method.xtol
        )
        accepted = (search.task == ls_lib.CONVERGED) | (search.task == ls_lib.WARNING)
        failed = (search.task == ls_lib.ERROR) | (
            (search.task == ls_lib.SEARCHING) & (search.nfev >= options.maxls)
        )
        out_of_budget = (search.task == ls_lib.SEARCHING) & (state.nfev >= options.maxfun)
        unbounded = f_trial == -jnp.inf
        branch = jnp.where(
            unbounded, 4, jnp.where(accepted, 1, jnp.where(failed, 2, jnp.where(out_of_budget, 3, 0)))
        )
        return lax.switch(
            branch,
            [
                lambda: state._replace(search=search),
                lambda: accept(state, x_trial, f_trial, g_trial, search),
                lambda: restart(state, search),
                lambda: state._replace(search=search, status=jnp.int32(Status.MAXFUN)),
                lambda: state._replace(
                    x=x_trial, f=f_trial, g=g_trial, search=search, status=jnp.int32(Status.UNBOUNDED)
                ),
            ],
        )

    final = lax.while_loop(lambda s: s.status == Status.RUNNING, body, initial_state())
    if disp:
        jax.debug.callback(_print_final, final.status, final.nit, final.nfev, final.f)
    return DescentResult(final.x, final.f, final.g, final.nit, final.nfev, final.status)


def _print_final(status, nit, nfev, f):
    for s, i, e, v in zip(*(np.atleast_1d(a) for a in (status, nit, nfev, f))):
        print(f"{MESSAGES[Status(int(s))]}  (nit = {int(i)}, nfev = {int(e)}, f = {float(v):.10e})")
