"""Training transforms exact to PyTorch: AdamW (with AMSGrad), AMSGrad, and the Heun step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsecond._validation import check_learning_rate, check_number


def _check_moment_arguments(b1, b2, eps):
  check_number("b1", b1, low=0.0, high=1.0, high_open=True)
  check_number("b2", b2, low=0.0, high=1.0, high_open=True)
  check_number("eps", eps, low=0.0)


class ScaleByTorchAmsgradState(NamedTuple):
  """State of `scale_by_torch_amsgrad`.

  Attributes:
    count: number of updates taken (int32 scalar).
    mu: first moment, not bias-corrected.
    nu: second moment, not bias-corrected.
    nu_max: running elementwise maximum of the *uncorrected* second moment `nu`.
  """

  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_torch_amsgrad(b1=0.9, b2=0.999, eps=1e-8):
  """Rescales updates by AMSGrad exactly as `torch.optim.Adam(amsgrad=True)` does.

  PyTorch keeps `nu_max = max(nu_max, nu)` of the uncorrected second moment and divides by the
  current bias correction afterwards: `update = (mu / (1 - b1^t)) / (sqrt(nu_max) / sqrt(1 - b2^t)
  + eps)`. `optax.scale_by_amsgrad` takes the maximum of the bias-corrected moments instead (a
  different running maximum), and with `bias_correction_nu=False` it leaves `eps` unscaled, so no
  setting of it equals PyTorch; this transform is written for that reason and reuses optax's moment
  updates.

  Args:
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to the denominator after the bias-corrected square root, as in PyTorch.

  Returns:
    An `optax.GradientTransformation` (the update direction, before the learning rate).

  References:
    Reddi, Kale, Kumar 2018, "On the Convergence of Adam and Beyond"; PyTorch `torch.optim.Adam`.

  Example:
    >>> import optax, jax.numpy as jnp
    >>> opt = optax.chain(scale_by_torch_amsgrad(), optax.scale_by_learning_rate(1e-3))
    >>> state = opt.init(jnp.zeros(3))
  """
  _check_moment_arguments(b1, b2, eps)

  def init_fn(params):
    return ScaleByTorchAmsgradState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params),
        nu=optax.tree.zeros_like(params),
        nu_max=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    sqrt_correction2 = jnp.sqrt(1 - b2**count)
    direction = jax.tree.map(
        lambda m, v: m / (jnp.sqrt(v) / sqrt_correction2.astype(v.dtype) + eps), mu_hat, nu_max
    )
    return direction, ScaleByTorchAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, *, amsgrad=False, mask=None):
  """AdamW with decoupled weight decay, equal to `torch.optim.AdamW` step for step.

  Each step, with `lr` the current (possibly scheduled) learning rate,
  `p <- p * (1 - lr * weight_decay) - lr * mu_hat / (sqrt(nu_hat) + eps)`: the decay is multiplied by
  the learning rate, as in PyTorch (and unlike Loshchilov & Hutter's separate decay factor). Without
  AMSGrad this is optax's own `scale_by_adam` -> `add_decayed_weights` -> `scale_by_learning_rate`,
  which is exact; with `amsgrad=True` the moment scaling is `scale_by_torch_amsgrad`.

  Args:
    learning_rate: a float or an `optax.Schedule` evaluated at the update count (0 for the first
      update), as a PyTorch scheduler stepped after every optimizer step.
    b1: decay rate of the first moment (`betas[0]` in PyTorch); may be injected with
      `optax.inject_hyperparams` for momentum cycling.
    b2: decay rate of the second moment (`betas[1]`).
    eps: added to the bias-corrected square root of the second moment.
    weight_decay: decoupled weight decay coefficient (PyTorch's default 1e-2).
    amsgrad: use PyTorch's AMSGrad variant (running maximum of the second moment).
    mask: as in `optax.add_decayed_weights`: a pytree of booleans or a callable `params -> mask`;
      only leaves marked True are decayed.

  Returns:
    An `optax.GradientTransformation`.

  References:
    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; Kingma & Ba 2015;
    PyTorch `torch.optim.AdamW`.

  Example:
    >>> import jax.numpy as jnp, optax, jaxsecond as js
    >>> opt = js.adamw(optax.cosine_decay_schedule(1e-3, 1000), weight_decay=0.05)
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
    >>> params = optax.apply_updates(params, updates)
  """
  check_learning_rate("learning_rate", learning_rate)
  _check_moment_arguments(b1, b2, eps)
  check_number("weight_decay", weight_decay, low=0.0)
  if not isinstance(amsgrad, bool):
    raise TypeError(f"amsgrad must be a bool, got {amsgrad!r}.")
  if amsgrad:
    moments = scale_by_torch_amsgrad(b1=b1, b2=b2, eps=eps)
  else:
    moments = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  return optax.chain(
      moments,
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )


def amsgrad(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  """AMSGrad equal to `torch.optim.Adam(amsgrad=True)`: `adamw` with no weight decay.

  Args:
    learning_rate: a float or an `optax.Schedule`.
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to the bias-corrected square root of the running maximum of the second moment.

  Returns:
    An `optax.GradientTransformation`.

  References:
    Reddi, Kale, Kumar 2018, "On the Convergence of Adam and Beyond"; PyTorch `torch.optim.Adam`.

  Example:
    >>> import jaxsecond as js
    >>> opt = js.amsgrad(1e-3)
  """
  return adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=0.0, amsgrad=True)


class HeunState(NamedTuple):
  """State of `heun`: the number of updates taken (for a scheduled learning rate)."""

  count: jax.Array


def heun(learning_rate):
  """The Heun (improved Euler, explicit trapezoidal) step on the gradient flow.

  With `g1 = grad(p)`, a trial Euler step `p~ = p - lr * g1` and `g2 = grad(p~)`, the update is
  `-lr / 2 * (g1 + g2)`: two gradient evaluations per step, second-order accurate in `lr` along the
  flow `dp/dt = -grad(p)`. The second gradient comes from the `grad_fn` keyword passed to `update`.

  Args:
    learning_rate: a float or an `optax.Schedule` of the update count.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose `update(grads, state, params, grad_fn=...)`
    calls `grad_fn(trial_params) -> grads` once.

  References:
    Süli & Mayers 2003, "An Introduction to Numerical Analysis", section 12.5 (Heun's method).

  Example:
    >>> import jax, jax.numpy as jnp, optax, jaxsecond as js
    >>> loss = lambda p: jnp.sum(p ** 2)
    >>> opt = js.heun(0.1)
    >>> params = jnp.ones(2)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(jax.grad(loss)(params), state, params, grad_fn=jax.grad(loss))
    >>> params = optax.apply_updates(params, updates)
  """
  check_learning_rate("learning_rate", learning_rate)

  def init_fn(params):
    del params
    return HeunState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("heun needs params in update(grads, state, params, grad_fn=...).")
    if grad_fn is None:
      raise ValueError("heun needs grad_fn=... (params -> grads) in update(...).")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    trial = jax.tree.map(lambda p, g: p - jnp.asarray(lr, g.dtype) * g, params, updates)
    trial_grads = grad_fn(trial)
    new_updates = jax.tree.map(
        lambda g1, g2: jnp.asarray(-0.5 * lr, g1.dtype) * (g1 + g2), updates, trial_grads
    )
    return new_updates, HeunState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
