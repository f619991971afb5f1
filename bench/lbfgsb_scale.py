"""L-BFGS-B at scale: what a bounded solve costs per evaluation, against unbounded L-BFGS and scipy.

Run by hand, not in CI::

    python bench/lbfgsb_scale.py               # n = 1e4, 1e5, 1e6
    python bench/lbfgsb_scale.py --sizes 10000 100000 --repeats 3

The problem (issue 12) is ``f(x) = sum w (x - c)^2 + 0.1 sum (x[i+1] - x[i])^2 + 0.01 sum x^4`` on
``[0, 1]^n`` in float64, with ``c`` drawn uniformly from ``[-1, 2]`` so that about half the
variables end on a bound (the table reports the fraction). Per size it reports, for
``js.minimize(method="l-bfgs-b")`` with the box, for ``js.minimize(method="l-bfgs")`` on the same
function without it, and for scipy's L-BFGS-B with the box (value and gradient by the same jitted
JAX function): nit, nfev, the warm solve time (median of repeats; compilation timed separately, on
the first call) and the overhead ratio ``solve time / (nfev x one jitted value-and-grad)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

# Measure the checkout this script lives in, not whatever jaxsecond is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxsecond as js  # noqa: E402
from machine import describe  # noqa: E402 (bench/ is on sys.path when run as a script)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "lbfgsb_scale.md")
# scipy's defaults, ftol included (jaxsecond's default ftol is 0): iterate for iterate with scipy.
OPTIONS = {"maxiter": 15000, "maxfun": 15000, "gtol": 1e-5, "ftol": 2.220446049250313e-09, "maxcor": 10}


def problem(n, seed=0):
    """``(fun, x0, w, c)`` of issue 12's test function at size ``n``."""
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.uniform(0.5, 1.5, n))
    c = jnp.asarray(rng.uniform(-1.0, 2.0, n))

    def fun(x):
        return jnp.sum(w * (x - c) ** 2) + 0.1 * jnp.sum(jnp.diff(x) ** 2) + 0.01 * jnp.sum(x**4)

    return fun, jnp.full(n, 0.5)


def median_time(call, repeats):
    """``(first call, median of warm calls, last result)``."""
    t = time.perf_counter()
    out = call()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), out


def run_size(n, repeats):
    fun, x0 = problem(n)
    value_and_grad = jax.jit(jax.value_and_grad(fun))
    _, t_eval, _ = median_time(lambda: jax.block_until_ready(value_and_grad(x0)), max(50, repeats))
    rows = []
    for method, bounds in (("l-bfgs-b", (0.0, 1.0)), ("l-bfgs", None)):
        solve = jax.jit(lambda x0, method=method, bounds=bounds: js.minimize(
            fun, x0, method=method, bounds=bounds, options=OPTIONS))
        first, warm, res = median_time(lambda solve=solve: jax.block_until_ready(solve(x0)), repeats)
        x = np.asarray(res.x)
        rows.append((f"jaxsecond {method}" + (" [0,1]" if bounds else " (no bounds)"), int(res.nit),
                     int(res.nfev), first, warm, warm / (int(res.nfev) * t_eval), float(res.fun),
                     np.mean((x == 0) | (x == 1)) if bounds else float("nan")))

    def scipy_fun(x):
        v, g = value_and_grad(jnp.asarray(x))
        return float(v), np.asarray(g)

    def scipy_solve():
        return scipy.optimize.minimize(scipy_fun, np.asarray(x0), jac=True, method="L-BFGS-B",
                                       bounds=[(0.0, 1.0)] * n,
                                       options=OPTIONS)

    first, warm, res = median_time(scipy_solve, repeats)
    rows.append(("scipy L-BFGS-B [0,1]", res.nit, res.nfev, first, warm, warm / (res.nfev * t_eval),
                 float(res.fun), np.mean((res.x == 0) | (res.x == 1))))
    return t_eval, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="warm solves per row (median)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    header = ["n", "solver", "nit", "nfev", "first call s", "warm s", "time / (nfev x eval)", "f",
              "on a bound"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in args.sizes:
        t_eval, rows = run_size(n, args.repeats)
        lines.append(f"| {n} | one jitted value-and-grad: {t_eval * 1e6:.0f} us |" + " |" * 7)
        for label, nit, nfev, first, warm, ratio, f, bound in rows:
            lines.append(f"| {n} | {label} | {nit} | {nfev} | {first:.2f} | {warm:.3f} | {ratio:.1f} | "
                         f"{f:.10g} | {'' if np.isnan(bound) else f'{bound:.2f}'} |")
        print("\n".join(lines[-len(rows) - 1:]), flush=True)
    command = "python " + " ".join(["bench/lbfgsb_scale.py", *sys.argv[1:]])
    text = "\n".join([f"Command: `{command}`", "", f"Machine: {describe('scipy')}", "", *lines, ""])
    print(text)
    if not args.no_write:
        with open(RESULTS, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
