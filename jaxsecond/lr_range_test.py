"""The learning-rate range test (Smith 2015) with fastai `lr_find` semantics, and its plot."""

import inspect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsecond._validation import check_number, check_positive_int


class LRRangeTestResult(NamedTuple):
  """Outcome of `lr_range_test`.

  Attributes:
    lrs: learning rate of each step taken (numpy array).
    losses: the raw loss of each step, evaluated before its update.
    smoothed_losses: exponentially smoothed and debiased losses.
    suggested_lr: learning rate of steepest descent of the smoothed loss against log(lr) (see
      `suggest_learning_rate`); NaN when fewer than three steps were taken.
    lr_at_min_loss: learning rate at the minimum of the smoothed loss (the "minimum / 10" rule of
      thumb is `lr_at_min_loss / 10`).
    diverged: True when the test stopped early on divergence or a NaN loss.
  """

  lrs: np.ndarray
  losses: np.ndarray
  smoothed_losses: np.ndarray
  suggested_lr: float
  lr_at_min_loss: float
  diverged: bool


def suggest_learning_rate(lrs, smoothed_losses):
  """The learning rate where the smoothed loss falls fastest against log(lr).

  The slope d(loss)/d(log lr) is taken with `np.gradient` (central differences on the log grid),
  and its most negative value is searched among the points up to the minimum of the smoothed loss,
  so the divergent tail after the minimum cannot be chosen. The first tenth of the points is left
  out too: there the debiased average rests on a handful of losses and its slope is mostly noise.

  Args:
    lrs: increasing learning rates.
    smoothed_losses: smoothed loss at each learning rate.

  Returns:
    The suggested learning rate (float), NaN with fewer than three points.

  Example:
    >>> import numpy as np
    >>> lrs = np.logspace(-5, 0, 51)
    >>> float(np.log10(suggest_learning_rate(lrs, -np.tanh(np.log10(lrs) + 2.5))).round(6))
    -2.5
  """
  lrs = np.asarray(lrs, dtype=np.float64)
  smoothed_losses = np.asarray(smoothed_losses, dtype=np.float64)
  finite = np.isfinite(smoothed_losses)
  lrs, smoothed_losses = lrs[finite], smoothed_losses[finite]
  if lrs.size < 3:
    return float("nan")
  slopes = np.gradient(smoothed_losses, np.log(lrs))
  start = lrs.size // 10
  end = max(int(np.argmin(smoothed_losses)) + 1, start + 1)
  return float(lrs[start + int(np.argmin(slopes[start:end]))])


def _exponential_ramp(start_lr, end_lr, num_steps):
  ratio = math.log(end_lr / start_lr) / (num_steps - 1)
  return lambda count: start_lr * jnp.exp(ratio * count)


def _loss_arguments(batches, num_steps):
  """Yields up to num_steps argument tuples for loss_fn after params: () or (batch,).

  A re-iterable collection of batches is cycled; a one-shot iterator may end early.
  """
  if batches is None:
    for _ in range(num_steps):
      yield ()
    return
  produced = 0
  while produced < num_steps:
    iterator = iter(batches)
    one_shot = iterator is batches
    empty = True
    for batch in iterator:
      empty = False
      yield (batch,)
      produced += 1
      if produced == num_steps:
        return
    if empty and produced == 0:
      raise ValueError("batches yielded no batch: give at least one (or None for a full-batch loss).")
    if one_shot or empty:
      return


def lr_range_test(loss_fn, params, batches, optimizer=optax.adam, start_lr=1e-7, end_lr=10.0,
                  num_steps=100, smooth=0.98, diverge_factor=4.0):
  """Learning-rate range test: train briefly while the learning rate grows exponentially.

  Step `i` (from 0) uses `lr_i = start_lr * (end_lr / start_lr)^(i / (num_steps - 1))`. The loss of
  each step is smoothed as fastai does, `avg = smooth * avg + (1 - smooth) * loss`, and debiased,
  `smoothed = avg / (1 - smooth^(i + 1))`. The test stops when the smoothed loss exceeds
  `diverge_factor` times the best smoothed loss so far (losses are assumed positive) or is NaN,
  after recording that step. The caller's `params` are not modified and no optimizer state is
  returned: the test starts from `optimizer(learning_rate).init(params)` and throws it away.

  Args:
    loss_fn: `loss_fn(params, batch) -> scalar` (or `loss_fn(params)` when `batches` is None).
    params: initial parameters (any pytree).
    batches: an iterable of batches; a re-iterable collection (list, array) is cycled until
      `num_steps`, a one-shot iterator that ends early ends the test. None for full-batch losses.
    optimizer: a factory `learning_rate -> optax.GradientTransformation` with a `learning_rate`
      argument (e.g. `optax.sgd`, `optax.adam`, `js.adamw`, or a `functools.partial` of one, whose
      other arguments, a `mask` callable included, are passed through unchanged).
    start_lr: first learning rate (> 0).
    end_lr: last learning rate (> `start_lr`).
    num_steps: number of steps when nothing diverges (>= 2).
    smooth: smoothing factor in [0, 1).
    diverge_factor: stop when the smoothed loss exceeds this multiple of the best (> 1).

  Returns:
    An `LRRangeTestResult`.

  References:
    Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (arXiv 2015), section 3.3;
    fastai `Learner.lr_find` (Howard & Gugger 2020).

  Example:
    >>> import jax.numpy as jnp, jaxsecond as js
    >>> result = js.lr_range_test(lambda p: jnp.sum(p ** 2), jnp.ones(3), None, num_steps=50,
    ...                           start_lr=1e-4, end_lr=10.0)
    >>> fig = js.plot_lr_range_test(result)  # doctest: +SKIP
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {loss_fn!r}.")
  if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
    raise TypeError("optimizer must be a factory learning_rate -> optax.GradientTransformation "
                    f"(e.g. optax.sgd), got {optimizer!r}.")
  parameters = inspect.signature(optimizer).parameters
  if "learning_rate" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    raise TypeError("optimizer must be a factory with a `learning_rate` argument (the one the test "
                    f"ramps), got one with arguments {tuple(parameters)}.")
  check_number("start_lr", start_lr, low=0.0, low_open=True)
  check_number("end_lr", end_lr, low=start_lr, low_open=True)
  check_positive_int("num_steps", num_steps)
  if num_steps < 2:
    raise ValueError(f"num_steps must be at least 2, got {num_steps}.")
  check_number("smooth", smooth, low=0.0, high=1.0, high_open=True)
  check_number("diverge_factor", diverge_factor, low=1.0, low_open=True, finite=False)  # inf: never stop

  ramp = _exponential_ramp(start_lr, end_lr, num_steps)
  # Only the learning rate is injected: inject_hyperparams would take any other callable argument
  # of the factory (a weight-decay mask in a functools.partial) for a schedule of the step count.
  others = set(parameters) - {"learning_rate"}
  opt = optax.inject_hyperparams(optimizer, static_args=others)(learning_rate=ramp)
  value_and_grad = jax.value_and_grad(loss_fn)

  @jax.jit
  def train_step(params, state, arguments):
    loss, grads = value_and_grad(params, *arguments)
    updates, state = opt.update(grads, state, params)
    # The state returned by inject_hyperparams holds the values this update used.
    return optax.apply_updates(params, updates), state, loss, state.hyperparams["learning_rate"]

  state = opt.init(params)
  lrs, losses, smoothed = [], [], []
  average, best, diverged = 0.0, math.inf, False
  for step, arguments in enumerate(_loss_arguments(batches, num_steps)):
    params, state, loss, lr = train_step(params, state, arguments)
    loss = float(loss)
    average = smooth * average + (1 - smooth) * loss
    debiased = average / (1 - smooth ** (step + 1))
    lrs.append(float(lr))
    losses.append(loss)
    smoothed.append(debiased)
    best = min(best, debiased)
    if math.isnan(debiased) or debiased > diverge_factor * best:
      diverged = True
      break

  lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
  finite = np.isfinite(smoothed)
  lr_at_min = float(lrs[finite][np.argmin(smoothed[finite])]) if finite.any() else float("nan")
  return LRRangeTestResult(lrs=lrs, losses=np.asarray(losses), smoothed_losses=smoothed,
                           suggested_lr=suggest_learning_rate(lrs, smoothed),
                           lr_at_min_loss=lr_at_min, diverged=diverged)


def plot_lr_range_test(result, ax=None):
  """Plots an `LRRangeTestResult`: loss against learning rate on a log axis, suggestion marked.

  Args:
    result: the `LRRangeTestResult` of `lr_range_test`.
    ax: a matplotlib `Axes` to draw on; a new figure when None.

  Returns:
    The matplotlib `Figure`.

  Raises:
    ImportError: when matplotlib is not installed (it is an optional dependency).

  Example:
    >>> fig = js.plot_lr_range_test(result)  # doctest: +SKIP
    >>> fig.savefig("lr_range_test.png")  # doctest: +SKIP
  """
  if not isinstance(result, LRRangeTestResult):
    raise TypeError(f"result must be an LRRangeTestResult, got {type(result).__name__}.")
  if ax is None:
    try:
      import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise ImportError("jaxsecond.plot_lr_range_test needs matplotlib, an optional dependency: "
                        "pip install matplotlib") from error
    fig, ax = plt.subplots(figsize=(6, 4))
  else:
    fig = ax.figure
  ax.plot(result.lrs, result.losses, color="0.7", linewidth=1, label="loss")
  ax.plot(result.lrs, result.smoothed_losses, color="C0", label="smoothed loss")
  if np.isfinite(result.suggested_lr):
    at = np.interp(np.log(result.suggested_lr), np.log(result.lrs), result.smoothed_losses)
    ax.plot([result.suggested_lr], [at], "o", color="C3",
            label=f"steepest descent: {result.suggested_lr:.2e}")
  finite = result.smoothed_losses[np.isfinite(result.smoothed_losses)]
  if finite.size:
    # Frame the smoothed curve: single raw losses of a diverging step would squash it flat.
    low, high = float(finite.min()), float(finite.max())
    margin = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
    ax.set_ylim(low - margin, high + margin)
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("loss")
  ax.set_title("LR range test")
  ax.legend()
  return fig
