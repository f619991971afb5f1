"""Argument checks shared by the training-recipe modules.

Hyperparameters may arrive as traced arrays (for example through `optax.inject_hyperparams`, which
calls the factory inside the compiled update), so every check here skips values it cannot see.
"""

import jax
import jax.numpy as jnp
import numpy as np


def concrete_float(value):
  """Returns `value` as a Python float, or None when it is traced or not a real scalar."""
  if isinstance(value, jax.core.Tracer):
    return None
  array = np.asarray(value)
  # jnp's test knows the ml_dtypes (bfloat16) that NumPy's does not.
  real = jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)
  if array.shape != () or not real:
    return None
  return float(array)


def check_number(name, value, *, low=None, high=None, low_open=False, high_open=False, finite=True):
  """Raises TypeError unless `value` is a real scalar (a Python or NumPy number, a 0-d array) or traced,
  and ValueError when a concrete one is NaN, infinite (unless `finite` is false) or outside
  [low, high] (or the open ends)."""
  if isinstance(value, jax.core.Tracer):
    return
  number = concrete_float(value)
  if number is None or isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a real number, got {value!r}.")
  if np.isnan(number) or (finite and np.isinf(number)):
    raise ValueError(f"{name} must be a finite number, got {value!r}.")
  too_low = low is not None and (number <= low if low_open else number < low)
  too_high = high is not None and (number >= high if high_open else number > high)
  if too_low or too_high:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    low_text = "-inf" if low is None else repr(low)
    high_text = "inf" if high is None else repr(high)
    raise ValueError(f"{name} must lie in {left}{low_text}, {high_text}{right}, got {value!r}.")


def check_ordered(low_name, low, high_name, high):
  """Raises ValueError when concrete `low` and `high` have `low > high` (traced values pass)."""
  low_value, high_value = concrete_float(low), concrete_float(high)
  if low_value is not None and high_value is not None and low_value > high_value:
    raise ValueError(f"{high_name} ({high!r}) must not be smaller than {low_name} ({low!r}).")


def check_positive_int(name, value):
  """Raises TypeError/ValueError unless `value` is a positive Python integer."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}.")
  if value <= 0:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_learning_rate(name, value):
  """Accepts a schedule (callable) or a concrete/traced non-negative scalar."""
  if callable(value):
    return
  if not isinstance(value, jax.core.Tracer) and concrete_float(value) is None:
    raise TypeError(f"{name} must be a float or an optax schedule, got {value!r}.")
  check_number(name, value, low=0.0)
