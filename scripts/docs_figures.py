"""Draws the figures of the documentation site into docs/images/ (run by hand, commit the PNGs).

    python scripts/docs_figures.py

- schedules.png: every schedule in `js.schedules`, on one figure.
- lr_range_test.png: `js.plot_lr_range_test` for AdamW on a small MLP on scikit-learn's digits.
- convergence.png: f - f* and |g|_inf against objective evaluations, js.minimize (L-BFGS) vs
  scipy's L-BFGS-B vs optax.lbfgs, on extended Rosenbrock (n = 100) and on L2-regularised logistic
  regression of scikit-learn's breast-cancer data. Every evaluation of each solver is recorded
  (line-search trials included); the curves show the best value found so far and the gradient at
  that point, so the three are compared per evaluation, the unit of cost they share.

Runs on CPU in about a minute, in float64.
"""
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402

import jaxsecond as js  # noqa: E402
from jaxsecond import problems  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "images"


def schedules_figure(path):
    steps = np.arange(0, 1001)
    s = js.schedules
    panels = {
        "cyclic (CyclicLR), step_size_up=100": {
            "triangular": s.cyclic(1e-4, 1e-2, 100),
            "triangular2": s.cyclic(1e-4, 1e-2, 100, mode="triangular2"),
            "exp_range, gamma=0.998": s.cyclic(1e-4, 1e-2, 100, mode="exp_range", gamma=0.998),
        },
        "one_cycle (OneCycleLR), total_steps=1000": {
            "cos": s.one_cycle(1000, 1e-2),
            "linear": s.one_cycle(1000, 1e-2, anneal_strategy="linear"),
            "three_phase": s.one_cycle(1000, 1e-2, three_phase=True),
        },
        "one_cycle_momentum, total_steps=1000": {
            "cos": s.one_cycle_momentum(1000),
            "three_phase": s.one_cycle_momentum(1000, three_phase=True),
        },
        "cosine_warm_restarts (SGDR), t_0=100": {
            "t_mult=1": s.cosine_warm_restarts(1e-2, 100, eta_min=1e-4),
            "t_mult=2": s.cosine_warm_restarts(1e-2, 100, t_mult=2, eta_min=1e-4),
        },
    }
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (title, schedules) in zip(axes, panels.items()):
        for label, schedule in schedules.items():
            ax.plot(steps, jax.vmap(schedule)(steps), label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    axes[0].set_ylabel("value")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def lr_range_test_figure(path):
    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target)
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w1": 0.1 * jax.random.normal(key1, (64, 64), jnp.float32), "b1": jnp.zeros(64, jnp.float32),
              "w2": 0.1 * jax.random.normal(key2, (64, 10), jnp.float32), "b2": jnp.zeros(10, jnp.float32)}

    def loss_fn(p, batch):
        xb, yb = batch
        logits = jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    order = np.random.default_rng(0).permutation(len(x))
    batches = [(x[order[i:i + 64]], y[order[i:i + 64]]) for i in range(0, len(x) - 63, 64)]
    result = js.lr_range_test(loss_fn, params, batches, optimizer=js.adamw, start_lr=1e-5,
                              end_lr=10.0, num_steps=200)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    js.plot_lr_range_test(result, ax=ax)
    ax.set_title(f"AdamW on digits (MLP): suggested lr {result.suggested_lr:.2g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _recorded(fun):
    """fun with every evaluation point appended to a list, also from inside compiled loops."""
    points = []

    def record(x):
        points.append(np.array(x))

    def wrapped(x):
        jax.debug.callback(record, x, ordered=True)
        return fun(x)

    return wrapped, points


def _best_so_far(fun, points):
    value_and_grad = jax.jit(jax.value_and_grad(fun))
    values, gnorms = [], []
    best, best_g = np.inf, np.nan
    for x in points:
        f, g = value_and_grad(x)
        if f < best:
            best, best_g = float(f), float(jnp.max(jnp.abs(g)))
        values.append(best)
        gnorms.append(best_g)
    return np.arange(1, len(points) + 1), np.array(values), np.array(gnorms)


def _optax_lbfgs(fun, x0, gtol, maxiter):
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        x, state, _ = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state, jnp.max(jnp.abs(grad))

    def keep_going(carry):
        return (carry[2] > gtol) & (optax.tree.get(carry[1], "count") < maxiter)

    return jax.jit(lambda x: jax.lax.while_loop(keep_going, step, (x, opt.init(x), jnp.inf)))(x0)


def convergence_paths(fun, x0, gtol=1e-5):
    paths = {}
    recorded, points = _recorded(fun)
    js.minimize(recorded, x0, method="l-bfgs", options={"gtol": gtol}).x.block_until_ready()
    paths["js.minimize (L-BFGS)"] = _best_so_far(fun, list(points))
    points.clear()
    value_and_grad = jax.jit(jax.value_and_grad(recorded))
    scipy.optimize.minimize(lambda x: tuple(np.asarray(v) for v in value_and_grad(x)), np.asarray(x0),
                            jac=True, method="L-BFGS-B", options={"gtol": gtol})
    jax.effects_barrier()
    paths["scipy L-BFGS-B"] = _best_so_far(fun, list(points))
    points.clear()
    _optax_lbfgs(recorded, jnp.asarray(x0), gtol, 15000)[0].block_until_ready()
    jax.effects_barrier()
    paths["optax.lbfgs"] = _best_so_far(fun, list(points))
    return paths


def convergence_figure(path):
    rosen = problems.extended_rosenbrock(100)
    data = load_breast_cancer()
    features = (data.data - data.data.mean(0)) / data.data.std(0)
    logistic = problems.logistic_regression(features, data.target, l2=1e-3)
    cases = [(f"extended Rosenbrock, n = {rosen.n}", rosen, rosen.fstar),
             (f"logistic regression, breast cancer, n = {logistic.n}", logistic, None)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex="col")
    for col, (title, problem, fstar) in enumerate(cases):
        paths = convergence_paths(problem.fun, jnp.asarray(problem.x0))
        if fstar is None:  # the lowest value any solver found, less a margin below its resolution
            fstar = min(values.min() for _, values, _ in paths.values()) - 1e-15
        # The curves nearly coincide (js.minimize follows scipy's iterates): styles keep each visible.
        styles = [dict(lw=3, alpha=0.5), dict(ls="--"), dict(ls=":", lw=2)]
        for style, (label, (evals, values, gnorms)) in zip(styles, paths.items()):
            axes[0, col].semilogy(evals, values - fstar, label=f"{label}: {len(evals)} evaluations", **style)
            axes[1, col].semilogy(evals, gnorms, label=label, **style)
        axes[0, col].set_title(title, fontsize=10)
        axes[0, col].set_ylabel("f - f* (best so far)")
        axes[1, col].set_ylabel("|g|_inf at that point")
        axes[1, col].axhline(1e-5, color="gray", lw=0.8, ls=":")
        axes[1, col].set_xlabel("objective evaluations")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print("device:", jax.devices()[0])
    for name, draw in [("schedules", schedules_figure), ("lr_range_test", lr_range_test_figure),
                       ("convergence", convergence_figure)]:
        draw(OUT / f"{name}.png")
        print("wrote", OUT / f"{name}.png")


if __name__ == "__main__":
    main()
