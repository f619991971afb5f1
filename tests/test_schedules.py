"""js.schedules against PyTorch's schedulers (golden files), under jit with a traced step."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsecond as js

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "schedules.npz"))
NAMES = sorted(k[len("config_"):] for k in GOLDEN.files if k.startswith("config_"))


# The custom CyclicLR scale functions of tests/golden/make_golden.py, in jnp.
SCALE_FNS = {"inverse": lambda x: 1.0 / (1.0 + x), "decay": lambda x: 0.98**x}


def _schedules(spec):
  """(lr schedule, momentum schedule or None) for a torch scheduler spec."""
  kwargs = spec["kwargs"]
  if spec["name"] == "CyclicLR":
    custom = {}
    if "scale_fn" in spec:
      custom = dict(scale_fn=SCALE_FNS[spec["scale_fn"]], scale_mode=kwargs["scale_mode"])
    shape = dict(step_size_up=kwargs["step_size_up"], step_size_down=kwargs.get("step_size_down"),
                 mode=kwargs.get("mode", "triangular"), gamma=kwargs.get("gamma", 1.0), **custom)
    lr = js.schedules.cyclic(kwargs["base_lr"], kwargs["max_lr"], **shape)
    if not spec.get("cycle_momentum"):
      return lr, None
    # PyTorch's momentum cycle, as README gives it: the same shape between the momenta, reversed.
    low, high = kwargs["base_momentum"], kwargs["max_momentum"]
    return lr, lambda step: low + high - js.schedules.cyclic(low, high, **shape)(step)
  if spec["name"] == "OneCycleLR":
    common = dict(pct_start=kwargs.get("pct_start", 0.3), anneal_strategy=kwargs.get("anneal_strategy", "cos"),
                  three_phase=kwargs.get("three_phase", False))
    lr = js.schedules.one_cycle(kwargs["total_steps"], kwargs["max_lr"],
                                div_factor=kwargs.get("div_factor", 25.0),
                                final_div_factor=kwargs.get("final_div_factor", 1e4), **common)
    momentum = js.schedules.one_cycle_momentum(
        kwargs["total_steps"], base_momentum=kwargs.get("base_momentum", 0.85),
        max_momentum=kwargs.get("max_momentum", 0.95), **common)
    return lr, momentum
  assert spec["name"] == "CosineAnnealingWarmRestarts"
  return js.schedules.cosine_warm_restarts(
      1.0, kwargs["T_0"], t_mult=kwargs["T_mult"], eta_min=kwargs["eta_min"]), None


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_torch_at_every_step_with_traced_step(name):
  spec = json.loads(str(GOLDEN[f"config_{name}"]))
  lr, momentum = _schedules(spec)
  steps = jnp.arange(spec["steps"] + 1, dtype=jnp.int32)
  got = jax.jit(jax.vmap(lr))(steps)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, GOLDEN[f"{name}_lr"], rtol=1e-10, atol=1e-15)
  if momentum is not None:
    np.testing.assert_allclose(jax.jit(jax.vmap(momentum))(steps), GOLDEN[f"{name}_momentum"],
                               rtol=1e-10)


def test_golden_files_cover_several_cycles():
  """The SGDR and CLR cases span several restarts/cycles (so boundaries are exercised)."""
  for name in ("sgdr_t_mult_2", "sgdr_t_mult_3", "cyclic_triangular", "cyclic_triangular2"):
    lrs = GOLDEN[f"{name}_lr"]
    rises = np.sum(np.diff(np.sign(np.diff(lrs))) > 0)
    assert rises >= 3, name


def test_python_int_step_and_no_retrace():
  schedule = js.schedules.cosine_warm_restarts(0.1, t_0=4, t_mult=2)
  # Period starts 0, 4, 12, 28: step 12 is a restart.
  np.testing.assert_allclose(schedule(12), 0.1)
  np.testing.assert_allclose(schedule(11), 0.05 * (1 + np.cos(np.pi * 7 / 8)))
  traced = jax.jit(chex.assert_max_traces(schedule, n=1))
  for step in range(30):
    traced(jnp.int32(step))


def test_one_cycle_beyond_total_steps_holds_final_value():
  schedule = js.schedules.one_cycle(100, 1.0, div_factor=10.0, final_div_factor=100.0)
  np.testing.assert_allclose(schedule(101), 1e-3)
  np.testing.assert_allclose(schedule(10_000), 1e-3)


@pytest.mark.parametrize("schedule", [
    js.schedules.cyclic(0.1, 1.0, 4, mode="exp_range", gamma=0.9),
    js.schedules.one_cycle(20, 0.1),
    js.schedules.one_cycle_momentum(20, three_phase=True),
    js.schedules.cosine_warm_restarts(0.1, 3, t_mult=2),
])
def test_values_adopt_float32_parameters_dtype(schedule):
  """Weakly typed values: float32 updates stay float32, also through inject_hyperparams."""
  params = jnp.ones(3, jnp.float32)
  assert (jax.jit(schedule)(jnp.int32(5)) * params).dtype == jnp.float32
  opt = optax.inject_hyperparams(js.adamw)(learning_rate=schedule, amsgrad=True)
  updates, _ = jax.jit(opt.update)(params, opt.init(params), params)
  assert updates.dtype == jnp.float32


_BIG = 2**24 + 1  # the first integer float32 cannot hold


@pytest.mark.parametrize("schedule, period", [
    (js.schedules.cyclic(0.0, 1.0, step_size_up=5), 10),
    (js.schedules.cyclic(0.1, 1.0, step_size_up=3, step_size_down=4), 7),
    (js.schedules.cosine_warm_restarts(1.0, t_0=3), 3),
])
def test_float32_mode_is_exact_at_steps_beyond_float32_integers(schedule, period):
  """A periodic schedule at a step above 2^24 (an int32 step count float32 cannot hold) equals its
  value at the same position in the first period, in float32 mode too."""
  with jax.enable_x64(False):
    for step in (_BIG, _BIG + 1, 2**30 + 7):
      np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(step)), schedule(step % period), rtol=1e-6)


def test_sgdr_with_growing_periods_restarts_at_the_exact_step_beyond_float32_integers():
  """Periods 3, 6, 12, ... start at 3 (2^k - 1); the one starting at 3 (2^23 - 1), an odd number above
  2^24, restarts at that step exactly (a float32 step would be rounded to a neighbour)."""
  schedule = jax.jit(js.schedules.cosine_warm_restarts(1.0, t_0=3, t_mult=2))
  start = 3 * (2**23 - 1)
  with jax.enable_x64(False):
    np.testing.assert_allclose(schedule(jnp.int32(start)), 1.0)
    np.testing.assert_allclose(schedule(jnp.int32(start - 1)), 0.0, atol=1e-6)  # the period before ends


def test_one_cycle_holds_its_final_value_past_total_steps_also_with_a_late_peak():
  """Three phases whose second would end after total_steps (2 pct T - 2 > T): PyTorch stops at step
  T (it raises after); we hold the final value from T + 1 on, as for every other setting."""
  schedule = js.schedules.one_cycle(100, 0.1, pct_start=0.75, three_phase=True)
  final = 0.1 / 25.0 / 1e4
  assert float(schedule(100)) > 0.05  # still falling from the peak at step T
  np.testing.assert_allclose([schedule(101), schedule(120), schedule(10**6)], final, rtol=1e-12)


def test_narrow_integer_steps_and_constants_beyond_int32():
  """An int8 step is widened before the cycle arithmetic; a cycle longer than int32 holds takes the
  float path."""
  np.testing.assert_allclose(js.schedules.cyclic(0.0, 1.0, 100)(jnp.int8(5)), 0.05, rtol=1e-12)
  np.testing.assert_allclose(js.schedules.cosine_warm_restarts(1.0, t_0=40000)(jnp.int16(30000)),
                             (1 + np.cos(np.pi * 0.75)) / 2, rtol=1e-12)
  # (1 + t / total - cycle, as PyTorch computes it, cancels: 1e-7 relative)
  np.testing.assert_allclose(js.schedules.cyclic(0.0, 1.0, step_size_up=3e9)(jnp.int32(3)), 1e-9, rtol=1e-6)


def test_bfloat16_hyper_parameters_are_numbers():
  schedule = js.schedules.one_cycle(100, jnp.asarray(0.1, jnp.bfloat16))
  np.testing.assert_allclose(schedule(0), 0.1 / 25.0, rtol=1e-2)  # 0.1 rounded to bfloat16


def test_float32_mode():
  schedule = js.schedules.cyclic(0.1, 1.0, 4)
  with jax.enable_x64(False):
    value = jax.jit(schedule)(jnp.int32(2))
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, 0.55, rtol=1e-6)


@pytest.mark.parametrize("factory, kwargs, message", [
    (js.schedules.cyclic, dict(base_value=0.1, max_value=1.0, step_size_up=0), "step_size_up"),
    (js.schedules.cyclic, dict(base_value=0.1, max_value=1.0, step_size_up=3, step_size_down=-1),
     "step_size_down"),
    (js.schedules.cyclic, dict(base_value=1.0, max_value=0.1, step_size_up=3), "max_value"),
    (js.schedules.cyclic, dict(base_value=0.1, max_value=1.0, step_size_up=3, mode="saw"), "mode"),
    (js.schedules.cyclic, dict(base_value=0.1, max_value=1.0, step_size_up=3, mode="exp_range",
                               gamma=0.0), "gamma"),
    (js.schedules.one_cycle, dict(total_steps=100, max_value=0.1, pct_start=-0.1), "pct_start"),
    (js.schedules.one_cycle, dict(total_steps=100, max_value=0.1, pct_start=1.1), "pct_start"),
    # A zero-length phase that a step reaches (PyTorch divides by zero at that step): the rise at
    # step 0, the fall at step 100.
    (js.schedules.one_cycle, dict(total_steps=100, max_value=0.1, pct_start=1.0), "pct_start"),
    (js.schedules.one_cycle, dict(total_steps=0, max_value=0.1), "total_steps"),
    (js.schedules.one_cycle, dict(total_steps=100, max_value=0.1, anneal_strategy="exp"),
     "anneal_strategy"),
    (js.schedules.one_cycle, dict(total_steps=10, max_value=0.1, pct_start=0.1), "pct_start"),
    (js.schedules.one_cycle_momentum, dict(total_steps=100, base_momentum=0.95, max_momentum=0.85),
     "max_momentum"),
    (js.schedules.cosine_warm_restarts, dict(base_value=0.1, t_0=0), "t_0"),
    (js.schedules.cosine_warm_restarts, dict(base_value=0.1, t_0=5, t_mult=0), "t_mult"),
    (js.schedules.cosine_warm_restarts, dict(base_value=0.1, t_0=2.5), "t_0"),
    (js.schedules.cosine_warm_restarts, dict(base_value=0.1, t_0=5, eta_min=None), "eta_min"),
    (js.schedules.cyclic, dict(base_value="a", max_value=1.0, step_size_up=3), "base_value"),
    (js.schedules.cyclic, dict(base_value=0.1, max_value=1.0, step_size_up=float("inf")), "step_size_up"),
    (js.schedules.one_cycle, dict(total_steps=100, max_value=float("inf")), "max_value"),
])
def test_invalid_arguments_are_clear_errors(factory, kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    factory(**kwargs)
