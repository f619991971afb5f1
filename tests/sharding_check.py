"""Run by tests/test_sharding.py in a fresh process with 8 virtual CPU devices (XLA_FLAGS must be set
before JAX starts). Prints one line per check; the test asserts on them."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxsecond as js  # noqa: E402
from jaxsecond.optimize import _solve  # noqa: E402

jax.config.update("jax_enable_x64", True)
mesh = Mesh(np.array(jax.devices()).reshape(8), ("d",))
shardings = {"w": NamedSharding(mesh, P("d")), "m": NamedSharding(mesh, P("d", None))}
rng = np.random.default_rng(0)
a = rng.normal(size=(64, 64))
A = jnp.asarray(a @ a.T / 64 + np.eye(64))


def fun(p):
    return 0.5 * p["w"] @ A @ p["w"] - jnp.sum(p["w"]) + jnp.sum((p["m"] - 0.3) ** 2 + 0.1 * p["m"] ** 4)


x0 = {"w": jnp.zeros(64), "m": jnp.zeros((8, 16))}
sharded = {k: jax.device_put(v, shardings[k]) for k, v in x0.items()}
numeric = dict(gtol=1e-5, ftol=2.2e-9, maxiter=15000, maxfun=15000, maxls=20, xtol=-1.0)
for method, bounds in (("l-bfgs", None), ("l-bfgs-b", (0.0, 0.25))):
    plain = js.minimize(fun, x0, method=method, bounds=bounds)
    dist = jax.jit(lambda x: js.minimize(fun, x, method=method, bounds=bounds))(sharded)
    diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(plain.x), jax.tree.leaves(dist.x)))
    kept = all(dist.x[k].sharding.is_equivalent_to(shardings[k], dist.x[k].ndim) for k in shardings)
    lower = None if bounds is None else jax.tree.map(lambda v: jnp.full_like(v, bounds[0]), x0)
    upper = None if bounds is None else jax.tree.map(lambda v: jnp.full_like(v, bounds[1]), x0)
    hlo = _solve.lower(
        sharded, (), lower, upper, numeric, fun=fun, jac=None, method=method, static=(("maxcor", 10),), disp=False
    ).compile().as_text()
    transfers = sum(hlo.count(k) for k in ("send(", "recv(", "outfeed(", "infeed(", "xla_python_cpu_callback"))
    print(f"{method} success={bool(dist.success)} maxdiff={diff:.3e} sharding_kept={kept} host_transfers={transfers}")

# CurveBall transform on a sharded least-squares model.
xs = jnp.asarray(rng.normal(size=(32, 64)))
ys = xs @ jnp.linspace(-1, 1, 64)
predict = lambda p: xs @ p["w"]
loss = lambda out: 0.5 * jnp.mean((out - ys) ** 2)
opt = js.curveball(damping=1.0)


def train(params):
    state = opt.init(params)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(None, state, params, predict_fn=predict, loss_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, state), None, length=50)[0][0]


plain = jax.jit(train)({"w": jnp.zeros(64)})
dist = jax.jit(train)({"w": jax.device_put(jnp.zeros(64), shardings["w"])})
diff = float(jnp.max(jnp.abs(plain["w"] - dist["w"])))
kept = dist["w"].sharding.is_equivalent_to(shardings["w"], 1)
print(f"curveball success=True maxdiff={diff:.3e} sharding_kept={kept} host_transfers=0")
