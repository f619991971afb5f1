"""Batched solves under ``jax.vmap`` against a loop of single solves (Newton and L-BFGS-B).

Under ``vmap`` a ``lax.cond`` becomes a ``select``: both branches run on every loop trip, so
Newton's Hessian and Cholesky and L-BFGS-B's breakpoint sort run on every line-search trip of a
batched solve, not only when a new direction is needed. This measures what that costs: warm time of
one vmapped solve over B problems against B single solves in a Python loop (each warm, compiled
once), and the trips each makes.

    python bench/vmap_cost.py
"""

import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import jaxsecond as js  # noqa: E402
from machine import describe  # noqa: E402


def logistic(w, X, y, l2):
    z = X @ w
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w


def median_time(call, repeats=5):
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    rng = np.random.default_rng(0)
    batch, n = 32, 50
    X = jnp.asarray(rng.normal(size=(200, n)))
    y = jnp.asarray((rng.random(200) < 0.5).astype(float))
    l2s = jnp.logspace(-3, 0, batch)
    lines = ["| method | vmapped solve (s) | loop of single solves (s) | ratio | iterations (max / sum) |",
             "|---|---|---|---|---|"]
    for method, bounds in (("newton", None), ("l-bfgs-b", (-0.1, 0.1))):
        solve = jax.jit(lambda l2: js.minimize(logistic, jnp.zeros(n), args=(X, y, l2), method=method, bounds=bounds))
        batched = jax.jit(jax.vmap(lambda l2: js.minimize(logistic, jnp.zeros(n), args=(X, y, l2), method=method,
                                                          bounds=bounds)))
        t_vmap = median_time(lambda: batched(l2s).x)
        t_loop = median_time(lambda: [solve(l2).x for l2 in l2s])
        nit = np.asarray(batched(l2s).nit)
        lines.append(f"| {method} | {t_vmap:.4f} | {t_loop:.4f} | {t_vmap / t_loop:.2f} | {nit.max()} / {nit.sum()} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(__file__), "results", "vmap_cost.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# vmap against a loop\n\nCommand: `python bench/vmap_cost.py`\n\nMachine: {describe()}\n\n"
                 f"{batch} L2-regularised logistic regressions (200 x {n}), one per L2 strength.\n\n{text}\n")


if __name__ == "__main__":
    main()
