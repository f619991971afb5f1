"""js.lr_range_test on problems with a known good learning-rate range, and its plot."""

import functools
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest

import jaxsecond as js
from jaxsecond.lr_range_test import suggest_learning_rate

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402 - the tests below create figures before any plot imports it

# f(x) = sum(h_i x_i^2) / 2: gradient descent converges for lr < 2 / max(h) = 0.2 and diverges above.
CURVATURES = jnp.array([10.0, 5.0, 1.0, 0.5])


def _quadratic(params):
  return 0.5 * jnp.sum(CURVATURES * params**2)


def test_suggestion_rule_on_curve_with_known_steepest_point():
  lrs = np.logspace(-6, 1, 141)
  # Steepest fall (in log lr) at lr = 10^-3; a divergent tail beyond lr = 1 must be ignored.
  losses = 1.0 - np.tanh(2.0 * (np.log10(lrs) + 3.0)) + np.where(lrs > 1.0, 50.0 * (lrs - 1), 0.0)
  np.testing.assert_allclose(suggest_learning_rate(lrs, losses), 1e-3, rtol=1e-9)
  assert np.isnan(suggest_learning_rate(lrs[:2], losses[:2]))


@pytest.mark.parametrize("drop_after, expected_index", [(8, 50), (9, 10)])
def test_suggestion_leaves_out_the_first_tenth_of_the_points(drop_after, expected_index):
  # 100 points: a gentle fall steepest at index 50, plus a sharp drop between points drop_after and
  # drop_after + 1. Central differences put its slope on both points: inside the first tenth
  # (indices 0..9) it is ignored; from index 10 on it is the suggestion.
  lrs = np.logspace(-6, 0, 100)
  index = np.arange(100)
  losses = 1.0 - 0.1 * np.tanh((index - 50) / 10.0) - np.where(index > drop_after, 1.0, 0.0)
  assert suggest_learning_rate(lrs, losses) == lrs[expected_index]


def test_range_test_on_quadratic_finds_the_stable_range_and_stops_on_divergence():
  # Minibatch targets b_k (small noise) keep every mode excited, as minibatch noise does.
  rng = np.random.default_rng(0)
  targets = [jnp.asarray(rng.normal(size=4) * 0.01) for _ in range(16)]
  params = jnp.ones(4)
  result = js.lr_range_test(lambda p, b: _quadratic(p - b), params, targets, optimizer=optax.sgd,
                            start_lr=1e-4, end_lr=10.0, num_steps=100)
  assert result.diverged
  # The loss explodes once lr > 2 / max(h) = 0.2, well before end_lr.
  assert 0.2 < result.lrs[-1] < 2.0
  assert len(result.lrs) == len(result.losses) == len(result.smoothed_losses) < 100
  # Steepest descent in the convergent range, where lr * h_max is of order 0.1 to 1.
  assert 5e-3 < result.suggested_lr < 0.2
  assert result.lr_at_min_loss < result.lrs[-1]
  # Exponential ramp from start_lr with ratio (end / start)^(1 / 99).
  np.testing.assert_allclose(result.lrs, 1e-4 * 1e5 ** (np.arange(len(result.lrs)) / 99), rtol=1e-9)
  np.testing.assert_array_equal(params, jnp.ones(4))


def test_smoothing_is_debiased_exponential_average():
  losses = iter([4.0, 2.0, 3.0, 1.0, 5.0])
  values = jnp.array([4.0, 2.0, 3.0, 1.0, 5.0])
  batches = [jnp.int32(i) for i in range(5)]
  result = js.lr_range_test(lambda p, i: values[i] + 0.0 * jnp.sum(p), jnp.zeros(2), batches,
                            optimizer=optax.sgd, num_steps=5, smooth=0.5, diverge_factor=100.0)
  average, expected = 0.0, []
  for step, loss in enumerate(losses):
    average = 0.5 * average + 0.5 * loss
    expected.append(average / (1 - 0.5 ** (step + 1)))
  np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)
  assert not result.diverged and len(result.lrs) == 5
  np.testing.assert_allclose(result.lrs[[0, -1]], [1e-7, 10.0], rtol=1e-12)


def test_nan_loss_stops_the_test():
  def loss_fn(params):
    # Gradient descent on -p^2 pushes p up; the loss turns NaN past p = 1.5 without blowing up.
    return jnp.where(params[0] > 1.5, jnp.nan, 2.0 - params[0] ** 2)

  result = js.lr_range_test(loss_fn, jnp.array([1.0]), None,
                            optimizer=optax.sgd, start_lr=1e-3, end_lr=100.0, num_steps=60,
                            diverge_factor=1e9)
  assert result.diverged and np.isnan(result.losses[-1])
  assert len(result.lrs) < 60


def test_one_shot_iterator_ending_early_ends_the_test():
  batches = iter([jnp.ones(4)] * 7)
  result = js.lr_range_test(lambda p, b: jnp.sum((p - b) ** 2), jnp.zeros(4), batches, optimizer=optax.sgd, num_steps=20,
                            end_lr=1e-3)
  assert len(result.lrs) == 7 and not result.diverged


def test_plot_returns_log_x_figure_with_suggestion_marked():
  result = js.lr_range_test(_quadratic, jnp.ones(4), None, optimizer=optax.sgd, start_lr=1e-4,
                            end_lr=10.0, num_steps=60)
  fig = js.plot_lr_range_test(result)
  ax = fig.axes[0]
  assert ax.get_xscale() == "log"
  marker = [line for line in ax.get_lines() if line.get_marker() == "o"]
  assert len(marker) == 1
  np.testing.assert_allclose(marker[0].get_xdata(), [result.suggested_lr])
  matplotlib.pyplot.close(fig)


def test_plot_without_matplotlib_is_a_clear_import_error(monkeypatch):
  result = js.lr_range_test(_quadratic, jnp.ones(4), None, optimizer=optax.sgd, num_steps=5,
                            end_lr=1e-3)
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
  with pytest.raises(ImportError, match="pip install matplotlib"):
    js.plot_lr_range_test(result)


@pytest.mark.parametrize("kwargs, message", [
    (dict(start_lr=0.0), "start_lr"),
    (dict(start_lr=1.0, end_lr=0.5), "end_lr"),
    (dict(num_steps=1), "num_steps"),
    (dict(smooth=1.0), "smooth"),
    (dict(diverge_factor=1.0), "diverge_factor"),
    (dict(optimizer=optax.sgd(0.1)), "optimizer"),
    (dict(optimizer=lambda lr: optax.sgd(lr)), "learning_rate"),
    (dict(start_lr="a"), "start_lr"),
    (dict(end_lr=None), "end_lr"),
])
def test_invalid_arguments(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    js.lr_range_test(_quadratic, jnp.ones(4), None, **kwargs)


def test_plot_on_given_axes_with_adamw_factory():
  result = js.lr_range_test(_quadratic, jnp.ones(4), None, optimizer=js.adamw, num_steps=30,
                            start_lr=1e-3, end_lr=1.0)
  fig, ax = matplotlib.pyplot.subplots()
  assert js.plot_lr_range_test(result, ax=ax) is fig
  assert ax.get_xscale() == "log"
  matplotlib.pyplot.close(fig)


def test_partial_factory_with_mask_callable_decays_the_masked_leaves():
  """functools.partial(js.sgdw, mask=callable): only the learning rate is a schedule, the mask stays
  a mask (inject_hyperparams alone would call it with the step count and decay nothing)."""
  params = {"w": jnp.full((2, 2), 1.0), "b": jnp.full(2, 1.0)}
  loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
  wd = 3.0
  optimizer = functools.partial(js.sgdw, momentum=0.0, weight_decay=wd,
                                mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
  result = js.lr_range_test(loss, params, None, optimizer=optimizer, start_lr=1e-3, end_lr=0.05,
                            num_steps=20)
  # Gradient 2p; w also decays by lr * wd: w <- w (1 - lr (2 + wd)), b <- b (1 - 2 lr).
  w, b, expected = 1.0, 1.0, []
  for lr in result.lrs:
    expected.append(4 * w**2 + 2 * b**2)
    w, b = w * (1 - lr * (2 + wd)), b * (1 - 2 * lr)
  np.testing.assert_allclose(result.losses, expected, rtol=1e-12)


def test_no_batch_is_a_clear_error():
  with pytest.raises(ValueError, match="batches"):
    js.lr_range_test(lambda p, batch: jnp.sum((p - batch) ** 2), jnp.ones(4), [])
