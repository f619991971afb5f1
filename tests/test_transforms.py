"""js.adamw / js.amsgrad / js.sgdw against PyTorch golden trajectories; js.heun against its closed form."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsecond as js

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "adam.npz"))
CASES = sorted(k[len("config_"):] for k in GOLDEN.files if k.startswith("config_"))
SGDW_GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "sgdw.npz"))
SGDW_CASES = sorted(k[len("config_"):] for k in SGDW_GOLDEN.files if k.startswith("config_"))


def _loss(params, x, y):
  return jnp.mean((jnp.tanh(x @ params["w1"]) @ params["w2"] - y) ** 2)


def _optimizer(config):
  scheduler = config.get("scheduler")
  lr = config["lr"]
  kwargs = dict(weight_decay=config["weight_decay"], amsgrad=config["amsgrad"])
  if config.get("decay_only_first"):
    kwargs["mask"] = {"w1": True, "w2": False}
  if config.get("adam"):
    assert config["weight_decay"] == 0.0 and config["amsgrad"]
    return js.amsgrad(lr)
  if scheduler is None:
    return js.adamw(lr, **kwargs)
  if scheduler["name"] == "CosineAnnealingWarmRestarts":  # AdamWR
    return js.adamw(_warm_restarts(lr, scheduler), **kwargs)
  if scheduler["name"] == "ExponentialLR":
    # optax's own schedules compute in float32 at the int32 step count; this one in float64.
    gamma = scheduler["gamma"]
    return js.adamw(lambda t: lr * gamma ** jnp.asarray(t, jnp.float64), **kwargs)
  assert scheduler["name"] == "OneCycleLR"
  # torch's OneCycleLR also cycles betas[0]; inject b1 the same way.
  total = scheduler["total_steps"]
  return optax.inject_hyperparams(js.adamw)(
      learning_rate=js.schedules.one_cycle(total, scheduler["max_lr"], scheduler["pct_start"]),
      b1=js.schedules.one_cycle_momentum(total, scheduler["pct_start"]), **kwargs)


def _warm_restarts(lr, scheduler):
  return js.schedules.cosine_warm_restarts(lr, t_0=scheduler["T_0"], t_mult=scheduler["T_mult"],
                                           eta_min=scheduler["eta_min"])


def _sgdw(config):
  kwargs = dict(momentum=config["momentum"], weight_decay=config["weight_decay"],
                nesterov=config.get("nesterov", False))
  if config.get("decay_only_first"):
    kwargs["mask"] = {"w1": True, "w2": False}
  scheduler = config.get("scheduler")
  if scheduler is None:
    return js.sgdw(config["lr"], **kwargs)
  if scheduler["name"] == "CosineAnnealingWarmRestarts":  # SGDWR
    return js.sgdw(_warm_restarts(config["lr"], scheduler), **kwargs)
  assert scheduler["name"] == "OneCycleLR"
  # torch's OneCycleLR also cycles SGD's momentum; inject it the same way.
  total, pct_start = scheduler["total_steps"], scheduler["pct_start"]
  del kwargs["momentum"]
  return optax.inject_hyperparams(js.sgdw)(
      learning_rate=js.schedules.one_cycle(total, scheduler["max_lr"], pct_start),
      momentum=js.schedules.one_cycle_momentum(total, pct_start), **kwargs)


def _trajectory(opt, num_steps, dtype=jnp.float64, golden=GOLDEN):
  x, y = (jnp.asarray(golden[k], dtype) for k in ("x", "y"))
  params = {"w1": jnp.asarray(golden["w1"], dtype), "w2": jnp.asarray(golden["w2"], dtype)}

  def step(carry, _):
    params, state = carry
    grads = jax.grad(_loss)(params, x, y)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    flat = jnp.concatenate([params["w1"].ravel(), params["w2"].ravel()])
    return (params, state), flat

  (_, _), flats = jax.lax.scan(step, (params, opt.init(params)), None, length=num_steps)
  return flats


@pytest.mark.parametrize("case", CASES)
def test_adamw_matches_torch_step_for_step(case):
  config = json.loads(str(GOLDEN[f"config_{case}"]))
  expected = GOLDEN[case]
  got = _trajectory(_optimizer(config), expected.shape[0], jnp.dtype(config["dtype"]))
  assert got.dtype == jnp.dtype(config["dtype"])
  rtol = 1e-10 if config["dtype"] == "float64" else 1e-3  # float32: 300 steps of rounding
  scale = np.maximum(np.abs(expected), 1e-3)
  np.testing.assert_array_less(np.abs(np.asarray(got, np.float64) - expected) / scale, rtol)


@pytest.mark.parametrize("case", SGDW_CASES)
def test_sgdw_matches_torch_step_for_step(case):
  config = json.loads(str(SGDW_GOLDEN[f"config_{case}"]))
  expected = SGDW_GOLDEN[case]
  got = np.asarray(_trajectory(_sgdw(config), expected.shape[0], golden=SGDW_GOLDEN))
  np.testing.assert_array_less(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-3), 1e-10)


def test_sgdw_golden_differs_from_coupled_decay():
  """The golden SGDW run is sensitive to where the decay enters (the test can fail): SGD with the
  same coefficient as an L2 term through the momentum buffer (torch's weight_decay) ends elsewhere."""
  config = json.loads(str(SGDW_GOLDEN["config_sgdw"]))
  expected = SGDW_GOLDEN["sgdw"]
  coupled = optax.chain(optax.add_decayed_weights(config["weight_decay"]),
                        optax.sgd(config["lr"], momentum=config["momentum"]))
  got = np.asarray(_trajectory(coupled, expected.shape[0], golden=SGDW_GOLDEN))
  assert np.max(np.abs(got[-1] - expected[-1])) > 1e-2


def test_sgdw_is_plain_trace_step_when_weight_decay_is_zero():
  """No decay: js.sgdw is optax.sgd (optax's trace is PyTorch's momentum, first buffer = g_1)."""
  rng = np.random.default_rng(2)
  grads = [jnp.asarray(rng.normal(size=3)) for _ in range(5)]
  for nesterov in (False, True):
    ours, theirs = (js.sgdw(0.1, 0.9, weight_decay=0.0, nesterov=nesterov),
                    optax.sgd(0.1, momentum=0.9, nesterov=nesterov))
    p, s_ours, s_theirs = jnp.ones(3), ours.init(jnp.ones(3)), theirs.init(jnp.ones(3))
    for g in grads:
      u_ours, s_ours = ours.update(g, s_ours, p)
      u_theirs, s_theirs = theirs.update(g, s_theirs, p)
      np.testing.assert_array_equal(u_ours, u_theirs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(learning_rate=0.1, momentum=-0.5), "momentum"),
    (dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
    (dict(learning_rate=0.1, nesterov=1), "nesterov"),
    (dict(learning_rate=0.1, momentum=0.0, nesterov=True), "nesterov"),
    (dict(learning_rate=0.1, momentum=None), "momentum"),
    (dict(learning_rate=0.1, weight_decay=None), "weight_decay"),
    (dict(learning_rate=0.1, momentum=True), "momentum"),
])
def test_sgdw_rejects_invalid_arguments(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    js.sgdw(**kwargs)


def test_normalized_weight_decay_closed_form():
  # Loshchilov & Hutter 2019: lambda = lambda_norm * sqrt(b / (B * T)).
  got = js.normalized_weight_decay(0.025, batch_size=128, num_train=50000, num_epochs=100)
  assert got == pytest.approx(0.025 * (128 / 5e6) ** 0.5, rel=1e-15)
  assert js.normalized_weight_decay(0.1, batch_size=4, num_train=4, num_epochs=1) == pytest.approx(0.1)
  # Four times the updates (a quarter of the batch) halve the decay.
  assert js.normalized_weight_decay(1.0, 32, 1000, 10) == pytest.approx(
      js.normalized_weight_decay(1.0, 128, 1000, 10) / 2, rel=1e-15)
  with pytest.raises(TypeError, match="batch_size"):
    js.normalized_weight_decay(0.1, batch_size=12.5, num_train=100, num_epochs=1)
  with pytest.raises(ValueError, match="weight_decay_norm"):
    js.normalized_weight_decay(-0.1, batch_size=16, num_train=100, num_epochs=1)


def test_golden_amsgrad_differs_from_optax_amsgrad_and_from_adam():
  """The AMSGrad golden case is sensitive to where the maximum is taken (the test can fail)."""
  config = json.loads(str(GOLDEN["config_adam_amsgrad"]))
  expected = GOLDEN["adam_amsgrad"]
  for other in (optax.amsgrad(config["lr"]), optax.adam(config["lr"])):
    got = _trajectory(other, expected.shape[0])
    assert np.max(np.abs(got[-1] - expected[-1])) > 1e-5


@pytest.mark.parametrize("make", [
    lambda lr: js.adamw(lr, weight_decay=0.2, amsgrad=True),
    lambda lr: js.sgdw(lr, momentum=0.9, weight_decay=0.2, nesterov=True),
], ids=["adamw", "sgdw"])
def test_decay_uses_scheduled_learning_rate_outside_the_moments(make):
  """With zero gradients the moments (SGDW's momentum buffer) stay zero and the only change is
  p <- p * (1 - lr_t * weight_decay)."""
  schedule = lambda t: 0.5 - 0.1 * jnp.asarray(t, jnp.float64)
  opt = make(schedule)
  params = jnp.array([1.0, -2.0])
  state = opt.init(params)
  expected = params
  update = jax.jit(opt.update)
  for t in range(4):
    updates, state = update(jnp.zeros(2), state, params)
    params = optax.apply_updates(params, updates)
    expected = expected * (1 - schedule(t) * 0.2)
  np.testing.assert_allclose(params, expected, rtol=1e-14)


def test_mask_callable_and_float32_dtypes():
  params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.ones(2, jnp.float32)}
  opt = js.adamw(1e-1, weight_decay=0.5, mask=lambda p: {"w": True, "b": False})
  state = opt.init(params)
  updates, state = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), state, params)
  assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
  np.testing.assert_allclose(updates["w"], -0.05 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_allclose(updates["b"], np.zeros(2))


@pytest.mark.parametrize("factory", [js.adamw, js.sgdw])
def test_callable_mask_taken_for_a_schedule_by_inject_hyperparams_is_an_error(factory):
  """inject_hyperparams calls a callable mask with the step count; a tree-map mask then returns one
  False, which optax would broadcast to "decay nothing" silently. With static_args it is a mask."""
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  grads = jax.tree.map(jnp.zeros_like, params)
  mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
  wrong = optax.inject_hyperparams(factory)(learning_rate=0.1, weight_decay=0.5, mask=mask)
  with pytest.raises(ValueError, match="static_args"):
    wrong.init(params)
  right = optax.inject_hyperparams(factory, static_args=("mask",))(
      learning_rate=0.1, weight_decay=0.5, mask=mask)
  updates, _ = jax.jit(right.update)(grads, right.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.05 * np.ones((2, 2)), rtol=1e-12)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))
  with pytest.raises(TypeError, match=r"mask\['b'\]"):
    factory(0.1, mask={"w": True, "b": 0.5}).init(params)


def test_momentum_cycling_through_inject_hyperparams_sets_b1_and_sgd_momentum():
  total = 50
  momentum = js.schedules.one_cycle_momentum(total)
  for opt in (optax.inject_hyperparams(js.adamw)(learning_rate=1e-2, b1=momentum),
              optax.inject_hyperparams(optax.sgd)(learning_rate=1e-2, momentum=momentum)):
    params = jnp.ones(3)
    state = opt.init(params)
    update = jax.jit(opt.update)
    seen = []
    for _ in range(total):
      updates, state = update(jnp.ones(3), state, params)
      seen.append(float(state.hyperparams["b1" if "b1" in state.hyperparams else "momentum"]))
      params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(seen, [momentum(t) for t in range(total)], rtol=1e-12)


@pytest.mark.parametrize("inner", ["sgd", "adamw"])
def test_multisteps_gradient_accumulation_equals_big_batch(inner):
  """k micro-batches through optax.MultiSteps equal one step on the k-times larger batch."""
  rng = np.random.default_rng(1)
  x, y, k = jnp.asarray(rng.normal(size=(24, 3))), jnp.asarray(rng.normal(size=24)), 4
  loss = lambda w, xb, yb: jnp.mean((xb @ w - yb) ** 2)
  make = (lambda: optax.sgd(0.1)) if inner == "sgd" else (lambda: js.adamw(0.1, weight_decay=0.1))
  accumulated = optax.MultiSteps(make(), every_k_schedule=k, accumulator_dtype=jnp.float64)
  w_acc, w_big = jnp.array([0.3, -0.2, 0.1]), jnp.array([0.3, -0.2, 0.1])
  state_acc, big = accumulated.init(w_acc), make()
  state_big = big.init(w_big)

  def step(opt_update, w, state, xb, yb):
    updates, state = opt_update(jax.grad(loss)(w, xb, yb), state, w)
    return optax.apply_updates(w, updates), state

  step = jax.jit(step, static_argnums=0)
  for _ in range(3):
    for xb, yb in zip(jnp.split(x, k), jnp.split(y, k)):
      w_acc, state_acc = step(accumulated.update, w_acc, state_acc, xb, yb)
    w_big, state_big = step(big.update, w_big, state_big, x, y)
  assert w_acc.dtype == jnp.float64
  np.testing.assert_allclose(w_acc, w_big, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(learning_rate="fast"), "learning_rate"),
    (dict(learning_rate=1e-3, b1=1.0), "b1"),
    (dict(learning_rate=1e-3, b2=-0.1, amsgrad=True), "b2"),
    (dict(learning_rate=1e-3, eps=-1.0), "eps"),
    (dict(learning_rate=1e-3, weight_decay=-0.1), "weight_decay"),
    (dict(learning_rate=float("inf")), "learning_rate"),
    (dict(learning_rate=1e-3, weight_decay="x"), "weight_decay"),
    (dict(learning_rate=1e-3, b1=None), "b1"),
    (dict(learning_rate=1e-3, eps=None), "eps"),
    (dict(learning_rate=1e-3, b2=float("nan")), "b2"),
])
def test_adamw_rejects_invalid_arguments(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    js.adamw(**kwargs)


def test_heun_matches_closed_form_on_quadratic():
  """On f = x^T A x / 2 a Heun step is x <- (I - lr A + lr^2 A^2 / 2) x exactly."""
  a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
  grad_fn = jax.grad(lambda x: 0.5 * x @ a @ x)
  lr, steps = 0.2, 25
  opt = js.heun(lr)
  x = x0 = jnp.array([1.0, -1.5])
  state = opt.init(x)
  update = jax.jit(lambda g, s, p: opt.update(g, s, p, grad_fn=grad_fn))
  for _ in range(steps):
    updates, state = update(grad_fn(x), state, x)
    x = optax.apply_updates(x, updates)
  step_matrix = np.eye(2) - lr * a + 0.5 * lr**2 * a @ a
  np.testing.assert_allclose(x, np.linalg.matrix_power(step_matrix, steps) @ x0, rtol=1e-12)


def test_heun_in_chain_with_schedule_and_errors():
  schedule = lambda t: 0.1 * (1.0 - jnp.asarray(t, jnp.float64) / 10)
  grad_fn = jax.grad(lambda p: jnp.sum(p["x"] ** 2))
  opt = optax.chain(optax.clip_by_global_norm(10.0), js.heun(schedule))
  params = {"x": jnp.array([1.0])}
  state = opt.init(params)
  updates, state = opt.update(grad_fn(params), state, params, grad_fn=grad_fn)
  # f = x^2: g1 = 2, trial = 1 - 0.2 = 0.8, g2 = 1.6, update = -0.05 * 3.6.
  chex.assert_trees_all_close(updates, {"x": jnp.array([-0.18])}, rtol=1e-12)
  with pytest.raises(ValueError, match="grad_fn"):
    js.heun(0.1).update(params, js.heun(0.1).init(params), params)
