"""Training transforms exact to PyTorch: AdamW (with AMSGrad), AMSGrad, SGDW, and the Heun step."""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsecond._validation import check_learning_rate, check_number, check_positive_int, concrete_float


def _is_boolean(leaf):
  return isinstance(leaf, (bool, np.bool_)) or getattr(leaf, "dtype", None) == np.bool_


def _check_decay_mask(mask_tree, params):
  """Raises when `mask_tree` cannot be the weight-decay mask of `params` (see `_decay_mask`)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(mask_tree):
    if not _is_boolean(leaf):
      raise TypeError(f"mask{jax.tree_util.keystr(path)} must be a boolean, got {leaf!r}.")
  num_params = len(jax.tree.leaves(params))
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(mask_tree)) and num_params > 1:
    raise ValueError(
        f"mask is the single value {mask_tree!r} for params with {num_params} leaves. This is what a "
        "mask callable returns when optax.inject_hyperparams takes it for a schedule and calls it "
        "with the step count: pass static_args=(\"mask\",) to inject_hyperparams (or give the mask "
        "as a pytree of booleans shaped like params); for no decay at all use weight_decay=0.")


def _decay_mask(mask):
  """The `mask` of `optax.add_decayed_weights`, checked against the params it is applied to.

  `optax.inject_hyperparams` takes every callable argument for a schedule, so a mask callable given
  to it is called with the step count and its result reaches the factory as the mask: for the usual
  `lambda p: jax.tree.map(lambda x: x.ndim > 1, p)` a single `False`, which optax would broadcast
  to "decay nothing" without a word. A single mask value over several parameter leaves is rejected
  for that reason.
  """
  if mask is None:
    return None

  def mask_fn(params):
    mask_tree = mask(params) if callable(mask) else mask
    _check_decay_mask(mask_tree, params)
    return mask_tree

  return mask_fn


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
      only leaves marked True are decayed. Under `optax.inject_hyperparams` a callable mask must be
      named in `static_args=("mask",)` (otherwise it is taken for a schedule); a mask that is a
      single boolean over several parameter leaves is a `ValueError` for that reason.

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
      optax.add_decayed_weights(weight_decay, _decay_mask(mask)),
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


def sgdw(learning_rate, momentum=0.9, weight_decay=5e-4, *, nesterov=False, mask=None):
  """SGD with momentum and decoupled weight decay (SGDW), with PyTorch's momentum convention.

  Each step, with `lr_t` the current (possibly scheduled) learning rate,
  `m_t = momentum * m_{t-1} + g_t` (`m_1 = g_1`, no dampening, as `torch.optim.SGD`) and
  `p <- p - lr_t * (m_t + weight_decay * p)`: the weights shrink by `lr_t * weight_decay` outside the
  momentum buffer. `torch.optim.SGD(weight_decay=...)` and `optax.add_decayed_weights` before
  `optax.sgd` instead add `weight_decay * p` to the gradient, so the decay enters the buffer and is
  amplified by `1 / (1 - momentum)`: the coupling the paper shows to be wrong. This equals fastai's
  "true weight decay", `p.mul_(1 - lr * wd)` before `torch.optim.SGD(weight_decay=0).step()`.
  With `nesterov=True` the direction is `g_t + momentum * m_t`, as in PyTorch. It is optax's
  `trace` -> `add_decayed_weights` -> `scale_by_learning_rate`.

  Conventions differ from the paper's Algorithm 1 in two ways, both PyTorch's: the learning rate
  multiplies the decay (the paper's decay is `eta_t * lambda` with `eta_t` the schedule multiplier
  alone, so `weight_decay = lambda / alpha` for a base learning rate `alpha`), and the learning rate
  is applied after the momentum buffer rather than inside it (the same when it is constant).

  Args:
    learning_rate: a float or an `optax.Schedule` evaluated at the update count (0 for the first
      update); the decay follows it. With `js.schedules.cosine_warm_restarts` this is SGDWR.
    momentum: momentum factor (PyTorch's `momentum`, >= 0); may be injected with
      `optax.inject_hyperparams` for momentum cycling.
    weight_decay: decoupled weight decay coefficient, multiplied by the learning rate (see
      `normalized_weight_decay` for the paper's rule to set it).
    nesterov: Nesterov momentum as in PyTorch (needs `momentum > 0`).
    mask: as in `optax.add_decayed_weights`: a pytree of booleans or a callable `params -> mask`;
      only leaves marked True are decayed. Under `optax.inject_hyperparams` a callable mask must be
      named in `static_args=("mask",)`.

  Returns:
    An `optax.GradientTransformation`.

  References:
    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (ICLR; SGDW, SGDWR);
    Sutskever, Martens, Dahl, Hinton 2013 (momentum and Nesterov's method); PyTorch
    `torch.optim.SGD`.

  Example:
    >>> import jax.numpy as jnp, optax, jaxsecond as js
    >>> schedule = js.schedules.cosine_warm_restarts(0.1, t_0=100, t_mult=2)
    >>> opt = js.sgdw(schedule, momentum=0.9, weight_decay=5e-4)  # SGDWR
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
    >>> params = optax.apply_updates(params, updates)
  """
  check_learning_rate("learning_rate", learning_rate)
  check_number("momentum", momentum, low=0.0)
  check_number("weight_decay", weight_decay, low=0.0)
  if not isinstance(nesterov, bool):
    raise TypeError(f"nesterov must be a bool, got {nesterov!r}.")
  if nesterov and concrete_float(momentum) == 0.0:
    raise ValueError("nesterov=True needs momentum > 0 (as torch.optim.SGD), got momentum=0.")
  return optax.chain(
      optax.trace(decay=momentum, nesterov=nesterov),
      optax.add_decayed_weights(weight_decay, _decay_mask(mask)),
      optax.scale_by_learning_rate(learning_rate),
  )


def normalized_weight_decay(weight_decay_norm, batch_size, num_train, num_epochs):
  """The paper's normalized weight decay: `weight_decay_norm * sqrt(batch_size / (num_train * num_epochs))`.

  Loshchilov & Hutter found the best decay to shrink with the number of weight updates in a run,
  `num_train * num_epochs / batch_size`, and proposed tuning the normalized value, which then
  transfers across batch sizes and run lengths.

  The result is the paper's `lambda`, which multiplies the schedule multiplier `eta_t` only. In
  `js.sgdw` and `js.adamw` (PyTorch's convention) the decay per step is `lr_t * weight_decay`, so
  pass `weight_decay = normalized_weight_decay(...) / base_learning_rate` to reproduce the paper.

  Args:
    weight_decay_norm: the normalized coefficient (`lambda_norm`, >= 0).
    batch_size: examples per step (`b`).
    num_train: training examples (`B`).
    num_epochs: epochs of the run (`T`).

  Returns:
    The weight decay `lambda` as a Python float.

  References:
    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (ICLR), normalized weight
    decay.

  Example:
    >>> import jaxsecond as js
    >>> round(js.normalized_weight_decay(0.05, batch_size=128, num_train=50000, num_epochs=200), 6)
    0.000179
  """
  check_number("weight_decay_norm", weight_decay_norm, low=0.0)
  if concrete_float(weight_decay_norm) is None:
    raise TypeError(f"weight_decay_norm must be a real number, got {weight_decay_norm!r}.")
  for name, value in (("batch_size", batch_size), ("num_train", num_train), ("num_epochs", num_epochs)):
    check_positive_int(name, value)
  return concrete_float(weight_decay_norm) * math.sqrt(batch_size / (num_train * num_epochs))


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
