"""Learning-rate and momentum schedules equal to PyTorch's `CyclicLR`, `OneCycleLR` and SGDR.

Each factory validates its arguments and returns an `optax.Schedule`: a pure function `step -> value`
that accepts a Python int or a traced integer array (inside `jit`), where `step` counts completed
optimizer steps, as PyTorch's `last_epoch` does when the scheduler is stepped after every optimizer
step. optax has no cyclical schedule, no `T_mult` restarts and no momentum schedule, so these are
written here, transcribing the PyTorch formulas (phase boundaries included) into array code.
"""

import math

import jax.numpy as jnp
import numpy as np

from jaxsecond._validation import check_number, check_ordered, check_positive_int

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
_ANNEAL_STRATEGIES = ("cos", "linear")


def _integer(step, *constants):
  """``step`` as an integer array of at least 32 bits, or None when it is not an integer or one of
  the schedule's integer ``constants`` does not fit that type (the float path is taken then)."""
  step = jnp.asarray(step)
  if not jnp.issubdtype(step.dtype, jnp.integer):
    return None
  step = step.astype(jnp.promote_types(step.dtype, jnp.int32))
  if any(abs(c) > jnp.iinfo(step.dtype).max for c in constants):
    return None
  return step


def _as_float(step):
  # Multiplying by a Python float gives a *weakly typed* float: the schedule's values then adopt
  # the parameters' dtype (float32 updates stay float32, and inject_hyperparams casts them), while
  # an integer step still computes in the default float type (float64 under jax_enable_x64), not
  # in float32 as optax's schedules do at their int32 step count.
  return jnp.asarray(step) * 1.0


def _check_step_size(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"{name} must be a positive number, got {value!r}.")
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(f"{name} must be positive and finite, got {value!r}.")


def cyclic(base_value, max_value, step_size_up, step_size_down=None, mode="triangular", gamma=1.0,
           *, scale_fn=None, scale_mode="cycle"):
  """Cyclical learning rate (CLR), equal to `torch.optim.lr_scheduler.CyclicLR`.

  With `total = step_size_up + step_size_down`, `cycle = floor(1 + t / total)` and
  `x = 1 + t / total - cycle`, the value is `base + (max - base) * h(x) * scale`, where `h` rises
  linearly from 0 to 1 over the first `step_size_up` steps of a cycle and falls back over the rest.
  `scale` is 1 (`triangular`), `1 / 2^(cycle - 1)` (`triangular2`) or `gamma^t` (`exp_range`,
  evaluated per iteration). PyTorch's `CyclicLR` also cycles the momentum by default, between
  `base_momentum` and `max_momentum` in the opposite direction; that schedule is
  `base_momentum + max_momentum - cyclic(base_momentum, max_momentum, ...)(step)`.

  Args:
    base_value: lower boundary of the cycle.
    max_value: upper boundary of the cycle (>= `base_value`).
    step_size_up: steps in the increasing half of a cycle (> 0).
    step_size_down: steps in the decreasing half; `None` means `step_size_up`.
    mode: `"triangular"`, `"triangular2"` or `"exp_range"`; ignored when `scale_fn` is given.
    gamma: factor of `exp_range` (`gamma^t`), in (0, 1] typically.
    scale_fn: optional custom jnp-traceable scaling `x -> factor`, overriding `mode` as in PyTorch.
    scale_mode: `"cycle"` or `"iterations"`: what `scale_fn` is evaluated on (custom `scale_fn`
      only; the built-in modes fix it as PyTorch does).

  Returns:
    An `optax.Schedule`.

  References:
    Smith 2017, "Cyclical Learning Rates for Training Neural Networks".

  Example:
    >>> import optax, jaxsecond as js
    >>> lr = js.schedules.cyclic(1e-4, 1e-2, step_size_up=200, mode="triangular2")
    >>> opt = optax.sgd(lr, momentum=0.9)
  """
  _check_step_size("step_size_up", step_size_up)
  if step_size_down is not None:
    _check_step_size("step_size_down", step_size_down)
  check_number("base_value", base_value)
  check_number("max_value", max_value)
  check_ordered("base_value", base_value, "max_value", max_value)
  if scale_fn is None:
    if mode not in _CYCLIC_MODES:
      raise ValueError(f"mode must be one of {_CYCLIC_MODES} (or give scale_fn), got {mode!r}.")
    if mode == "exp_range":
      check_number("gamma", gamma, low=0.0, low_open=True)
  elif not callable(scale_fn):
    raise TypeError(f"scale_fn must be callable, got {scale_fn!r}.")
  if scale_mode not in ("cycle", "iterations"):
    raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}.")

  base_value, max_value, gamma = float(base_value), float(max_value), float(gamma)
  up = float(step_size_up)
  down = float(step_size_down) if step_size_down is not None else up
  total = up + down
  ratio = up / total
  if scale_fn is None:
    scale_fn, scale_mode = {
        "triangular": (lambda x: 1.0, "cycle"),
        "triangular2": (lambda x: 1 / (2.0 ** (x - 1)), "cycle"),
        "exp_range": (lambda x: gamma**x, "iterations"),
    }[mode]

  def schedule(step):
    t, whole = _as_float(step), (_integer(step, int(total)) if total.is_integer() else None)
    if whole is not None:
      # In integers, the cycle and the position in it stay exact at any step (in float32, a step
      # above 2^24 is rounded and would land in the wrong cycle).
      completed, into = jnp.divmod(whole, int(total))
      cycle, x = _as_float(completed) + 1.0, _as_float(into) / total
    else:
      cycle = jnp.floor(1 + t / total)
      x = 1.0 + t / total - cycle
    scale_factor = jnp.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    height = (max_value - base_value) * scale_factor
    return base_value + height * scale_fn(cycle if scale_mode == "cycle" else t)

  return schedule


def _one_cycle_phases(total_steps, pct_start, three_phase):
  """PyTorch's OneCycleLR phases that some step in ``0..total_steps`` reaches: tuples ``(start_step,
  end_step, bound, last_step, start_key, end_key)``, keys into the value table. A step is in the first
  phase whose ``bound`` it does not exceed (``end_step``; ``total_steps`` for the last phase), and
  ``last_step`` is the largest integer step there; a phase no step reaches is left out (PyTorch never
  evaluates it)."""
  if three_phase:
    ends = [float(pct_start * total_steps) - 1, float(2 * pct_start * total_steps) - 2, total_steps - 1]
    keys = [("initial", "peak"), ("peak", "initial"), ("initial", "final")]
  else:
    ends = [float(pct_start * total_steps) - 1, total_steps - 1]
    keys = [("initial", "peak"), ("peak", "final")]
  phases, start, first = [], 0.0, 0  # first: the smallest step past the end_step of every phase before
  for index, (end, (start_key, end_key)) in enumerate(zip(ends, keys)):
    # Steps past total_steps hold the final value, also where a phase would end later.
    bound = total_steps if index == len(ends) - 1 else min(end, total_steps)
    last_step = math.floor(bound)
    if first <= last_step:
      # PyTorch divides by the phase's length: a zero-length phase that a step reaches is a
      # division by zero there (at that step), an error here.
      if end == start:
        raise ValueError(
            f"pct_start={pct_start!r} with total_steps={total_steps!r} gives a one-cycle phase of "
            f"no steps that step {first} reaches (PyTorch divides by zero there); raise total_steps "
            "or change pct_start.")
      phases.append((start, end, bound, last_step, start_key, end_key))
    start, first = end, max(first, math.floor(end) + 1)
  return phases


def _anneal(strategy, start, end, pct):
  if strategy == "cos":
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
  return (end - start) * pct + start


def _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase):
  check_positive_int("total_steps", total_steps)
  check_number("pct_start", pct_start, low=0.0, high=1.0)
  if anneal_strategy not in _ANNEAL_STRATEGIES:
    raise ValueError(f"anneal_strategy must be one of {_ANNEAL_STRATEGIES}, got {anneal_strategy!r}.")
  if not isinstance(three_phase, bool):
    raise TypeError(f"three_phase must be a bool, got {three_phase!r}.")


def _piecewise_anneal(total_steps, pct_start, anneal_strategy, three_phase, values):
  """The OneCycleLR walk over phases as a jit-safe schedule over the `values` table."""
  phases = _one_cycle_phases(total_steps, pct_start, three_phase)

  def schedule(step):
    t, whole = _as_float(step), _integer(step, *(phase[3] for phase in phases))
    result = values["final"] * jnp.ones_like(t)
    # Walk the phases backwards so that the first phase a step has not passed wins; an integer step
    # is compared in integers (exact at any step).
    for start, end, bound, last_step, start_key, end_key in reversed(phases):
      value = _anneal(anneal_strategy, values[start_key], values[end_key], (t - start) / (end - start))
      result = jnp.where(t <= bound if whole is None else whole <= last_step, value, result)
    return result

  return schedule


def one_cycle(total_steps, max_value, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
              final_div_factor=1e4, three_phase=False):
  """One-cycle learning rate, equal to `torch.optim.lr_scheduler.OneCycleLR`'s learning rate.

  Starts at `max_value / div_factor`, anneals up to `max_value` by step `pct_start * total_steps - 1`,
  then down to `max_value / div_factor / final_div_factor` at step `total_steps - 1`. With
  `three_phase=True` it first returns to the initial value (at step `2 * pct_start * total_steps - 2`)
  before the final annealing, as PyTorch does. Defined like PyTorch for steps `0..total_steps`;
  later steps (where PyTorch raises) hold the final value.

  Args:
    total_steps: number of optimizer steps in the cycle (positive int).
    max_value: peak learning rate.
    pct_start: fraction of the steps spent increasing, in [0, 1] (1 only with `three_phase`: in two
      phases the fall would have no steps, where PyTorch divides by zero at step `total_steps`).
    anneal_strategy: `"cos"` or `"linear"`.
    div_factor: initial value is `max_value / div_factor` (> 0).
    final_div_factor: final value is the initial value / `final_div_factor` (> 0).
    three_phase: PyTorch's three-phase variant.

  Returns:
    An `optax.Schedule`.

  References:
    Smith & Topin 2019, "Super-Convergence: Very Fast Training of Neural Networks Using Large
    Learning Rates".

  Example:
    >>> import optax, jaxsecond as js
    >>> lr = js.schedules.one_cycle(1000, max_value=1e-2)
    >>> opt = optax.sgd(lr, momentum=0.9)
  """
  _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
  check_number("max_value", max_value, low=0.0, low_open=True)
  check_number("div_factor", div_factor, low=0.0, low_open=True)
  check_number("final_div_factor", final_div_factor, low=0.0, low_open=True)
  max_value, div_factor, final_div_factor = float(max_value), float(div_factor), float(final_div_factor)
  initial = max_value / div_factor
  values = {"initial": initial, "peak": max_value, "final": initial / final_div_factor}
  return _piecewise_anneal(total_steps, pct_start, anneal_strategy, three_phase, values)


def one_cycle_momentum(total_steps, pct_start=0.3, base_momentum=0.85, max_momentum=0.95,
                       anneal_strategy="cos", three_phase=False):
  """One-cycle momentum, equal to the momentum (or `betas[0]`) that `OneCycleLR` sets.

  The momentum moves opposite to the learning rate of `one_cycle` with the same arguments: from
  `max_momentum` down to `base_momentum` while the learning rate rises, back up to `max_momentum`
  while it falls (and stays at `max_momentum` in the last of three phases). Use it through
  `optax.inject_hyperparams` on `b1` (Adam, `js.adamw`) or `momentum` (SGD).

  Args:
    total_steps: number of optimizer steps in the cycle (positive int).
    pct_start: fraction of the steps spent increasing the learning rate, in [0, 1].
    base_momentum: lowest momentum, reached at the learning-rate peak.
    max_momentum: highest momentum (>= `base_momentum`).
    anneal_strategy: `"cos"` or `"linear"`.
    three_phase: PyTorch's three-phase variant.

  Returns:
    An `optax.Schedule`.

  References:
    Smith 2018, "A disciplined approach to neural network hyper-parameters: Part 1".

  Example:
    >>> import optax, jaxsecond as js
    >>> opt = optax.inject_hyperparams(js.adamw)(
    ...     learning_rate=js.schedules.one_cycle(1000, 1e-2),
    ...     b1=js.schedules.one_cycle_momentum(1000))
  """
  _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
  check_number("base_momentum", base_momentum, low=0.0)
  check_number("max_momentum", max_momentum, low=0.0)
  check_ordered("base_momentum", base_momentum, "max_momentum", max_momentum)
  base_momentum, max_momentum = float(base_momentum), float(max_momentum)
  values = {"initial": max_momentum, "peak": base_momentum, "final": max_momentum}
  return _piecewise_anneal(total_steps, pct_start, anneal_strategy, three_phase, values)


def _restart_periods(t_0, t_mult):
  """Starts t_0 * (t_mult^n - 1) / (t_mult - 1) and lengths t_0 * t_mult^n of the SGDR periods.

  Integer tables keep the period search exact and the schedule's result weakly typed. Only periods
  starting below 2^31 are listed (optax counts steps in int32); the last length is clipped to int32.
  """
  starts, lengths, start, length = [], [], 0, t_0
  while start < 2**31:
    starts.append(start)
    lengths.append(min(length, 2**31 - 1))
    start, length = start + length, length * t_mult
  return np.asarray(starts, np.int32), np.asarray(lengths, np.int32)


def cosine_warm_restarts(base_value, t_0, t_mult=1, eta_min=0.0):
  """SGDR: cosine annealing with warm restarts, equal to `CosineAnnealingWarmRestarts`.

  Period `i` lasts `t_0 * t_mult^i` steps; within it, with `t_cur` steps since its start, the value
  is `eta_min + (base_value - eta_min) * (1 + cos(pi * t_cur / t_i)) / 2`. The period containing a
  step is found by exact search over the period starts (not by a floating-point logarithm).

  Args:
    base_value: value at the start of every period.
    t_0: length of the first period in steps (positive int).
    t_mult: growth factor of the period length (int >= 1).
    eta_min: value approached at the end of each period.

  Returns:
    An `optax.Schedule`.

  References:
    Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts".

  Example:
    >>> import optax, jaxsecond as js
    >>> opt = js.adamw(js.schedules.cosine_warm_restarts(1e-3, t_0=100, t_mult=2))
  """
  check_positive_int("t_0", t_0)
  check_positive_int("t_mult", t_mult)
  check_number("base_value", base_value)
  check_number("eta_min", eta_min)
  base_value, eta_min = float(base_value), float(eta_min)

  if t_mult == 1:
    def period(t):
      return jnp.mod(t, t_0), t_0
  else:
    starts, lengths = _restart_periods(t_0, t_mult)

    def period(t):
      index = jnp.searchsorted(jnp.asarray(starts), t, side="right") - 1
      return t - jnp.asarray(starts)[index], jnp.asarray(lengths)[index]

  def schedule(step):
    # An integer step finds its period in integers (exact at any step: in float32 a step above
    # 2^24 is rounded); the position in the period is converted afterwards.
    whole = _integer(step, t_0)
    t_cur, t_i = period(_as_float(step) if whole is None else whole)
    t_cur, t_i = _as_float(t_cur), _as_float(t_i)
    return eta_min + (base_value - eta_min) * (1 + jnp.cos(jnp.pi * t_cur / t_i)) / 2

  return schedule
