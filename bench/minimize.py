"""Benchmark ``js.minimize`` (L-BFGS, L-BFGS-B) against scipy, optax and jaxopt on the same problems.

Run by hand, not in CI::

    pip install -e ".[bench]"      # scipy, scikit-learn, jaxopt (jaxopt is a bench-only peer)
    python bench/minimize.py       # full run: 12 minutes on a busy 2-core CPU, mostly compilation
    python bench/minimize.py --quick

Every solver runs in float64 in this one process, on the problems of ``jaxsecond.problems`` (the
Moré–Garbow–Hillstrom set, the Hock–Schittkowski box problems, a clipped quadratic, logistic
regression on scikit-learn's breast-cancer data and a random non-negative least-squares problem).
Per problem and solver it records whether the problem was solved (``f`` within tolerance of the
known minimum, ``problems.reached_minimum``; for logistic regression and NNLS the minimum is
computed by scipy at tight tolerances and by ``scipy.optimize.nnls``), whether a bounded solution
matches scipy's, nit, nfev, the warm solve time (median of repeats) and the first-call time
(compilation included). Summary rows: geometric means of nfev ratio and warm-time speedup against
scipy's same-family method over the problems both solve; 256 random starts solved by ``jax.vmap``
against a Python loop of scipy; and the overhead ratio ``solve time / (nfev x time of one jitted
value-and-grad)`` on extended Rosenbrock with n = 10^4 and 10^6.

The solvers are rows of ``SOLVERS``: a new method is one ``Solver(...)`` line (``jaxsecond_solver``
for any ``js.minimize`` method, ``scipy_solver`` for any ``scipy.optimize.minimize`` method, with
the Hessian or Hessian-vector product supplied by JAX where the method wants one).

All solvers get the same budget and the same gradient tolerance: at most ``MAXITER`` iterations,
gradient tolerance 1e-5 (scipy's default ``gtol``; scipy, jaxsecond use the infinity norm of the
projected gradient, optax's documented loop and jaxopt the 2-norm), history 10; line searches and
other settings are each library's defaults. Evaluation counts are each library's own: scipy's and
jaxsecond's ``nfev``; jaxopt's ``num_fun_eval``; for optax, one evaluation at the start plus the
zoom line search's steps (each step evaluates value and gradient once). The run checks every
solver's count against the calls of the objective counted with ``jax.debug.callback`` on three
problems, and times ``js.minimize`` called directly against the same call inside ``jax.jit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402 - installed with scikit-learn

# Measure the checkout this script lives in, not whatever jaxsecond is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxsecond as js  # noqa: E402
from machine import describe  # noqa: E402 (bench/ is on sys.path when run as a script)
from jaxsecond import problems  # noqa: E402

MAXITER = 2000
GTOL = 1e-5
HISTORY = 10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "minimize.md")


class Run(NamedTuple):
    """What one solve returns, on the host."""

    x: np.ndarray
    nit: int
    nfev: int


class Solver(NamedTuple):
    """A benchmark row.

    ``build(problem)`` returns ``(call, finish)`` or ``None`` when the solver does not apply (e.g.
    bounds for an unconstrained method). ``call(x0)`` runs one solve to completion (blocking) and is
    what is timed; ``finish(out)`` turns its output into a ``Run``. ``vs`` names the scipy row this
    one is compared with.
    """

    label: str
    build: Callable
    vs: str
    vmappable: bool = False


def _bounds(problem):
    return None if problem.lower is None else (jnp.asarray(problem.lower), jnp.asarray(problem.upper))


# ----------------------------------------------------------------------------------- solvers


def jaxsecond_solver(method: str, bounded_method: str | None = None) -> Callable:
    """``js.minimize(fun, x0, method=...)``, called as a user calls it (no outer ``jit``)."""

    def build(problem):
        if problem.bounded and bounded_method is None:
            return None
        name = bounded_method if problem.bounded else method
        bounds = _bounds(problem)
        options = {"maxiter": MAXITER, "gtol": GTOL, "maxcor": HISTORY}

        def call(x0):
            return jax.block_until_ready(
                js.minimize(problem.fun, x0, method=name, bounds=bounds, options=options))

        def finish(res):
            return Run(np.asarray(res.x), int(res.nit), int(res.nfev))

        return call, finish

    return build


_SCIPY_HESSP = {"newton-cg", "trust-ncg", "trust-krylov"}
_SCIPY_HESS = {"trust-exact", "dogleg"}


def scipy_solver(method: str) -> Callable:
    """``scipy.optimize.minimize(method=...)`` fed by a jitted JAX value-and-grad (and Hessian)."""
    bounded = method.lower() in {"l-bfgs-b", "tnc", "slsqp", "trust-constr", "nelder-mead", "powell"}

    def build(problem):
        if problem.bounded and not bounded:
            return None
        value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
        extra = {}
        if method.lower() in _SCIPY_HESSP:
            hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(problem.fun), (x,), (v,))[1])
            extra["hessp"] = lambda x, v: np.asarray(hvp(x, v))
        if method.lower() in _SCIPY_HESS:
            hess = jax.jit(jax.hessian(problem.fun))
            extra["hess"] = lambda x: np.asarray(hess(x))
        bounds = None if not problem.bounded else scipy.optimize.Bounds(problem.lower, problem.upper)
        options = {"maxiter": MAXITER, "gtol": GTOL}
        if method.lower() == "l-bfgs-b":
            options["maxcor"] = HISTORY

        def fg(x):
            f, g = value_and_grad(x)
            return float(f), np.asarray(g)

        def call(x0):
            return scipy.optimize.minimize(fg, np.asarray(x0), jac=True, method=method,
                                           bounds=bounds, options=options, **extra)

        def finish(res):
            return Run(np.asarray(res.x), int(res.nit), int(res.nfev))

        return call, finish

    return build


def optax_lbfgs_loop(fun, *, maxiter=MAXITER, gtol=GTOL, norm_ord=None):
    """A traceable ``x0 -> (x, nit, nfev)``: ``optax.lbfgs`` (zoom line search) in a
    ``lax.while_loop``, as optax's documentation shows, counting evaluations on the way. It stops
    when the gradient's norm (``optax.tree.norm(..., ord=norm_ord)``; 2-norm by default, as
    optax's documented loop) is below ``gtol`` or after ``maxiter`` iterations."""
    opt = optax.lbfgs(memory_size=HISTORY)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        x, state, nfev = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        nfev = nfev + optax.tree.get(state, "num_linesearch_steps")
        return optax.apply_updates(x, updates), state, nfev

    def keep_going(carry):
        _, state, _ = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"), ord=norm_ord)
        return (count == 0) | ((count < maxiter) & (grad_norm >= gtol))

    def solve(x0):
        # One evaluation at x0 (value_and_grad_from_state finds no stored value), then one per
        # line-search step; the last step's value and gradient are reused by the next iteration.
        x, state, nfev = jax.lax.while_loop(keep_going, step, (x0, opt.init(x0), jnp.asarray(1)))
        return x, optax.tree.get(state, "count"), nfev

    return solve


def optax_lbfgs(problem, counted_fun=None):
    """``optax.lbfgs`` in a jitted ``lax.while_loop`` (unconstrained only)."""
    if problem.bounded:
        return None
    run = jax.jit(optax_lbfgs_loop(counted_fun or problem.fun))

    def call(x0):
        return jax.block_until_ready(run(x0))

    def finish(out):
        x, nit, nfev = out
        return Run(np.asarray(x), int(nit), int(nfev))

    return call, finish


def jaxopt_lbfgs(problem, counted_fun=None):
    """``jaxopt.LBFGS`` / ``jaxopt.LBFGSB`` (``pip install jaxopt``; not a jaxsecond dependency)."""
    import jaxopt  # noqa: PLC0415 - optional peer

    fun = counted_fun or problem.fun
    common = {"fun": fun, "maxiter": MAXITER, "tol": GTOL, "history_size": HISTORY}
    if problem.bounded:
        solver = jaxopt.LBFGSB(**common)
        bounds = _bounds(problem)
        run = jax.jit(lambda x0: solver.run(x0, bounds=bounds))
    else:
        solver = jaxopt.LBFGS(**common)
        run = jax.jit(solver.run)

    def call(x0):
        return jax.block_until_ready(run(x0))

    def finish(out):
        return Run(np.asarray(out.params), int(out.state.iter_num), int(out.state.num_fun_eval))

    return call, finish


SOLVERS = [
    Solver("scipy L-BFGS-B", scipy_solver("L-BFGS-B"), vs="scipy L-BFGS-B"),
    Solver("jaxsecond l-bfgs(-b)", jaxsecond_solver("l-bfgs", "l-bfgs-b"), vs="scipy L-BFGS-B",
           vmappable=True),
    Solver("optax.lbfgs", optax_lbfgs, vs="scipy L-BFGS-B", vmappable=True),
    Solver("jaxopt LBFGS(-B)", jaxopt_lbfgs, vs="scipy L-BFGS-B", vmappable=True),
    # Later methods are one line each, e.g.:
    # Solver("scipy BFGS", scipy_solver("BFGS"), vs="scipy BFGS"),
    # Solver("jaxsecond bfgs", jaxsecond_solver("bfgs"), vs="scipy BFGS", vmappable=True),
    # Solver("scipy Newton-CG", scipy_solver("Newton-CG"), vs="scipy Newton-CG"),
    # Solver("jaxsecond newton-cg", jaxsecond_solver("newton-cg"), vs="scipy Newton-CG"),
]


def available_solvers():
    """The rows whose library is importable (``js.minimize`` and jaxopt may be missing)."""
    rows = []
    for s in SOLVERS:
        if s.label.startswith("jaxsecond") and not hasattr(js, "minimize"):
            print(f"# skipping {s.label}: jaxsecond.minimize is not in this checkout")
            continue
        if s.label.startswith("jaxopt"):
            try:
                import jaxopt  # noqa: F401, PLC0415
            except ImportError:
                print(f"# skipping {s.label}: pip install jaxopt")
                continue
        rows.append(s)
    return rows


# ----------------------------------------------------------------------------------- problems


def benchmark_problems(quick: bool):
    """The problem set; logistic regression and NNLS get a reference minimum computed here."""
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415 - bench-only dependency

    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(0)) / features.std(0)
    logreg = problems.logistic_regression(features, labels, l2=1e-3,
                                          name="logreg_breast_cancer")
    rng = np.random.default_rng(0)
    matrix, rhs = rng.normal(size=(200, 100)), rng.normal(size=200)
    nnls = problems.nonnegative_least_squares(matrix, rhs, name="nnls_200x100")
    _, rnorm = scipy.optimize.nnls(matrix, rhs)
    nnls = dataclasses.replace(nnls, fstar=0.5 * rnorm ** 2)
    logreg = dataclasses.replace(logreg, fstar=_tight_scipy_minimum(logreg))
    data_driven = (logreg, nnls)
    if quick:
        names = {"rosenbrock", "beale", "wood", "osborne2", "extended_rosenbrock_n100", "hs4", "hs45",
                 "clipped_quadratic_n20"}
        return tuple(p for p in problems.mgh_problems() + problems.bounded_problems()
                     if p.name in names) + data_driven
    return problems.mgh_problems() + problems.bounded_problems() + data_driven


def _tight_scipy_minimum(problem):
    value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
    res = scipy.optimize.minimize(lambda x: tuple(np.asarray(v) for v in value_and_grad(x)),
                                  problem.x0, jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 100000})
    return float(res.fun)


# ----------------------------------------------------------------------------------- timing


def time_solver(solver, problem, min_repeats, min_seconds):
    """First-call time, warm median, and the Run, or None when the solver does not apply."""
    built = solver.build(problem)
    if built is None:
        return None
    call, finish = built
    x0 = start_point(problem)
    x0 = x0 if solver.label.startswith("scipy") else jnp.asarray(x0)
    t = time.perf_counter()
    out = call(x0)
    first = time.perf_counter() - t
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_seconds
                                       and len(times) < 50):
        t = time.perf_counter()
        out = call(x0)
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), min(times), finish(out)


def start_point(problem):
    """The published start, projected into the box: HS 2 and HS 45 start outside it. scipy and
    jaxsecond project it themselves; jaxopt's LBFGSB does not and would wander outside."""
    if not problem.bounded:
        return problem.x0
    return np.clip(problem.x0, problem.lower, problem.upper)


def feasible(problem, x):
    if not problem.bounded:
        return True
    slack = 1e-10 * (1.0 + np.abs(x))
    return bool(np.all(x >= problem.lower - slack) and np.all(x <= problem.upper + slack))


@dataclasses.dataclass
class Row:
    problem: str
    n: int
    solver: str
    solved: bool
    x_matches_scipy: bool | None
    f: float
    nit: int
    nfev: int
    warm: float
    best: float
    first: float


def run_table(solvers, problem_set, min_repeats, min_seconds):
    rows = []
    for p in problem_set:
        value = jax.jit(p.fun)
        scipy_x = None
        for s in solvers:
            timed = time_solver(s, p, min_repeats, min_seconds)
            if timed is None:
                continue
            first, warm, best, run = timed
            f = float(value(run.x))
            if s.label == s.vs:
                scipy_x = run.x
            match = None
            if p.bounded and scipy_x is not None:
                match = bool(np.max(np.abs(run.x - scipy_x)) <= 1e-3 * (1.0 + np.max(np.abs(scipy_x))))
            solved = problems.reached_minimum(p, f) and feasible(p, run.x)
            row = Row(p.name, p.n, s.label, solved, match, f, run.nit, run.nfev, warm, best, first)
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


# ----------------------------------------------------------------------------------- summaries


def geomean(values):
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def summary(rows, solvers):
    lines = []
    by = {(r.problem, r.solver): r for r in rows}
    problem_names = list(dict.fromkeys(r.problem for r in rows))
    for s in solvers:
        mine = [r for r in rows if r.solver == s.label]
        solved = [r for r in mine if r.solved]
        line = f"{s.label}: solved {len(solved)}/{len(mine)}"
        if s.label != s.vs:
            pairs = [(r, by[(r.problem, s.vs)]) for r in solved
                     if (r.problem, s.vs) in by and by[(r.problem, s.vs)].solved]
            ref_solved = [p for p in problem_names if (p, s.vs) in by and by[(p, s.vs)].solved]
            missed = [p for p in ref_solved if (p, s.label) in by and not by[(p, s.label)].solved]
            nfev = geomean([a.nfev / b.nfev for a, b in pairs])
            speed = geomean([b.warm / a.warm for a, b in pairs])
            line += (f"; over the {len(pairs)} problems both it and {s.vs} solve: geomean nfev ratio "
                     f"{nfev:.3f}, geomean warm speedup {speed:.2f}x; "
                     f"misses {len(missed)} that {s.vs} solves{': ' + ', '.join(missed) if missed else ''}")
            bounded = [r for r in mine if r.x_matches_scipy is not None]
            if bounded:
                line += (f"; bounded x matches scipy on {sum(r.x_matches_scipy for r in bounded)}/"
                         f"{len(bounded)}")
        line += f"; median first call {statistics.median(r.first for r in mine):.2f} s"
        unsolved = [r.problem for r in mine if not r.solved]
        line += f"; not solved: {', '.join(unsolved) if unsolved else 'none'}"
        lines.append(line)
    js_label = next((s.label for s in solvers if s.label.startswith("jaxsecond")), None)
    if js_label:
        for peer in (s.label for s in solvers if s.label.startswith(("optax", "jaxopt"))):
            slower = [p for p in problem_names if (p, js_label) in by and (p, peer) in by
                      and by[(p, js_label)].warm > by[(p, peer)].warm]
            lines.append(f"{js_label} slower (warm) than {peer} on {len(slower)} problems"
                         f"{': ' + ', '.join(slower) if slower else ''}")
            # Issue #11's measure: warm time against the peer on the small problems (n <= 100).
            small = [(by[(p, js_label)].warm / by[(p, peer)].warm, p) for p in problem_names
                     if (p, js_label) in by and (p, peer) in by and by[(p, js_label)].n <= 100]
            if small:
                worst = max(small)
                lines.append(f"{js_label} warm / {peer} warm on the {len(small)} problems with n <= 100: geomean "
                             f"{geomean([r for r, _ in small]):.2f}, worst {worst[0]:.2f} ({worst[1]})")
            firsts = [by[(p, js_label)].first / by[(p, peer)].first for p in problem_names
                      if (p, js_label) in by and (p, peer) in by]
            lines.append(f"{js_label} first call / {peer} first call: geomean {geomean(firsts):.2f}")
    return lines


def vmap_starts(solvers, count, seed=0):
    """``count`` random starts of extended Rosenbrock (n=10): jax.vmap of each solver vs a scipy loop."""
    problem = problems.extended_rosenbrock(10)
    rng = np.random.default_rng(seed)
    starts = problem.x0 + rng.uniform(-1.0, 1.0, size=(count, problem.n))
    lines = []
    scipy_row = next(s for s in solvers if s.label == "scipy L-BFGS-B")
    call, finish = scipy_row.build(problem)
    call(starts[0])  # compile the value-and-grad
    t = time.perf_counter()
    runs = [finish(call(x0)) for x0 in starts]
    scipy_time = time.perf_counter() - t
    value = jax.jit(jax.vmap(problem.fun))
    scipy_solved = sum(problems.reached_minimum(problem, f)
                       for f in value(np.stack([r.x for r in runs])))
    lines.append(f"{count} starts, extended Rosenbrock n=10: scipy L-BFGS-B loop {scipy_time:.3f} s, "
                 f"solved {scipy_solved}/{count}")
    for s in solvers:
        if not s.vmappable:
            continue
        vmapped = jax.jit(jax.vmap(_vmappable_solve(s, problem)))
        xs = jnp.asarray(starts)
        t = time.perf_counter()
        jax.block_until_ready(vmapped(xs))
        first = time.perf_counter() - t
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = jax.block_until_ready(vmapped(xs))
            times.append(time.perf_counter() - t)
        warm = statistics.median(times)
        solved = sum(problems.reached_minimum(problem, f) for f in value(out))
        lines.append(f"  jax.vmap of {s.label}: {warm:.3f} s warm ({first:.2f} s first call), "
                     f"solved {solved}/{count}, {scipy_time / warm:.1f}x faster than the scipy loop")
    return lines


def _vmappable_solve(solver, problem):
    """A traceable ``x0 -> x`` for ``jax.vmap``."""
    if solver.label.startswith("jaxsecond"):
        return lambda x0: js.minimize(problem.fun, x0, method="l-bfgs",
                                      options={"maxiter": MAXITER, "gtol": GTOL}).x
    if solver.label.startswith("optax"):
        loop = optax_lbfgs_loop(problem.fun)
        return lambda x0: loop(x0)[0]
    if solver.label.startswith("jaxopt"):
        import jaxopt  # noqa: PLC0415

        lbfgs = jaxopt.LBFGS(fun=problem.fun, maxiter=MAXITER, tol=GTOL, history_size=HISTORY)
        return lambda x0: lbfgs.run(x0).params
    raise ValueError(f"no vmappable form for {solver.label}")


def overhead(solvers, n, min_repeats, min_seconds):
    """``solve time / (nfev x one jitted value-and-grad)`` on extended Rosenbrock of size n."""
    problem = problems.extended_rosenbrock(n)
    value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
    x0 = jnp.asarray(problem.x0)
    jax.block_until_ready(value_and_grad(x0))
    times = []
    for _ in range(200):
        t = time.perf_counter()
        jax.block_until_ready(value_and_grad(x0))
        times.append(time.perf_counter() - t)
    t_eval = statistics.median(times)
    lines = [f"extended Rosenbrock n={n}: one jitted value-and-grad {t_eval * 1e6:.1f} us"]
    for s in solvers:
        timed = time_solver(s, problem, min_repeats, min_seconds)
        if timed is None:
            continue
        first, warm, _, run = timed
        f = float(jax.jit(problem.fun)(run.x))
        lines.append(f"  {s.label}: solve {warm * 1e3:.2f} ms, nfev {run.nfev}, overhead ratio "
                     f"{warm / (run.nfev * t_eval):.2f}, solved {problems.reached_minimum(problem, f)}")
    return lines


def front_end(min_repeats, min_seconds):
    """``js.minimize`` called directly (as users do) against the same call inside ``jax.jit``: the
    difference is the per-call cost of validation, flattening and the compile-cache lookup."""
    lines = []
    for problem in (problems.rosenbrock(), problems.extended_rosenbrock(10_000)):
        direct = jaxsecond_solver("l-bfgs")(problem)[0]
        jitted = jax.jit(lambda x0, fun=problem.fun: js.minimize(
            fun, x0, method="l-bfgs", options={"maxiter": MAXITER, "gtol": GTOL, "maxcor": HISTORY}))
        x0 = jnp.asarray(problem.x0)
        timings = []
        for call in (direct, lambda x: jax.block_until_ready(jitted(x))):
            call(x0)
            times = []
            start = time.perf_counter()
            while len(times) < min_repeats or (time.perf_counter() - start < min_seconds
                                               and len(times) < 50):
                t = time.perf_counter()
                call(x0)
                times.append(time.perf_counter() - t)
            timings.append(statistics.median(times))
        lines.append(f"{problem.name}: js.minimize direct {timings[0] * 1e3:.3f} ms, inside jax.jit "
                     f"{timings[1] * 1e3:.3f} ms (front end {(timings[0] - timings[1]) * 1e3:.3f} ms)")
    return lines


def check_counts(solvers):
    """Count calls of the objective with jax.debug.callback and compare with each solver's nfev."""
    lines = []
    for p in (problems.rosenbrock(), problems.wood(), problems.hs4()):
        for s in solvers:
            calls = []

            def counted(x, fun=p.fun, calls=calls):
                jax.debug.callback(lambda: calls.append(1))
                return fun(x)

            counted_problem = dataclasses.replace(p, fun=counted)
            if s.build in (optax_lbfgs, jaxopt_lbfgs):
                built = s.build(p, counted_fun=counted)
            else:
                built = s.build(counted_problem)
            if built is None:
                continue
            call, finish = built
            x0 = start_point(p) if s.label.startswith("scipy") else jnp.asarray(start_point(p))
            run = finish(call(x0))
            jax.effects_barrier()
            lines.append(f"{p.name:12s} {s.label:22s} reported nfev {run.nfev:4d}, "
                         f"counted calls {len(calls):4d}")
    return lines


# ----------------------------------------------------------------------------------- output


HEADER = ("| problem | n | solver | solved | x≈scipy | f | nit | nfev | warm ms | best ms | first s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(r):
    match = "" if r.x_matches_scipy is None else ("yes" if r.x_matches_scipy else "no")
    return (f"| {r.problem} | {r.n} | {r.solver} | {'yes' if r.solved else 'no'} | {match} | "
            f"{r.f:.6g} | {r.nit} | {r.nfev} | {r.warm * 1e3:.2f} | {r.best * 1e3:.2f} | {r.first:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few problems, one repeat")
    parser.add_argument("--skip-count-check", action="store_true",
                        help="skip counting objective calls with jax.debug.callback")
    parser.add_argument("--starts", type=int, default=256, help="random starts for the vmap row")
    parser.add_argument("--large-n", type=int, nargs="+", default=[10_000, 1_000_000],
                        help="sizes of extended Rosenbrock for the overhead ratio")
    parser.add_argument("--output", default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    # scipy's L-BFGS-B calls LAPACK on (2m x 2m) matrices every iteration; OpenBLAS's thread pool
    # only adds synchronisation there (up to milliseconds per iteration on a busy 2-core machine),
    # so BLAS gets one thread for the whole run: scipy's fastest setting. JAX does not use it.
    threadpool_limits(1, user_api="blas")
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    min_repeats, min_seconds = (1, 0.0) if args.quick else (5, 0.1)

    header = [f"Command: `{command}`", "", f"Machine: {describe('optax', 'scipy', 'numpy', 'jaxopt')}", ""]
    print("\n".join(header))
    solvers = available_solvers()
    print(HEADER)
    start = time.perf_counter()
    rows = run_table(solvers, benchmark_problems(args.quick), min_repeats, min_seconds)
    sections = [("Summary (problems solved; ratios against scipy over problems both solve)",
                 summary(rows, solvers)),
                ("vmap over random starts", vmap_starts(solvers, args.starts)),
                ("Overhead ratio at large n",
                 [line for n in args.large_n
                  for line in overhead(solvers, n, min_repeats, min_seconds)])]
    if any(s.label.startswith("jaxsecond") for s in solvers):
        sections.append(("js.minimize front-end cost per call", front_end(min_repeats, min_seconds)))
    if not args.skip_count_check:
        sections.append(("Evaluation counts checked by counting objective calls",
                         check_counts(solvers)))
    elapsed = time.perf_counter() - start
    text = header + [
        f"Settings: float64; maxiter {MAXITER}, gradient tolerance {GTOL}, history {HISTORY}; "
        "scipy runs with one BLAS thread (threadpoolctl), its fastest setting here; "
        "bounded problems start from the published x0 projected into the box; "
        "warm time is the median of at least "
        f"{min_repeats} repeats; first call includes compilation. Total run time {elapsed:.0f} s.",
        "", HEADER] + [format_row(r) for r in rows]
    for title, lines in sections:
        text += ["", f"## {title}", ""] + [f"- {line}" for line in lines]
        print(f"\n## {title}")
        print("\n".join(lines))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write("# bench/minimize.py\n\n" + "\n".join(text) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
