"""Checkpoint and resume: every transform's state saved with numpy.savez mid-training and restored
continues bit-identically."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsecond as js

TARGET = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.5])}
X = jax.random.normal(jax.random.PRNGKey(0), (16, 2))


def predict(params):
    return X @ params["w"] + params["b"][0]


def loss_of_outputs(out):
    return 0.5 * jnp.mean((out - X @ TARGET["w"]) ** 2)


def loss(params):
    return loss_of_outputs(predict(params)) + 0.1 * jnp.sum((params["b"] - TARGET["b"]) ** 2)


TRANSFORMS = {
    "adamw": lambda: js.adamw(1e-2, weight_decay=0.1),
    "adamw_amsgrad_scheduled": lambda: optax.inject_hyperparams(js.adamw, static_args=("amsgrad",))(
        learning_rate=js.schedules.one_cycle(40, max_value=0.05), b1=js.schedules.one_cycle_momentum(40),
        amsgrad=True,
    ),
    "amsgrad": lambda: js.amsgrad(js.schedules.cosine_warm_restarts(1e-2, t_0=5, t_mult=2)),
    "sgdwr_momentum_cycled": lambda: optax.inject_hyperparams(js.sgdw, static_args=("mask",))(
        learning_rate=js.schedules.cosine_warm_restarts(0.05, t_0=5, t_mult=2),
        momentum=js.schedules.one_cycle_momentum(40), weight_decay=0.1, nesterov=True,
        mask=lambda p: {"w": True, "b": False},
    ),
    "sgd_cyclic": lambda: optax.inject_hyperparams(optax.sgd)(
        learning_rate=js.schedules.cyclic(1e-3, 1e-1, step_size_up=4), momentum=0.9
    ),
    "curveball": lambda: js.curveball(damping=1.0),
    "curveball_scheduled": lambda: optax.inject_hyperparams(js.curveball, static_args=("damping_interval",))(
        learning_rate=js.schedules.cyclic(0.05, 0.5, step_size_up=4), momentum=0.5, damping=1.0
    ),
    "heun_scheduled": lambda: js.heun(js.schedules.one_cycle(40, max_value=0.5)),
    "multisteps_adamw": lambda: optax.MultiSteps(js.adamw(1e-2), every_k_schedule=3),
}


def _step(opt):
    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = opt.update(
            grads, state, params, predict_fn=predict, loss_fn=loss_of_outputs, grad_fn=jax.grad(loss)
        )
        return optax.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_resume_from_numpy_checkpoint_is_bit_identical(name, tmp_path):
    opt = optax.with_extra_args_support(TRANSFORMS[name]())
    step = _step(opt)
    params = jax.tree.map(jnp.zeros_like, TARGET)
    state = opt.init(params)
    for _ in range(13):
        params, state = step(params, state)

    path = tmp_path / "checkpoint.npz"
    leaves, treedef = jax.tree.flatten((params, state))
    np.savez(path, *[np.asarray(leaf) for leaf in leaves])
    with np.load(path) as saved:
        restored = [jnp.asarray(saved[f"arr_{i}"]) for i in range(len(leaves))]
    resumed_params, resumed_state = jax.tree.unflatten(treedef, restored)

    for _ in range(11):
        params, state = step(params, state)
        resumed_params, resumed_state = step(resumed_params, resumed_state)
    for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((resumed_params, resumed_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(loss(params)) < float(loss(jax.tree.map(jnp.zeros_like, TARGET)))
