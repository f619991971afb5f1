"""The headline benchmarks on whatever device JAX finds: CPU, GPU or TPU, unchanged.

Run by hand from the repository root::

    pip install -e ".[bench]"
    python bench/accelerator.py            # about 4 minutes on a busy 2-core CPU
    python bench/accelerator.py --quick    # smaller sizes, fewer repeats

    # on a GPU: the same command after
    pip install -U "jax[cuda12]"

It prints the device first, then one markdown table per measurement, and writes them to
``bench/results/accelerator_<platform>.md`` (``accelerator_cpu.md``, ``accelerator_gpu.md``,
``accelerator_tpu.md``), so a GPU run does not overwrite the CPU one; ``--out`` writes elsewhere.

1. ``js.minimize(method="l-bfgs")`` on extended Rosenbrock (MGH 21) at n = 10^4, 10^5, 10^6 in
   float32 and float64 (float64 where the device has it: not on TPU), against ``optax.lbfgs`` in a
   jitted ``lax.while_loop`` (``bench/minimize.py``'s loop) with the same stopping rule: gradient
   infinity norm below 1e-5 or 2000 iterations, history 10. Overhead ratio = warm solve time /
   (nfev x warm time of one jitted value-and-grad at that n): 1 would be a solver that costs
   nothing beyond its evaluations.
2. ``method="l-bfgs-b"`` at n = 10^5 on the same function in the box [-0.5, 0.8].
3. ``jax.vmap`` of ``js.minimize`` over random starts of Rosenbrock (n = 2): 256 starts on CPU,
   4096 elsewhere, against a host loop of ``scipy.optimize.minimize(method="L-BFGS-B")`` fed by a
   jitted value-and-grad on the CPU (timed on 32 starts and scaled per solve).
4. ``method="newton"`` and ``"trust-ncg"`` on L2-regularised logistic regression, synthetic data
   20000 x 200 (standard normal features, labels from a random weight vector), l2 = 1e-2.
5. One CurveBall step (fused form, ``grads=None``) against one SGD-with-momentum step on an MLP
   784-512-512-10, batch 512, softmax cross-entropy, float32.
6. One ``js.adamw`` step against one ``optax.adamw`` step on ``bench/recipes.py``'s 10M-parameter
   float32 pytree.

Every solve and step is jitted; the first call (compilation included) is timed apart from the warm
time, which is the median of ``--repeats`` further calls, each ended by ``jax.block_until_ready``.
Peers run in the same process, one after the other.
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
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402 - installed with scikit-learn

# Measure the checkout this script lives in, not whatever jaxsecond is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxsecond as js  # noqa: E402
import recipes  # noqa: E402 (bench/ is on sys.path when run as a script)
from jaxsecond import problems  # noqa: E402
from machine import describe  # noqa: E402
from minimize import optax_lbfgs_loop  # noqa: E402

GTOL = 1e-5
MAXITER = 2000
HISTORY = 10
# ftol = 0: jaxsecond and scipy stop on the gradient test and maxiter alone, as the optax loop does.
LBFGS_OPTIONS = {"gtol": GTOL, "ftol": 0.0, "maxiter": MAXITER, "maxcor": HISTORY}
BOX = (-0.5, 0.8)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ----------------------------------------------------------------------------------- timing


def time_calls(fn, *args, repeats):
    """First-call seconds (compilation included), warm median seconds, and the last output."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), out


def time_evaluation(fn, x, min_calls=20, max_calls=200, min_seconds=0.3):
    """Warm median seconds of one call of a jitted ``fn(x)``."""
    jax.block_until_ready(fn(x))
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or (len(times) < max_calls
                                     and time.perf_counter() - start < min_seconds):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def inf_norm(tree):
    return float(optax.tree.norm(tree, ord=jnp.inf))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def yes_no(flag):
    return "yes" if flag else "**no**"


# ----------------------------------------------------------------------------------- 1, 2: L-BFGS(-B)


def lbfgs_rows(sizes, dtypes, repeats):
    """js.minimize L-BFGS against optax.lbfgs on extended Rosenbrock, per size and dtype."""
    rows = []
    for n in sizes:
        problem = problems.extended_rosenbrock(n)
        value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
        grad = jax.jit(jax.grad(problem.fun))
        for dtype in dtypes:
            x0 = jnp.asarray(problem.x0, dtype)
            t_eval = time_evaluation(value_and_grad, x0)
            solve_js = jax.jit(lambda x: js.minimize(problem.fun, x, method="l-bfgs",
                                                     options=LBFGS_OPTIONS))
            first, warm, res = time_calls(solve_js, x0, repeats=repeats)
            js_row = ["jaxsecond l-bfgs", bool(res.success), int(res.nit), int(res.nfev),
                      float(res.fun), first, warm]
            solve_optax = jax.jit(optax_lbfgs_loop(problem.fun, maxiter=MAXITER, gtol=GTOL,
                                                   norm_ord=jnp.inf))
            first, warm, (x, nit, nfev) = time_calls(solve_optax, x0, repeats=repeats)
            optax_row = ["optax.lbfgs", inf_norm(grad(x)) < GTOL, int(nit), int(nfev),
                         float(problem.fun(x)), first, warm]
            for label, success, nit, nfev, f, first, warm in (js_row, optax_row):
                ratio = "" if label == "optax.lbfgs" else f"{warm / optax_row[-1]:.2f}"
                rows.append([n, jnp.dtype(dtype).name, label, yes_no(success), nit, nfev,
                             f"{f:.3g}", f"{first:.2f}", f"{warm * 1e3:.2f}",
                             f"{t_eval * 1e6:.1f}", f"{warm / (nfev * t_eval):.2f}", ratio])
            print(f"  l-bfgs n={n} {jnp.dtype(dtype).name} done", flush=True)
    return table(["n", "dtype", "solver", "success", "nit", "nfev", "f", "first call s",
                  "warm ms", "one value-and-grad us", "overhead ratio", "js / optax warm"], rows)


def lbfgsb_rows(n, dtypes, repeats):
    """js.minimize L-BFGS-B on extended Rosenbrock in a box."""
    problem = problems.extended_rosenbrock(n)
    value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
    rows = []
    for dtype in dtypes:
        x0 = jnp.asarray(problem.x0, dtype)
        t_eval = time_evaluation(value_and_grad, x0)
        bounds = (jnp.full(n, BOX[0], dtype), jnp.full(n, BOX[1], dtype))
        solve = jax.jit(lambda x, b: js.minimize(problem.fun, x, method="l-bfgs-b", bounds=b,
                                                 options=LBFGS_OPTIONS))
        first, warm, res = time_calls(solve, x0, bounds, repeats=repeats)
        at_bound = int(jnp.sum((res.x <= BOX[0]) | (res.x >= BOX[1])))
        rows.append([n, jnp.dtype(dtype).name, "jaxsecond l-bfgs-b", yes_no(res.success),
                     int(res.nit), int(res.nfev), f"{float(res.fun):.6g}", at_bound,
                     f"{first:.2f}", f"{warm * 1e3:.2f}", f"{t_eval * 1e6:.1f}",
                     f"{warm / (int(res.nfev) * t_eval):.2f}"])
        print(f"  l-bfgs-b n={n} {jnp.dtype(dtype).name} done", flush=True)
    rows.append(scipy_lbfgsb_row(problem, repeats))
    return table(["n", "dtype", "solver", "success", "nit", "nfev", "f", "variables at a bound",
                  "first call s", "warm ms", "one value-and-grad us", "overhead ratio"], rows)


def scipy_lbfgsb_row(problem, repeats):
    """scipy's L-BFGS-B on the host on the same bounded problem, fed by a jitted value-and-grad on
    the CPU: the reference for the cost of the bound handling."""
    n = problem.n
    with jax.default_device(jax.devices("cpu")[0]):
        value_and_grad = jax.jit(jax.value_and_grad(problem.fun))
        x0 = jnp.asarray(problem.x0)
        t_eval = time_evaluation(value_and_grad, x0)
        fg = host_value_and_grad(value_and_grad)

        def solve(x):
            return scipy.optimize.minimize(fg, x, jac=True, method="L-BFGS-B",
                                           bounds=[BOX] * n, options=LBFGS_OPTIONS)

        first, warm, res = time_calls(solve, problem.x0, repeats=repeats)
    at_bound = int(np.sum((res.x <= BOX[0]) | (res.x >= BOX[1])))
    return [n, "float64", "scipy L-BFGS-B (host)", yes_no(res.success), res.nit, res.nfev,
            f"{res.fun:.6g}", at_bound, f"{first:.2f}", f"{warm * 1e3:.2f}",
            f"{t_eval * 1e6:.1f}", f"{warm / (res.nfev * t_eval):.2f}"]


# ----------------------------------------------------------------------------------- 3: vmap


def host_value_and_grad(value_and_grad):
    """scipy's ``fun(x) -> (f, g)`` on numpy arrays, from a jitted JAX value-and-grad."""

    def fg(x):
        f, g = value_and_grad(x)
        return float(f), np.asarray(g)

    return fg


def scipy_per_solve(problem, starts, repeats):
    """Seconds per solve of a host loop of scipy's L-BFGS-B (median over ``repeats`` loops), and
    how many it solved."""
    with jax.default_device(jax.devices("cpu")[0]):
        fg = host_value_and_grad(jax.jit(jax.value_and_grad(problem.fun)))
        fg(starts[0])  # compile

        def loop():
            return [scipy.optimize.minimize(fg, x0, jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)
                    for x0 in starts]

        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = loop()
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(starts), sum(bool(r.success) for r in results)


def vmap_rows(count, scipy_count, dtypes, repeats, seed=0):
    problem = problems.rosenbrock()
    rng = np.random.default_rng(seed)
    starts = problem.x0 + rng.uniform(-1.0, 1.0, size=(count, problem.n))
    scipy_starts = starts[:scipy_count]
    scipy_each, scipy_solved = scipy_per_solve(problem, scipy_starts, repeats=3)
    solve = jax.jit(jax.vmap(lambda x: js.minimize(problem.fun, x, method="l-bfgs",
                                                   options=LBFGS_OPTIONS)))
    rows = []
    for dtype in dtypes:
        xs = jnp.asarray(starts, dtype)
        first, warm, res = time_calls(solve, xs, repeats=repeats)
        nfev = np.asarray(res.nfev)
        rows.append([count, jnp.dtype(dtype).name, f"{int(np.sum(res.success))}/{count}",
                     f"{np.median(nfev):.0f} / {nfev.max()}", f"{first:.2f}", f"{warm * 1e3:.1f}",
                     f"{warm / count * 1e6:.1f}", f"{scipy_each * 1e6:.0f}",
                     f"{scipy_each / (warm / count):.0f}x"])
        print(f"  vmap {count} starts {jnp.dtype(dtype).name} done", flush=True)
    note = (f"scipy: `scipy.optimize.minimize(method=\"L-BFGS-B\")` in a Python loop over the first "
            f"{scipy_count} starts (float64, jitted value-and-grad on the CPU, one BLAS thread), "
            f"solved {scipy_solved}/{scipy_count}; its per-solve time (median of 3 loops) is "
            f"compared with each dtype's per-solve time.")
    return table(["starts", "dtype", "success", "nfev median / max", "first call s",
                  "warm ms (all starts)", "us per solve", "scipy us per solve",
                  "speedup vs scipy (float64)"], rows) + ["", note]


# ----------------------------------------------------------------------------------- 4: Newton


def logistic_data(samples, features, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features))
    w = rng.standard_normal(features) / np.sqrt(features)
    labels = (rng.uniform(size=samples) < 1.0 / (1.0 + np.exp(-(x @ w)))).astype(np.float64)
    return x, 2.0 * labels - 1.0


def logistic_loss(params, x, signs, l2):
    # problems.logistic_regression's objective, with the data as arguments: there the data are
    # baked into the compiled program as constants, which is slow to compile at this size.
    margins = signs * (x @ params[:-1] + params[-1])
    return jnp.mean(jnp.logaddexp(0.0, -margins)) + 0.5 * l2 * jnp.sum(params[:-1] ** 2)


def newton_rows(samples, features, dtypes, repeats, l2=1e-2):
    x_np, signs_np = logistic_data(samples, features)
    rows = []
    for dtype in dtypes:
        x, signs = jnp.asarray(x_np, dtype), jnp.asarray(signs_np, dtype)
        x0 = jnp.zeros(features + 1, dtype)
        for method in ("newton", "trust-ncg"):
            solve = jax.jit(lambda p, a, s, m=method: js.minimize(
                logistic_loss, p, args=(a, s, l2), method=m))
            first, warm, res = time_calls(solve, x0, x, signs, repeats=repeats)
            rows.append([f"{samples} x {features}", jnp.dtype(dtype).name, method,
                         yes_no(res.success), str(res.message), int(res.nit), int(res.nfev),
                         f"{float(res.fun):.8g}", f"{inf_norm(res.jac):.1e}", f"{first:.2f}",
                         f"{warm * 1e3:.1f}"])
            print(f"  {method} {jnp.dtype(dtype).name} done", flush=True)
    return table(["data", "dtype", "method", "success", "message", "nit", "nfev", "f",
                  "final gradient inf-norm", "first call s", "warm ms"], rows)


# ----------------------------------------------------------------------------------- 5: CurveBall


def mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (m, n), jnp.float32) / jnp.sqrt(jnp.float32(m)),
             "b": jnp.zeros(n, jnp.float32)} for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp_predict(params, inputs):
    h = inputs
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def training_steps(opt, fused_curveball):
    """A jitted ``(params, state, inputs, labels) -> (params, state, losses)``: one step per batch,
    in a ``lax.scan`` over the batches' leading axis."""

    def one_step(carry, batch):
        params, state = carry
        inputs, labels = batch
        predict_fn = lambda p: mlp_predict(p, inputs)  # noqa: E731
        loss_fn = lambda logits: xent(logits, labels)  # noqa: E731
        if fused_curveball:
            value = loss_fn(predict_fn(params))
            updates, state = opt.update(None, state, params, predict_fn=predict_fn,
                                        loss_fn=loss_fn)
        else:
            value, grads = jax.value_and_grad(lambda p: loss_fn(predict_fn(p)))(params)
            updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    def run(params, state, inputs, labels):
        (params, state), losses = jax.lax.scan(one_step, (params, state), (inputs, labels))
        return params, state, losses

    return jax.jit(run)


def curveball_rows(sizes, batch, steps, repeats):
    key_params, key_x, key_y = jax.random.split(jax.random.PRNGKey(0), 3)
    params = mlp_init(key_params, sizes)
    inputs = jax.random.normal(key_x, (steps, batch, sizes[0]), jnp.float32)
    labels = jax.random.randint(key_y, (steps, batch), 0, sizes[-1])
    rows, per_step = [], {}
    for label, opt, fused in (("SGD+momentum (lr 0.01, 0.9)", optax.sgd(0.01, momentum=0.9), False),
                              ("CurveBall, grads=None (fused)", js.curveball(), True)):
        run = training_steps(opt, fused)
        state = opt.init(params)
        first, warm, (_, _, losses) = time_calls(run, params, state, inputs, labels,
                                                 repeats=repeats)
        per_step[label] = warm / steps
        ratio = warm / steps / per_step["SGD+momentum (lr 0.01, 0.9)"]
        rows.append(["-".join(map(str, sizes)), batch, label, f"{first:.2f}",
                     f"{warm / steps * 1e3:.2f}", f"{ratio:.2f}",
                     f"{float(losses[0]):.3f} -> {float(losses[-1]):.3f}"])
        print(f"  {label} done", flush=True)
    note = (f"Per step = warm time of a jitted `lax.scan` over {steps} steps (each on its own random "
            f"batch; a multiple of CurveBall's damping interval 5, so its every-fifth-step extra "
            f"forward pass is averaged in) / {steps}; float32.")
    return table(["MLP", "batch", "optimizer", "first call s", "warm ms per step",
                  "ratio to SGD step", "loss first -> last step"], rows) + ["", note]


# ----------------------------------------------------------------------------------- 6: AdamW


def adamw_rows(repeats, rounds=2):
    size = sum(int(np.prod(s)) for s in recipes.SHAPES.values())
    names = ("optax.adamw", "js.adamw")
    runs = {name: [] for name in names}
    for round_index in range(rounds):
        # Alternate the order so neither always runs right after the other.
        for name in names if round_index % 2 == 0 else names[::-1]:
            compile_s, warm, _, _ = recipes.time_optimizer(recipes.OPTIMIZERS[name](),
                                                           jnp.float32, repeats)
            runs[name].append((compile_s, warm))
    warm_of = {name: statistics.median(w for _, w in r) for name, r in runs.items()}
    rows = [[name, f"{size / 1e6:.1f}M float32", f"{statistics.median(c for c, _ in r):.2f}",
             f"{warm_of[name] * 1e3:.2f}",
             "peer" if name == "optax.adamw" else f"{warm_of[name] / warm_of['optax.adamw']:.3f}"]
            for name, r in runs.items()]
    note = (f"One jitted step (update + apply_updates, donated buffers) from `bench/recipes.py`; "
            f"warm = median over {rounds} interleaved rounds of the median of {repeats} steps.")
    return table(["optimizer", "parameters", "compile s", "warm ms per step", "ratio to optax"],
                 rows) + ["", note]


# ----------------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="warm repeats per measurement (default 5; 3 with --quick)")
    parser.add_argument("--starts", type=int, default=None,
                        help="vmapped starts (default 256 on CPU, 4096 on other devices)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=None,
                        help="dtypes of the minimize rows (default both; float32 only on TPU)")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                        help="which of the six measurements to run (default all)")
    parser.add_argument("--out", default=None,
                        help="markdown file to write (default bench/results/accelerator_<platform>.md)")
    args = parser.parse_args(argv)
    # scipy's L-BFGS-B is fastest with one BLAS thread (see bench/minimize.py); JAX does not use it.
    threadpool_limits(1, user_api="blas")

    device = jax.devices()[0]
    platform = device.platform
    repeats = args.repeats or (3 if args.quick else 5)
    dtypes = args.dtypes or (["float32"] if platform == "tpu" else ["float32", "float64"])
    starts = args.starts or (256 if platform == "cpu" else 4096)
    out = args.out or os.path.join(RESULTS, f"accelerator_{platform}.md")
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    samples, features = (5000, 100) if args.quick else (20_000, 200)
    mlp, batch = ([784, 256, 256, 10], 256) if args.quick else ([784, 512, 512, 10], 512)

    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    header = [f"Command: `{command}`", "",
              f"Machine: {describe('optax', 'scipy', 'numpy')}", "",
              f"Device: `{device}` (device_kind {device.device_kind!r}, platform {platform!r}, "
              f"{jax.device_count()} device(s))", "",
              "Figures from a CPU are here as a reference; figures from a GPU or TPU go in "
              "`bench/results/accelerator_gpu.md` / `accelerator_tpu.md` when the same command runs "
              "there. Every solve and step is jitted; warm = median of "
              f"{repeats} calls after the first; first call includes compilation; "
              f"L-BFGS(-B): gradient infinity norm < {GTOL:g} or {MAXITER} iterations, history "
              f"{HISTORY}, for jaxsecond and optax alike."]
    print("\n".join(header), flush=True)

    start = time.perf_counter()
    sections = []
    for number, (title, build) in enumerate((
            ("1. L-BFGS on extended Rosenbrock: js.minimize vs optax.lbfgs",
             lambda: lbfgs_rows(sizes, dtypes, repeats)),
            (f"2. L-BFGS-B on extended Rosenbrock in the box [{BOX[0]}, {BOX[1]}]",
             lambda: lbfgsb_rows(100_000, dtypes, repeats)),
            (f"3. jax.vmap of js.minimize (L-BFGS) over {starts} random starts of Rosenbrock (n=2)",
             lambda: vmap_rows(starts, min(32, starts), dtypes, repeats)),
            ("4. Newton and trust-ncg on L2 logistic regression (l2 = 1e-2, default options)",
             lambda: newton_rows(samples, features, dtypes, repeats)),
            ("5. CurveBall step vs SGD+momentum step (softmax cross-entropy MLP)",
             lambda: curveball_rows(mlp, batch, 10, repeats)),
            ("6. js.adamw vs optax.adamw step", lambda: adamw_rows(max(repeats, 10)))), 1):
        if number not in args.sections:
            continue
        print(f"\n## {title}", flush=True)
        lines = build()
        print("\n".join(lines), flush=True)
        sections += ["", f"## {title}", ""] + lines
    elapsed = time.perf_counter() - start
    text = header + ["", f"Total run time {elapsed:.0f} s."] + sections
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("# bench/accelerator.py\n\n" + "\n".join(text) + "\n")
    print(f"\nTotal run time {elapsed:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
