"""Warm time to solution and time per iteration of L-BFGS in JAX: jaxsecond, optax, optimistix, jaxopt.

Chained Rosenbrock, ``f = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``, from the tiled start (-1.2, 1),
float64, history 10, every solver called inside one ``jax.jit`` (no per-call front end), each with its
own stopping rule at 1e-5 and its own line search:

- ``js.minimize(method="l-bfgs")``: infinity norm of the gradient <= 1e-5 (``gtol``);
- ``optax.lbfgs()``: the loop of optax's documentation in a ``lax.while_loop``, stopped at the same
  infinity-norm test;
- ``optimistix.LBFGS(rtol=1e-5, atol=1e-5)``: optimistix's Cauchy test on the changes of ``y`` and ``f``;
- ``jaxopt.LBFGS(tol=1e-5)``: 2-norm of the gradient (jaxopt is unmaintained; a bench-only peer).

Reported per size and solver: the warm time to solution (median of repeats), iterations, the time per
iteration, the first call's compile time (first call minus warm time) and the final gradient's infinity
norm. Run by hand::

    pip install -e ".[bench]"
    python bench/per_iteration.py            # n = 2, 100, 1000, 10^4
    python bench/per_iteration.py --quick    # n = 2, 100, 1000
"""

import argparse
import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import jaxsecond as js  # noqa: E402
from machine import describe  # noqa: E402

GTOL = 1e-5
MAXITER = 100_000


def chained_rosenbrock(x, *args):
    del args
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def run_jaxsecond(x0):
    res = js.minimize(chained_rosenbrock, x0, method="l-bfgs",
                      options={"gtol": GTOL, "maxiter": MAXITER, "maxfun": 2 * MAXITER})
    return res.x, res.nit


def run_optax(x0):
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(chained_rosenbrock)

    def step(carry):
        x, state, _, k = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=chained_rosenbrock)
        return optax.apply_updates(x, updates), state, jnp.max(jnp.abs(grad)), k + 1

    def keep_going(carry):
        _, _, gnorm, k = carry
        return (gnorm > GTOL) & (k < MAXITER)

    x, _, _, k = jax.lax.while_loop(keep_going, step, (x0, opt.init(x0), jnp.asarray(jnp.inf), 0))
    # As in optax's documented loop, the test sees the gradient of the point each trip steps from, so
    # the count includes one step taken from the point that passed.
    return x, k


def run_optimistix(x0):
    import optimistix as optx

    sol = optx.minimise(chained_rosenbrock, optx.LBFGS(rtol=GTOL, atol=GTOL, history_length=10), x0,
                        max_steps=MAXITER, throw=False)
    return sol.value, sol.stats["num_steps"]


def run_jaxopt(x0):
    import jaxopt

    params, state = jaxopt.LBFGS(fun=chained_rosenbrock, tol=GTOL, maxiter=MAXITER, history_size=10).run(x0)
    return params, state.iter_num


SOLVERS = {"jaxsecond": run_jaxsecond, "optax.lbfgs": run_optax, "optimistix.LBFGS": run_optimistix,
           "jaxopt.LBFGS": run_jaxopt}


def measure(run, x0, repeats):
    """Warm time (median), iterations, compile time and final gradient; a sub-millisecond solve is
    repeated for at least half a second (up to 500 times), as a median of 5 is noise at that scale."""
    solve = jax.jit(run)
    start = time.perf_counter()
    x, nit = jax.block_until_ready(solve(x0))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(solve(x0))
    once = time.perf_counter() - start
    times = []
    for _ in range(max(repeats, min(500, int(0.5 / max(once, 1e-6))))):
        start = time.perf_counter()
        jax.block_until_ready(solve(x0))
        times.append(time.perf_counter() - start)
    warm = statistics.median(times)
    gnorm = float(jnp.max(jnp.abs(jax.grad(chained_rosenbrock)(x))))
    return warm, int(nit), first - warm, gnorm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2, 100, 1000 only")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [2, 100, 1000] if args.quick else [2, 100, 1000, 10_000]
    available = {}
    for name, run in SOLVERS.items():
        try:
            run(jnp.zeros(2))  # imports the peer; skipped if it is not installed
            available[name] = run
        except ImportError as error:
            print(f"skipping {name}: {error}")
    lines = ["| n | solver | warm ms | iterations | us per iteration | compile s | final max abs g |",
             "|---|---|---|---|---|---|---|"]
    fastest = {}
    for n in sizes:
        x0 = jnp.tile(jnp.array([-1.2, 1.0]), n // 2)
        for name, run in available.items():
            warm, nit, compile_s, gnorm = measure(run, x0, args.repeats)
            fastest.setdefault(n, []).append((warm, name))
            line = f"| {n} | {name} | {1e3 * warm:.2f} | {nit} | {1e6 * warm / max(nit, 1):.1f} | {compile_s:.2f} | {gnorm:.1e} |"
            print(line, flush=True)
            lines.append(line)
    lines.append("")
    for n, results in fastest.items():
        ours = next(w for w, name in results if name == "jaxsecond")
        best_w, best = min((w, name) for w, name in results if name != "jaxsecond")
        lines.append(f"- n = {n}: jaxsecond / fastest peer ({best}) = {ours / best_w:.2f}")
    text = "\n".join(lines)
    print(text)
    command = "python bench/per_iteration.py" + (" --quick" if args.quick else "")
    with open(os.path.join(os.path.dirname(__file__), "results", "per_iteration.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# L-BFGS per iteration: jaxsecond, optax, optimistix, jaxopt\n\nCommand: `{command}`\n\n"
                 f"Machine: {describe('optax', 'optimistix', 'jaxopt')}\n\n"
                 f"Chained Rosenbrock from the tiled (-1.2, 1), float64, history 10, each solver inside one "
                 f"`jax.jit` with its own stopping rule at 1e-5 (see the script's docstring); warm time is the "
                 f"median of {args.repeats} repeats (of more below a millisecond: at least 0.5 s of them, up to 500).\n\n{text}\n")


if __name__ == "__main__":
    main()
