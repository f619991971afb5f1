"""What one ``js.minimize`` call costs beyond its evaluations: recompiles per closure and fixed overhead.

Measures, in one process (float64, 2-parameter least squares so that the solve itself is tiny):
- first call, then a second call with a *fresh* lambda over new arrays, a fresh ``functools.partial``,
  and the same problem through ``args`` (tracing included; median of repeats);
- the fixed cost of a one-evaluation solve (``maxiter=0``) against a bare jitted call of the objective,
  and the same in a second process started with ``jax_cpu_enable_async_dispatch`` off (XLA:CPU then
  runs every program on the calling thread; by default only those it estimates below 1000 flops);
- process memory (max RSS) across 10,000 calls with fresh closures;
- a small problem solved whole (Freudenstein-Roth, 20 iterations): ``js.minimize`` against optax.lbfgs's
  loop in ``jax.jit`` (bench/minimize.py's), in both processes, with XLA's flop estimate of each
  compiled program, which decides whether XLA:CPU runs it on the calling thread (below 1000) or hands
  it to a worker thread.

    python bench/call_cost.py
"""

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
SYNC = "--sync-fixed-cost" in sys.argv  # the child process: fixed cost only, printed as JSON
if SYNC:
    jax.config.update("jax_cpu_enable_async_dispatch", False)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import jaxsecond as js  # noqa: E402
from jaxsecond import optimize, problems  # noqa: E402
from machine import describe  # noqa: E402
from minimize import optax_lbfgs_loop  # noqa: E402


def loss(w, X, y):
    return jnp.sum((X @ w - y) ** 2) + 1e-3 * jnp.sum(w**2)


def data(i):
    rng = np.random.default_rng(i)
    return jnp.asarray(rng.normal(size=(16, 2))), jnp.asarray(rng.normal(size=16))


def timed(call, repeats):
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(i))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating(calls, rounds=6, repeats=201):
    """Median seconds of each call, timed in bursts that take turns (a shared machine's speed drifts
    over seconds: timing one call after the other would read the drift as a difference)."""
    bursts = [[] for _ in calls]
    for call in calls:  # compiled before any timing
        jax.block_until_ready(call(0))
    for _ in range(rounds):
        for call, times in zip(calls, bursts):
            times.append(timed(call, repeats))
    return [statistics.median(times) for times in bursts]


def newest_call():
    """(compiled solve, captured arrays, packed options) of the newest ``js.minimize`` call: what remains
    of a call once its front end is skipped."""
    prepared = optimize._CALL_CACHE[next(reversed(optimize._CALL_CACHE))]
    return optimize._COMPILE_CACHE[prepared.solve_key], prepared.traced[1], prepared.numeric


def fixed_cost(w0):
    """(one-evaluation solve, its compiled program alone, a bare jitted call of the objective), seconds."""
    X, y = data(0)
    jax.block_until_ready(js.minimize(loss, w0, args=(X, y), options={"maxiter": 0}).x)
    solve, consts, numeric = newest_call()
    bare = jax.jit(loss)
    return alternating([lambda i: js.minimize(loss, w0, args=(X, y), options={"maxiter": 0}).x,
                        lambda i: solve(w0, (consts, (X, y)), None, None, numeric).x,
                        lambda i: bare(w0, X, y)])


def small_problem():
    """(js.minimize, optax.lbfgs loop) seconds on Freudenstein-Roth, medians over alternating bursts,
    and each compiled program's flop estimate by XLA."""
    problem = next(p for p in problems.mgh_problems() if p.name == "freudenstein_roth")
    x0 = jnp.asarray(problem.x0)
    options = {"maxiter": 2000, "gtol": 1e-5, "maxcor": 10}  # bench/minimize.py's settings
    run = jax.jit(optax_lbfgs_loop(problem.fun))
    times = alternating([lambda i: js.minimize(problem.fun, x0, options=options).x, lambda i: run(x0)[0]])
    solve, consts, numeric = newest_call()
    ours = solve.top_level.lower(x0, (consts, ()), None, None, numeric).compile()
    flops = [compiled.cost_analysis()["flops"] for compiled in (ours, run.lower(x0).compile())]
    return times, flops


def main():
    w0 = jnp.zeros(2)
    if SYNC:
        print(json.dumps([fixed_cost(w0), small_problem()[0]]))
        return
    rows = []
    start = time.perf_counter()
    X, y = data(0)
    jax.block_until_ready(js.minimize(lambda w: loss(w, X, y), w0).x)
    rows.append(("first call (compile)", time.perf_counter() - start))

    def fresh_lambda(i):
        X, y = data(i + 1)
        return js.minimize(lambda w: loss(w, X, y), w0).x

    def fresh_partial(i):
        X, y = data(i + 1)
        return js.minimize(functools.partial(loss, X=X, y=y), w0).x

    rows.append(("second call, fresh lambda over new arrays", timed(fresh_lambda, 21)))
    jax.block_until_ready(fresh_partial(0))  # a partial passes X, y by keyword: its own jaxpr
    rows.append(("call with a fresh functools.partial", timed(fresh_partial, 21)))
    jax.block_until_ready(js.minimize(loss, w0, args=data(0)).x)
    rows.append(("same problem through args", timed(lambda i: js.minimize(loss, w0, args=(X, y)).x, 201)))
    solve0, program, bare_t = fixed_cost(w0)
    rows.append(("one-evaluation solve (maxiter=0)", solve0))
    rows.append(("  of which the compiled solve alone", program))
    rows.append(("bare jitted call of the objective", bare_t))
    (ours, optax_loop), flops = small_problem()
    rows.append(("Freudenstein-Roth (20 iterations): js.minimize", ours))
    rows.append(("Freudenstein-Roth: optax.lbfgs loop in jax.jit", optax_loop))
    child = subprocess.run([sys.executable, __file__, "--sync-fixed-cost"], check=True, capture_output=True, text=True)
    (sync0, sync_program, sync_bare), (sync_ours, sync_optax) = json.loads(child.stdout.splitlines()[-1])
    rows.append(("one-evaluation solve, async dispatch off (second process)", sync0))
    rows.append(("  of which the compiled solve alone", sync_program))
    rows.append(("bare jitted call of the objective, async dispatch off", sync_bare))
    rows.append(("Freudenstein-Roth: js.minimize, async dispatch off", sync_ours))
    rows.append(("Freudenstein-Roth: optax.lbfgs loop, async dispatch off", sync_optax))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(10_000):
        jax.block_until_ready(js.minimize(lambda w: loss(w, X, y) * 1.0, w0).x)
        if i == 999:
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lines = ["| what | seconds |", "|---|---|"] + [f"| {name} | {t:.6f} |" for name, t in rows]
    lines += ["", f"Fixed cost of a one-evaluation solve above a bare jitted call: {1e6 * (solve0 - bare_t):.0f} us "
              f"(front end {1e6 * (solve0 - program):.0f} us, compiled program {1e6 * (program - bare_t):.0f} us); "
              f"with async dispatch off: {1e6 * (sync0 - sync_bare):.0f} us (front end {1e6 * (sync0 - sync_program):.0f} us, "
              f"compiled program {1e6 * (sync_program - sync_bare):.0f} us)",
              f"Freudenstein-Roth, js.minimize / optax.lbfgs loop: {ours / optax_loop:.2f}x; with async dispatch off "
              f"{sync_ours / sync_optax:.2f}x. XLA's flop estimate of the compiled programs: jaxsecond {flops[0]:.0f}, "
              f"optax {flops[1]:.0f}; XLA:CPU runs a program estimated below 1000 on the calling thread and hands any "
              "other to a worker thread (a fixed cost of thread wake-ups, the gap between the two settings)",
              f"Max RSS: {rss0 / 1024:.0f} MiB before 10,000 fresh-closure calls, {rss1 / 1024:.0f} MiB after "
              f"1,000, {rss2 / 1024:.0f} MiB after 10,000"]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(__file__), "results", "call_cost.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# Cost per call\n\nCommand: `python bench/call_cost.py`\n\nMachine: {describe('optax')}\n\n{text}\n")


if __name__ == "__main__":
    main()
