"""``python -m jaxsecond``: a one-minute showcase of ``js.minimize`` on the CPU.

Solves dict-minimize's Rosenbrock example (a dict of two arrays, an extra ``shift`` argument) with
L-BFGS, then with L-BFGS-B under bounds that cut the optimum off, then 256 random starts at once under
``jax.vmap``, and prints a table of the results with first-call (compile) and warm times.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsecond as js


def rosen_obj(params, shift):
    """Rosenbrock's function on each half of a dict of parameters, shifted by ``shift``."""
    total = 0.0
    for half in (params["x_half_a"], params["x_half_b"]):
        z = half - shift
        total += jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)
    return total


def _timed(solve):
    start = time.perf_counter()
    res = jax.block_until_ready(solve())
    first = time.perf_counter() - start
    warm = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(solve())
        warm.append(time.perf_counter() - start)
    return res, first, float(np.median(warm))


def main():
    jax.config.update("jax_enable_x64", True)
    shift = -1.0
    x0 = {"x_half_a": jnp.array([-1.2, 1.0, -0.5]), "x_half_b": jnp.array([0.5, 0.3, 0.2, 0.1, -0.4])}
    bounds = ({"x_half_a": -2.0, "x_half_b": -2.0}, {"x_half_a": 1.5, "x_half_b": -0.5})
    starts = jax.tree.map(
        lambda leaf: leaf + jax.random.normal(jax.random.PRNGKey(0), (256, *leaf.shape)), x0
    )
    runs = [
        ("L-BFGS", lambda: js.minimize(rosen_obj, x0, args=(shift,), method="l-bfgs")),
        ("L-BFGS-B, bounds", lambda: js.minimize(rosen_obj, x0, args=(shift,), bounds=bounds)),
        (
            "L-BFGS, vmap x256",
            lambda: jax.vmap(lambda s: js.minimize(rosen_obj, s, args=(shift,)))(starts),
        ),
    ]
    print(f"jaxsecond {js.__version__} on {jax.devices()[0].platform}: dict-minimize's Rosenbrock, shift={shift}")
    print(f"{'method':<20}{'success':>9}{'f':>13}{'nit':>7}{'nfev':>7}{'first call':>12}{'warm':>11}")
    for name, solve in runs:
        res, first, warm = _timed(solve)
        success = f"{int(np.sum(res.success))}/{np.size(res.success)}" if np.ndim(res.success) else str(bool(res.success))
        print(
            f"{name:<20}{success:>9}{float(np.max(res.fun)):>13.3e}{int(np.max(res.nit)):>7}"
            f"{int(np.max(res.nfev)):>7}{first:>11.2f}s{warm * 1e3:>9.2f}ms"
        )
        if name == "L-BFGS-B, bounds":
            print("    x_half_b at the solution:", np.round(np.asarray(res.x["x_half_b"]), 4), "(upper bound -0.5)")
    print("(vmap row: worst problem's f, nit and nfev; every problem stops on its own criteria)")


if __name__ == "__main__":
    main()
