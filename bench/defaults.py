"""What ``success`` means at default options: jaxsecond, scipy's L-BFGS-B and ``optax.lbfgs``.

On every problem of ``jaxsecond.problems`` (MGH 1-32 and the Hock-Schittkowski box problems, float64,
standard starts) each solver runs at its defaults: jaxsecond with its default ``ftol`` (0) and with
scipy's (``2.220446049250313e-09``, scipy's iterates), scipy's L-BFGS-B, and ``optax.lbfgs`` in a
jitted loop on its gradient test (``|g|_inf <= 1e-5``; unconstrained problems only). A run is *solved*
when it reaches the known minimum (``problems.reached_minimum``), and a *false success* when the
solver says success with ``|projected g|_inf > 1e-4`` (the gradient recomputed here) that is not at
the rounding level of f (``|pg|_1 <= n sqrt(eps) max(|f|, 1)``). The table ends with the geometric
mean of jaxsecond's evaluations over scipy's on the problems both solve.

    python bench/defaults.py
"""

import math
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize as so  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import jaxsecond as js  # noqa: E402
from jaxsecond import problems  # noqa: E402
from jaxsecond.bounds import projected_gradient  # noqa: E402
from machine import describe  # noqa: E402
from minimize import optax_lbfgs_loop  # noqa: E402

SCIPY_FTOL = 2.220446049250313e-09


def verdict(p, x, f, success):
    lower = np.full(p.n, -np.inf) if p.lower is None else p.lower
    upper = np.full(p.n, np.inf) if p.upper is None else p.upper
    g = jax.grad(p.fun)(jnp.asarray(x))
    pg = np.asarray(projected_gradient(jnp.asarray(x), g, jnp.asarray(lower), jnp.asarray(upper)))
    rounding = np.sum(np.abs(pg)) <= p.n * math.sqrt(np.finfo(float).eps) * max(abs(f), 1.0)
    solved = problems.reached_minimum(p, f)
    return solved, bool(success) and np.max(np.abs(pg)) > 1e-4 and not rounding, np.max(np.abs(pg))


def run(p):
    bounds = None if p.lower is None else (jnp.asarray(p.lower), jnp.asarray(p.upper))
    x0 = np.clip(p.x0, p.lower, p.upper) if p.bounded else p.x0
    rows = {}
    for label, options in (("jaxsecond", None), ("jaxsecond ftol=scipy", {"ftol": SCIPY_FTOL})):
        res = js.minimize(p.fun, jnp.asarray(x0), bounds=bounds, options=options)
        rows[label] = (*verdict(p, res.x, float(res.fun), res.success), int(res.nfev), res.message)
    vg = jax.jit(jax.value_and_grad(p.fun))
    ref = so.minimize(lambda x: tuple(np.asarray(v) for v in vg(x)), x0, jac=True, method="L-BFGS-B",
                      bounds=None if p.lower is None else list(zip(p.lower, p.upper)))
    rows["scipy"] = (*verdict(p, ref.x, float(ref.fun), ref.success), int(ref.nfev), ref.message)
    if not p.bounded:
        x, _, nfev = jax.jit(optax_lbfgs_loop(p.fun, gtol=1e-5, norm_ord=jnp.inf))(jnp.asarray(x0))
        g = np.max(np.abs(np.asarray(jax.grad(p.fun)(x))))
        rows["optax.lbfgs"] = (*verdict(p, x, float(p.fun(x)), g <= 1e-5), int(nfev), "")
    return rows


def main():
    start = time.time()
    labels = ["jaxsecond", "jaxsecond ftol=scipy", "scipy", "optax.lbfgs"]
    all_rows = {p.name: run(p) for p in problems.mgh_problems() + problems.bounded_problems()}
    lines = ["| problem | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, rows in all_rows.items():
        cells = []
        for label in labels:
            if label not in rows:
                cells.append("—")
                continue
            solved, false, pg, nfev, _ = rows[label]
            cells.append(f"{'solved' if solved else 'not solved'}{' FALSE SUCCESS' if false else ''}, "
                         f"nfev {nfev}, pg {pg:.1e}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    summary = ["", "| solver | runs | solved | false successes |", "|---|---|---|---|"]
    for label in labels:
        runs = [rows[label] for rows in all_rows.values() if label in rows]
        summary.append(f"| {label} | {len(runs)} | {sum(r[0] for r in runs)} | {sum(r[1] for r in runs)} |")
    both = [(rows["jaxsecond"][3], rows["scipy"][3]) for rows in all_rows.values()
            if rows["jaxsecond"][0] and rows["scipy"][0]]
    ratio = math.exp(np.mean([math.log(a / b) for a, b in both]))
    optax_only = [name for name, rows in all_rows.items()
                  if "optax.lbfgs" in rows and rows["optax.lbfgs"][0] and not rows["jaxsecond"][0]]
    summary += ["", f"jaxsecond/scipy evaluations, geometric mean over the {len(both)} problems both solve: "
                f"{ratio:.3f}", f"problems optax.lbfgs solves and jaxsecond does not: {optax_only or 'none'}"]
    text = "\n".join(lines + summary)
    print(text)
    header = (f"Command: `python bench/defaults.py`\n\nMachine: {describe('scipy', 'optax')}\n\n"
              f"Wall time {time.time() - start:.0f} s.\n\n")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "defaults.md"), "w", encoding="utf-8") as fh:
        fh.write("# Success at default options\n\n" + header + text + "\n")


if __name__ == "__main__":
    main()
