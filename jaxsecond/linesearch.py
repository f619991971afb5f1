"""Moré–Thuente line search (MINPACK-2 ``dcsrch``/``dcstep``) as a pure state machine.

The search is written in reverse-communication form, as MINPACK-2 writes it: the caller evaluates the
objective at ``state.stp``, hands the value and directional derivative to :func:`line_search_step`,
and reads ``state.task`` to learn whether the step is accepted or another trial is wanted. That keeps
exactly one objective evaluation per trip of the solver's ``lax.while_loop`` and lets every method
share this one search. No maintained JAX library ships this algorithm (optax and jaxopt use zoom /
backtracking searches), and it is the search scipy's L-BFGS-B uses, which is what makes our
evaluation counts comparable with scipy's.

References:
  Moré, J. J. and Thuente, D. J. (1994). Line search algorithms with guaranteed sufficient decrease.
  ACM Transactions on Mathematical Software 20(3), 286-307.
"""

import jax.numpy as jnp

from jaxsecond._packed import packed_record

# task codes
SEARCHING = 0
CONVERGED = 1
WARNING = 2  # MINPACK-2's warnings (rounding, xtol, stpmax, stpmin): the step is accepted, as scipy does
ERROR = 3  # the search could not start (ascent direction, empty step interval)

_XTRAPL = 1.1
_XTRAPU = 4.0


# The saved variables of ``dcsrch``, in one array (see :mod:`jaxsecond._packed`): the step at which
# the caller must evaluate next (or the accepted step); the best step so far, its (modified) value
# relative to finit, and derivative; the other end of the bracketing interval; the interval in which
# the next trial must lie; the smallest and largest steps allowed (stpmax shrinks after a non-finite
# trial); the trials evaluated in this search and whether one gave a non-finite value or derivative.
LineSearchState = packed_record(
    "LineSearchState",
    stp=None, stx=None, fx=None, gx=None, sty=None, fy=None, gy=None, stmin=None, stmax=None,
    stpmin=None, stpmax=None, width=None, width1=None, finit=None, ginit=None,
    brackt=bool, stage2=bool, task=jnp.int32, nfev=jnp.int32, nonfinite=bool,
)


def line_search_init(finit, ginit, stp, stpmax, stpmin=0.0) -> LineSearchState:
    """Starts a search from phi(0) = finit, phi'(0) = ginit with first trial ``stp``.

    Args:
      finit: objective value at the current point.
      ginit: directional derivative at the current point; must be negative.
      stp: first trial step; clipped to ``stpmax``.
      stpmax: largest allowed step (e.g. the distance to the boundary of a box along the direction).
      stpmin: smallest allowed step; a search that cannot decrease the objective at ``stpmin`` stops
        with a warning (e.g. the step below which ``x + stp d`` rounds to ``x``).

    Returns:
      The search state; ``task`` is ``SEARCHING`` or, when no descent step can exist (``ginit >= 0``,
      a non-finite ``ginit`` or ``stpmax <= 0``), ``ERROR``.
    """
    dtype = jnp.result_type(finit)
    finit, ginit, stpmin, stpmax = (jnp.asarray(v, dtype) for v in (finit, ginit, stpmin, stpmax))
    stp = jnp.clip(jnp.asarray(stp, dtype), stpmin, stpmax)
    ok = jnp.isfinite(ginit) & (ginit < 0) & (stpmax > 0) & (stp > 0)
    zero = jnp.zeros((), dtype)
    width = stpmax  # stpmax - stpmin with stpmin = 0
    return LineSearchState.pack(
        dtype, stp=stp, stx=zero, fx=zero, gx=ginit, sty=zero, fy=zero, gy=ginit,
        stmin=zero, stmax=stp + _XTRAPU * stp, stpmin=stpmin, stpmax=stpmax, width=width, width1=2 * width,
        finit=finit, ginit=ginit, brackt=jnp.zeros((), bool), stage2=jnp.zeros((), bool),
        task=jnp.where(ok, SEARCHING, ERROR), nfev=jnp.zeros((), jnp.int32),
        nonfinite=jnp.zeros((), bool),
    )


def _cubic_gamma(theta, s, da, db, clamp):
    radicand = (theta / s) ** 2 - (da / s) * (db / s)
    if clamp:
        radicand = jnp.maximum(radicand, 0.0)
    return s * jnp.sqrt(radicand)


def _dcstep(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded cubic/quadratic step of Moré–Thuente (MINPACK-2 ``dcstep``), vectorised."""
    sgnd = dp * jnp.sign(dx)
    theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
    s = jnp.maximum(jnp.maximum(jnp.abs(theta), jnp.abs(dx)), jnp.abs(dp))

    # Case 1: a higher function value; the minimum is bracketed.
    gamma1 = _cubic_gamma(theta, s, dx, dp, clamp=False)
    gamma1 = jnp.where(stp < stx, -gamma1, gamma1)
    r1 = ((gamma1 - dx) + theta) / (((gamma1 - dx) + gamma1) + dp)
    stpc1 = stx + r1 * (stp - stx)
    stpq1 = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
    stpf1 = jnp.where(jnp.abs(stpc1 - stx) < jnp.abs(stpq1 - stx), stpc1, stpc1 + (stpq1 - stpc1) / 2.0)

    # Case 2: lower value, derivatives of opposite sign; the minimum is bracketed.
    gamma2 = _cubic_gamma(theta, s, dx, dp, clamp=False)
    gamma2 = jnp.where(stp > stx, -gamma2, gamma2)
    r2 = ((gamma2 - dp) + theta) / (((gamma2 - dp) + gamma2) + dx)
    stpc2 = stp + r2 * (stx - stp)
    stpq2 = stp + (dp / (dp - dx)) * (stx - stp)
    stpf2 = jnp.where(jnp.abs(stpc2 - stp) > jnp.abs(stpq2 - stp), stpc2, stpq2)

    # Case 3: lower value, same sign, derivative magnitude decreases.
    gamma3 = _cubic_gamma(theta, s, dx, dp, clamp=True)
    gamma3 = jnp.where(stp > stx, -gamma3, gamma3)
    r3 = ((gamma3 - dp) + theta) / ((gamma3 + (dx - dp)) + gamma3)
    stpc3 = jnp.where(
        (r3 < 0) & (gamma3 != 0), stp + r3 * (stx - stp), jnp.where(stp > stx, stpmax, stpmin)
    )
    stpq3 = stp + (dp / (dp - dx)) * (stx - stp)
    stpf3_b = jnp.where(jnp.abs(stpc3 - stp) < jnp.abs(stpq3 - stp), stpc3, stpq3)
    stpf3_b = jnp.where(
        stp > stx, jnp.minimum(stp + 0.66 * (sty - stp), stpf3_b), jnp.maximum(stp + 0.66 * (sty - stp), stpf3_b)
    )
    stpf3_u = jnp.where(jnp.abs(stpc3 - stp) > jnp.abs(stpq3 - stp), stpc3, stpq3)
    stpf3_u = jnp.clip(stpf3_u, stpmin, stpmax)
    stpf3 = jnp.where(brackt, stpf3_b, stpf3_u)

    # Case 4: lower value, same sign, derivative magnitude does not decrease.
    theta4 = 3.0 * (fp - fy) / (sty - stp) + dy + dp
    s4 = jnp.maximum(jnp.maximum(jnp.abs(theta4), jnp.abs(dy)), jnp.abs(dp))
    gamma4 = _cubic_gamma(theta4, s4, dy, dp, clamp=False)
    gamma4 = jnp.where(stp > sty, -gamma4, gamma4)
    r4 = ((gamma4 - dp) + theta4) / (((gamma4 - dp) + gamma4) + dy)
    stpf4 = jnp.where(brackt, stp + r4 * (sty - stp), jnp.where(stp > stx, stpmax, stpmin))

    case1 = fp > fx
    case2 = ~case1 & (sgnd < 0)
    case3 = ~case1 & ~case2 & (jnp.abs(dp) < jnp.abs(dx))
    stpf = jnp.where(case1, stpf1, jnp.where(case2, stpf2, jnp.where(case3, stpf3, stpf4)))
    brackt = brackt | case1 | case2

    # Update the interval which contains a minimizer.
    sty, fy, dy = (
        jnp.where(case1, stp, jnp.where(sgnd < 0, stx, sty)),
        jnp.where(case1, fp, jnp.where(sgnd < 0, fx, fy)),
        jnp.where(case1, dp, jnp.where(sgnd < 0, dx, dy)),
    )
    stx, fx, dx = jnp.where(case1, stx, stp), jnp.where(case1, fx, fp), jnp.where(case1, dx, dp)
    return stx, fx, dx, sty, fy, dy, stpf, brackt


def line_search_step(state: LineSearchState, f, g, ftol, gtol, xtol) -> LineSearchState:
    """Feeds phi(stp) = f and phi'(stp) = g to the search (MINPACK-2 ``dcsrch``).

    Args:
      state: the search state whose ``stp`` was just evaluated.
      f: objective value at the trial step.
      g: directional derivative at the trial step.
      ftol: sufficient-decrease constant (``c1``).
      gtol: curvature constant (``c2``) of the strong Wolfe condition ``|phi'(stp)| <= gtol |phi'(0)|``.
      xtol: relative width of the bracket below which the search stops with a warning.

    Returns:
      The new state: ``task`` is ``CONVERGED`` (strong Wolfe conditions hold at ``stp``), ``WARNING``
      (MINPACK-2 stops without them; ``stp`` is still a step of sufficient decrease or the best one
      found, and scipy accepts it) or ``SEARCHING`` with the next trial in ``stp``.

    A non-finite ``f`` or ``g`` is never accepted: the search halves the step towards the best point
    and caps later trials there (a safeguard MINPACK-2 lacks; it makes e.g. ``log`` of a trial point
    outside the domain recoverable).
    """
    s = state
    finite = jnp.isfinite(f) & jnp.isfinite(g)
    # Values are kept relative to phi(0): the difference of nearby values is exact, whereas
    # ``finit + stp * gtest`` rounds to ``finit`` in float32 and would let an unchanged value pass
    # as sufficient decrease (MINPACK-2 always runs in float64, where this does not bite).
    f = f - s.finit
    gtest = ftol * s.ginit
    ftest = s.stp * gtest
    stage2 = s.stage2 | ((f <= ftest) & (g >= 0))

    warn = (
        (s.brackt & ((s.stp <= s.stmin) | (s.stp >= s.stmax)))
        | (s.brackt & (s.stmax - s.stmin <= xtol * s.stmax))
        | ((s.stp == s.stpmax) & (f <= ftest) & (g <= gtest))
        | ((s.stp == s.stpmin) & ((f > ftest) | (g >= gtest)))
    )
    conv = (f <= ftest) & (jnp.abs(g) <= gtol * (-s.ginit))
    task = jnp.where(conv, CONVERGED, jnp.where(warn, WARNING, SEARCHING))

    # In the first stage, a modified function is used to predict the step when a lower value has
    # been obtained but the decrease is not sufficient.
    modified = ~stage2 & (f <= s.fx) & (f > ftest)
    shift_f = jnp.where(modified, gtest, 0.0)
    stx, fx, gx, sty, fy, gy, stp, brackt = _dcstep(
        s.stx, s.fx - s.stx * shift_f, s.gx - shift_f,
        s.sty, s.fy - s.sty * shift_f, s.gy - shift_f,
        s.stp, f - s.stp * shift_f, g - shift_f,
        s.brackt, s.stmin, s.stmax,
    )
    fx, fy = fx + stx * shift_f, fy + sty * shift_f
    gx, gy = gx + shift_f, gy + shift_f

    # Decide whether a bisection step is needed.
    bisect = brackt & (jnp.abs(sty - stx) >= 0.66 * s.width1)
    stp = jnp.where(bisect, stx + 0.5 * (sty - stx), stp)
    width1 = jnp.where(brackt, s.width, s.width1)
    width = jnp.where(brackt, jnp.abs(sty - stx), s.width)

    stmin = jnp.where(brackt, jnp.minimum(stx, sty), stp + _XTRAPL * (stp - stx))
    stmax = jnp.where(brackt, jnp.maximum(stx, sty), stp + _XTRAPU * (stp - stx))
    stp = jnp.clip(stp, s.stpmin, s.stpmax)
    # If further progress is not possible, let stp be the best point obtained so far.
    stuck = brackt & ((stp <= stmin) | (stp >= stmax) | (stmax - stmin <= xtol * stmax))
    stp = jnp.where(stuck | ~jnp.isfinite(stp), stx, stp)
    stp = jnp.where(task == SEARCHING, stp, s.stp)  # a finished search reports the accepted step

    searched = LineSearchState.pack(
        s.stp.dtype, stp=stp, stx=stx, fx=fx, gx=gx, sty=sty, fy=fy, gy=gy, stmin=stmin, stmax=stmax,
        stpmin=s.stpmin, stpmax=s.stpmax, width=width, width1=width1, finit=s.finit, ginit=s.ginit, brackt=brackt,
        stage2=stage2, task=task, nfev=s.nfev + 1, nonfinite=s.nonfinite,
    )
    # A non-finite trial: keep the bracket, halve towards the best step, forbid longer steps.
    halved = s.stx + 0.5 * (s.stp - s.stx)
    backtracked = s._replace(
        stp=halved, stpmax=halved, stmax=jnp.minimum(s.stmax, halved),
        task=jnp.where(halved > 0, SEARCHING, ERROR), nfev=s.nfev + 1, nonfinite=True,
    )
    return LineSearchState.where(finite, searched, backtracked)
