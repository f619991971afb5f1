"""CurveBall: a minimal Newton solver for deep learning, as an optax transform.

Henriques, Ehrhardt, Albanie, Vedaldi, "Small steps and giant leaps: Minimal Newton solvers for
Deep Learning", ICCV 2019 (arXiv:1805.08095).

The objective is f(w) = L(Phi(w)) with model outputs Phi(w) (`predict_fn`) and a loss L
(`loss_fn`). CurveBall keeps one parameter-sized buffer z and interleaves one gradient step on
the damped Newton system (H + lambda I) z = -grad f with each parameter step:

    delta_z = (H + lambda I) z + grad f
    z      <- rho z - beta delta_z
    w      <- w + z

H is the Gauss-Newton matrix J^T H_L J (J = dPhi/dw, H_L = d^2 L / dPhi^2) or, optionally, the
true Hessian of f. rho and beta minimise the damped quadratic model of f over the plane spanned by
z and delta_z (a 2x2 linear system), and lambda follows a trust-region ratio rule.

The pieces are small pure functions (`ggn_vector_product`, `hessian_vector_product`,
`solve_rho_beta`, `quadratic_model_change`, `trust_ratio`, `adapt_damping`) so that a
deterministic driver (`minimize(method="curveball")`) can reuse them; `curveball` assembles them
into an `optax.GradientTransformationExtraArgs`.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "CurveBallState",
    "curveball",
    "ggn_vector_product",
    "hessian_vector_product",
    "solve_rho_beta",
    "quadratic_model_change",
    "trust_ratio",
    "adapt_damping",
]

_CURVATURES = ("ggn", "hessian")


class CurveBallState(NamedTuple):
    """State of `curveball`: one parameter-sized buffer plus scalars.

    Attributes:
      z: the running solution of the damped Newton system, shaped like the parameters. The
        update returned by each step is exactly the new z.
      damping: the current damping lambda.
      count: number of steps taken (non-finite steps are not counted); lambda adapts when
        `count % damping_interval == 0`.
      rho: the momentum rho used by the last step taken.
      beta: the step size beta used by the last step taken.
      ratio: the last trust ratio (actual / predicted change of f) used to adapt lambda.
      total_notfinite: number of steps skipped because a value was not finite.
    """

    z: optax.Updates
    damping: jax.Array
    count: jax.Array
    rho: jax.Array
    beta: jax.Array
    ratio: jax.Array
    total_notfinite: jax.Array


class _NewtonSystem(NamedTuple):
    """One step's view of the damped Newton system (all quadratic forms include lambda)."""

    loss: jax.Array
    delta_z: optax.Updates
    a11: Optional[jax.Array]  # delta_z^T (H + lambda I) delta_z
    a12: Optional[jax.Array]  # z^T (H + lambda I) delta_z
    a22: Optional[jax.Array]  # z^T (H + lambda I) z
    b1: Optional[jax.Array]  # grad f^T delta_z
    b2: Optional[jax.Array]  # grad f^T z


# --------------------------------------------------------------------------------------------
# Curvature-vector products.
# --------------------------------------------------------------------------------------------


def ggn_vector_product(predict_fn: Callable, loss_fn: Callable, params: Any, vector: Any) -> Any:
    """Gauss-Newton-vector product J^T H_L J v, never forming a matrix.

    One forward-mode `jvp` through the model (J v), one Hessian-vector product of `loss_fn` in
    output space (H_L J v, forward-over-reverse) and one reverse-mode `vjp` back to parameters.

    Args:
      predict_fn: `params -> outputs` (any pytree of arrays).
      loss_fn: `outputs -> scalar`.
      params: pytree at which J and H_L are evaluated.
      vector: pytree shaped like `params`.

    Returns:
      A pytree shaped like `params`.

    References:
      Schraudolph, "Fast curvature matrix-vector products for second-order gradient descent",
      Neural Computation 2002.

    Example:
      >>> import jax.numpy as jnp
      >>> gv = ggn_vector_product(lambda w: 2.0 * w, lambda o: 0.5 * jnp.sum(o**2),
      ...                         jnp.ones(3), jnp.ones(3))   # J^T I J v = 4 v
    """
    outputs, model_jvp = jax.linearize(predict_fn, params)
    _, loss_hvp = jax.linearize(jax.grad(loss_fn), outputs)
    (product,) = jax.linear_transpose(model_jvp, params)(loss_hvp(model_jvp(vector)))
    return product


def hessian_vector_product(fun: Callable, params: Any, vector: Any) -> Any:
    """Hessian-vector product of a scalar function, by forward-over-reverse differentiation.

    Args:
      fun: `params -> scalar`.
      params: pytree at which the Hessian is evaluated.
      vector: pytree shaped like `params`.

    Returns:
      The pytree H v, shaped like `params`.

    References:
      Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.

    Example:
      >>> import jax.numpy as jnp
      >>> hv = hessian_vector_product(lambda w: jnp.sum(w**3), jnp.ones(2), jnp.ones(2))  # 6 v
    """
    return jax.jvp(jax.grad(fun), (params,), (vector,))[1]


def _ggn_system(predict_fn, loss_fn, params, z, damping, grads, with_coefficients):
    """delta_z and the 2x2 model coefficients with the Gauss-Newton matrix J^T H_L J.

    The model is linearised once and reused for J z, J delta_z and J^T; quadratic forms are
    taken in output space, so the only parameter-space work is the lambda terms.
    """
    outputs, model_jvp = jax.linearize(predict_fn, params)
    model_vjp = jax.linear_transpose(model_jvp, params)

    def loss_grad_and_value(o):
        value, grad = jax.value_and_grad(loss_fn)(o)
        return grad, value

    output_grad, loss_hvp, loss = jax.linearize(loss_grad_and_value, outputs, has_aux=True)
    jz = model_jvp(z)
    h_jz = loss_hvp(jz)
    if grads is None:
        # One backward pass yields J^T (H_L J z + dL/dPhi) = G z + grad f.
        (ggn_z_plus_grad,) = model_vjp(optax.tree.add(h_jz, output_grad))
        delta_z = optax.tree.add_scale(ggn_z_plus_grad, damping, z)
    else:
        (ggn_z,) = model_vjp(h_jz)
        delta_z = optax.tree.add(optax.tree.add_scale(ggn_z, damping, z), grads)
    delta_z = optax.tree.cast_like(delta_z, z)  # lambda's dtype must not promote float32 leaves
    if not with_coefficients:
        return _NewtonSystem(loss, delta_z, None, None, None, None, None)

    j_dz = model_jvp(delta_z)
    h_jdz = loss_hvp(j_dz)
    a11 = optax.tree.vdot(j_dz, h_jdz) + damping * optax.tree.vdot(delta_z, delta_z)
    a12 = optax.tree.vdot(jz, h_jdz) + damping * optax.tree.vdot(z, delta_z)
    a22 = optax.tree.vdot(jz, h_jz) + damping * optax.tree.vdot(z, z)
    if grads is None:
        b1 = optax.tree.vdot(output_grad, j_dz)
        b2 = optax.tree.vdot(output_grad, jz)
    else:
        b1 = optax.tree.vdot(grads, delta_z)
        b2 = optax.tree.vdot(grads, z)
    return _NewtonSystem(loss, delta_z, a11, a12, a22, b1, b2)


def _hessian_system(predict_fn, loss_fn, params, z, damping, grads, with_coefficients):
    """delta_z and the 2x2 model coefficients with the true Hessian of loss_fn o predict_fn."""

    def grad_and_value(p):
        value, grad = jax.value_and_grad(lambda q: loss_fn(predict_fn(q)))(p)
        return grad, value

    gradient, hvp, loss = jax.linearize(grad_and_value, params, has_aux=True)
    if grads is None:
        grads = gradient
    hz = hvp(z)
    delta_z = optax.tree.cast_like(optax.tree.add(optax.tree.add_scale(hz, damping, z), grads), z)
    if not with_coefficients:
        return _NewtonSystem(loss, delta_z, None, None, None, None, None)

    h_dz = hvp(delta_z)
    a11 = optax.tree.vdot(delta_z, h_dz) + damping * optax.tree.vdot(delta_z, delta_z)
    a12 = optax.tree.vdot(z, h_dz) + damping * optax.tree.vdot(z, delta_z)
    a22 = optax.tree.vdot(z, hz) + damping * optax.tree.vdot(z, z)
    b1 = optax.tree.vdot(grads, delta_z)
    b2 = optax.tree.vdot(grads, z)
    return _NewtonSystem(loss, delta_z, a11, a12, a22, b1, b2)


# --------------------------------------------------------------------------------------------
# The 2x2 step-size solve and the damping rule.
# --------------------------------------------------------------------------------------------


def solve_rho_beta(a11, a12, a22, b1, b2, *, rtol=None):
    """Momentum rho and step size beta minimising the damped quadratic model on span{z, delta_z}.

    With the step z_new = rho z - beta delta_z, the model change
    m = grad^T z_new + 1/2 z_new^T (H + lambda I) z_new is minimised by

        [beta, -rho] = A^+ [b1, b2],   A = [[a11, a12], [a12, a22]],

    with A^+ a pseudo-inverse, as in the authors' code. A is singular whenever z is zero or
    parallel to delta_z (always on the first step); the pseudo-inverse then gives the exact line
    minimiser along delta_z and rho = 0.

    Deviation, for float32: the pseudo-inverse is taken of the Jacobi-scaled matrix
    D^-1 A D^-1 (D = sqrt|diag A|), so that rank is judged by the angle between z and delta_z
    in the (H + lambda I) metric, which does not depend on their lengths. An unscaled
    `jnp.linalg.pinv` judges rank relative to the largest entry; with a11 >> a22 (common:
    ill-conditioned curvature) it drops the small but well-determined direction and CurveBall
    degenerates to damped gradient descent in float32. The pseudo-inverse is written in closed
    form because an SVD per step of a 2x2 matrix costs a solver launch on accelerators.

    Args:
      a11: delta_z^T (H + lambda I) delta_z.
      a12: z^T (H + lambda I) delta_z.
      a22: z^T (H + lambda I) z.
      b1: grad f^T delta_z.
      b2: grad f^T z.
      rtol: the scaled system counts as singular when |det| <= rtol (i.e. z and delta_z are
        parallel to within sqrt(rtol) radians); default 4 * eps of the dtype.

    Returns:
      `(rho, beta)` as scalars.

    Example:
      >>> rho, beta = solve_rho_beta(2.0, 0.0, 0.0, 4.0, 0.0)   # first step: beta = b1 / a11
    """
    dtype = jnp.result_type(a11, a12, a22, b1, b2, 1.0)
    a11, a12, a22, b1, b2 = (jnp.asarray(x, dtype) for x in (a11, a12, a22, b1, b2))
    if rtol is None:
        rtol = 4 * jnp.finfo(dtype).eps
    d1 = jnp.sqrt(jnp.abs(a11))
    d2 = jnp.sqrt(jnp.abs(a22))
    d1 = jnp.where(d1 > 0, d1, 1)
    d2 = jnp.where(d2 > 0, d2, 1)
    # Scaled system: diagonal entries in {-1, 0, 1}, off-diagonal c.
    s11, s22, c = a11 / d1**2, a22 / d2**2, a12 / (d1 * d2)
    c1, c2 = b1 / d1, b2 / d2
    trace = s11 + s22
    det = s11 * s22 - c * c
    largest = jnp.abs(trace) / 2 + jnp.sqrt(((s11 - s22) / 2) ** 2 + c**2)
    full_rank = jnp.abs(det) > rtol * largest**2
    rank_one = ~full_rank & (largest > 0)
    # Full rank: Cramer's rule. Rank one: S = s v v^T, so S^+ = S / s^2 with s = trace(S).
    det_safe = jnp.where(full_rank, det, 1)
    trace2_safe = jnp.where(rank_one, trace**2, 1)
    u1 = jnp.where(
        full_rank,
        (s22 * c1 - c * c2) / det_safe,
        jnp.where(rank_one, (s11 * c1 + c * c2) / trace2_safe, 0),
    )
    u2 = jnp.where(
        full_rank,
        (s11 * c2 - c * c1) / det_safe,
        jnp.where(rank_one, (c * c1 + s22 * c2) / trace2_safe, 0),
    )
    return -u2 / d2, u1 / d1


def quadratic_model_change(a11, a12, a22, b1, b2, rho, beta):
    """Change of f predicted by the damped quadratic model for the step rho z - beta delta_z.

    m = -(b1 beta - b2 rho) + 1/2 (a11 beta^2 - 2 a12 beta rho + a22 rho^2); at the optimum of
    `solve_rho_beta` this equals the paper's -1/2 [beta, -rho] . [b1, b2]. The general form is
    used so that a fixed rho or beta is judged by the step actually taken.

    Args:
      a11: delta_z^T (H + lambda I) delta_z.
      a12: z^T (H + lambda I) delta_z.
      a22: z^T (H + lambda I) z.
      b1: grad f^T delta_z.
      b2: grad f^T z.
      rho: momentum of the step.
      beta: step size of the step.

    Returns:
      The predicted change (negative when the model predicts a decrease).

    Example:
      >>> change = quadratic_model_change(2.0, 0.0, 0.0, 4.0, 0.0, 0.0, 2.0)   # -4.0
    """
    linear = -(b1 * beta - b2 * rho)
    quadratic = a11 * beta**2 - 2 * a12 * beta * rho + a22 * rho**2
    return linear + 0.5 * quadratic


def trust_ratio(actual_change, predicted_change):
    """Ratio of the actual to the predicted change of f (1 means the model was exact).

    When the model predicts no decrease (a zero step, or an indefinite model in Hessian mode)
    the ratio is 1 if f did not increase and -inf if it did, so that lambda grows.

    Args:
      actual_change: f(w_new) - f(w) on the same batch.
      predicted_change: from `quadratic_model_change`.

    Returns:
      The ratio r; the paper grows lambda when r < 0.5 and shrinks it when r > 1.5.

    Example:
      >>> r = trust_ratio(-1.0, -2.0)   # 0.5
    """
    decrease = predicted_change < 0
    ratio = actual_change / jnp.where(decrease, predicted_change, 1)
    fallback = jnp.where(actual_change <= 0, 1.0, -jnp.inf).astype(ratio.dtype)
    return jnp.where(decrease, ratio, fallback)


def adapt_damping(damping, ratio, *, factor=0.999, low=0.5, high=1.5, interval=5):
    """Levenberg-Marquardt style update of lambda from a trust ratio.

    lambda is divided by factor**interval when ratio < low (the model was too optimistic) and
    multiplied by it when ratio > high (the model was too pessimistic); NaN leaves it unchanged.
    The keyword defaults are the authors' (`curveball`'s own default factor is 0.9).

    Args:
      damping: current lambda.
      ratio: from `trust_ratio`.
      factor: per-step factor in (0, 1].
      low: lower threshold.
      high: upper threshold.
      interval: number of steps between adaptations (the factor is compounded over them).

    Returns:
      The new lambda.

    Example:
      >>> lam = adapt_damping(10.0, 0.1)   # 10 / 0.999**5
    """
    step = jnp.asarray(factor, jnp.result_type(damping, 1.0)) ** interval
    return jnp.where(ratio < low, damping / step, jnp.where(ratio > high, damping * step, damping))


# --------------------------------------------------------------------------------------------
# The optax transform.
# --------------------------------------------------------------------------------------------


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_number(name, value, *, low=None, high=None, low_open=False, optional=False):
    """Validate a concrete scalar option; traced values (inject_hyperparams) pass through."""
    if value is None:
        if optional:
            return
        raise TypeError(f"curveball: `{name}` must be a number, got None.")
    if isinstance(value, bool) or not (_is_number(value) or isinstance(value, jax.Array)):
        raise TypeError(f"curveball: `{name}` must be a real number, got {type(value).__name__}.")
    if not _is_number(value):
        return
    if low is not None and (value <= low if low_open else value < low):
        bound = ">" if low_open else ">="
        raise ValueError(f"curveball: `{name}` must be {bound} {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"curveball: `{name}` must be <= {high}, got {value}.")


def _scalar_dtype(params):
    leaves = [
        x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]
    if not leaves:
        raise TypeError("curveball: `params` must contain at least one floating-point array.")
    return jnp.promote_types(jnp.result_type(*leaves), jnp.float32)


def _tree_all_finite(tree):
    return jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.array(True)
    )


def _step_sizes(system, learning_rate, momentum, dtype):
    """rho and beta: automatic, partly fixed (1-D minimisation) or fixed."""
    if learning_rate is None and momentum is None:
        return solve_rho_beta(system.a11, system.a12, system.a22, system.b1, system.b2)
    if learning_rate is None:
        rho = jnp.asarray(momentum, dtype)
        a11 = system.a11
        beta = jnp.where(a11 != 0, (system.b1 + system.a12 * rho) / jnp.where(a11 != 0, a11, 1), 0)
        return rho, beta.astype(dtype)
    beta = jnp.asarray(learning_rate, dtype)
    if momentum is None:
        a22 = system.a22
        rho = jnp.where(a22 != 0, (system.a12 * beta - system.b2) / jnp.where(a22 != 0, a22, 1), 0)
        return rho.astype(dtype), beta
    return jnp.asarray(momentum, dtype), beta


class _DampingUpdate(NamedTuple):
    damping: jax.Array
    ratio: jax.Array
    trial_finite: jax.Array  # the loss after the step was finite (or not evaluated)
    trial_failed: jax.Array  # f(w) was finite but the loss after the step was not


def _trust_region_update(state, system, rho, beta, trial_loss, *, factor, low, high, interval):
    """The paper's lambda rule, run when `state.count % interval == 0`.

    The loss after the step is evaluated on the same batch (one forward pass, inside `lax.cond`
    so that the other steps do not pay for it); a non-finite value counts as ratio -inf.
    """
    dtype = state.damping.dtype
    adapt_now = state.count % interval == 0
    new_loss = jax.lax.cond(
        adapt_now,
        lambda: jnp.asarray(trial_loss(), dtype),
        lambda: jnp.asarray(system.loss, dtype),
    )
    predicted = quadratic_model_change(
        system.a11, system.a12, system.a22, system.b1, system.b2, rho, beta
    )
    ratio = trust_ratio(new_loss - system.loss, predicted).astype(dtype)
    finite = jnp.isfinite(new_loss)
    adapted = adapt_damping(
        state.damping, jnp.where(finite, ratio, -jnp.inf),
        factor=factor, low=low, high=high, interval=interval,
    ).astype(dtype)
    return _DampingUpdate(
        damping=jnp.where(adapt_now, adapted, state.damping),
        ratio=jnp.where(adapt_now & finite, ratio, state.ratio),
        trial_finite=finite,
        trial_failed=adapt_now & jnp.isfinite(system.loss) & ~finite,
    )


def curveball(
    learning_rate: Optional[float] = None,
    momentum: Optional[float] = None,
    *,
    damping: float = 1.0,
    adaptive_damping: bool = True,
    damping_factor: float = 0.9,
    damping_low: float = 0.5,
    damping_high: float = 1.5,
    damping_interval: int = 5,
    curvature: str = "ggn",
) -> optax.GradientTransformationExtraArgs:
    """CurveBall (Henriques et al. 2019): a Newton step interleaved with every parameter step.

    Each `update` performs one step of

        delta_z = (H + lambda I) z + grad f
        z       <- rho z - beta delta_z
        updates  = z          (so that w <- w + z after `optax.apply_updates`)

    where H is the Gauss-Newton matrix J^T H_L J of `loss_fn(predict_fn(w))` (default) or its
    true Hessian (`curvature="hessian"`). With `curvature="ggn"` one step costs one forward
    pass, two forward-mode products (J z and J delta_z), one backward pass and two
    Hessian-vector products of `loss_fn` in output space (cheap: output-sized); H is never
    formed. The Hessian of the loss comes from autodiff, so any twice-differentiable loss works
    and softmax cross-entropy or squared error are exact.

    rho and beta minimise the damped quadratic model over span{z, delta_z} (`solve_rho_beta`)
    unless fixed. lambda adapts every `damping_interval` steps (starting with the first) from
    the ratio of the actual change of f, evaluated with one extra forward pass on the same batch
    after the step, to the change the model predicted (`trust_ratio`, `adapt_damping`).

    The gradient: by default the `grads` passed to `update` are the gradient term, so that
    transforms earlier in an `optax.chain` (e.g. `optax.clip_by_global_norm`) and gradient
    accumulation (`optax.MultiSteps`) act on it. Passing `grads=None` makes CurveBall take the
    gradient of `loss_fn(predict_fn(params))` from its own backward pass instead (the paper's
    fused form, one backward pass fewer when the caller does not need the gradient).

    Non-finite values: if the loss, a product or the new z is not finite (or, on a step that
    adapts lambda, the loss after the step is not finite), the step is skipped: the returned
    updates are zero, z is reset to zero (so the next step restarts from a gradient step),
    `count` does not advance and `total_notfinite` is incremented. A non-finite loss after the
    step also grows lambda as a failed trust-region step would. Parameters therefore never
    receive a non-finite update and the state stays finite.

    Defaults: lambda0 = 1 (the authors' MATLAB code) and a faster lambda rule (factor 0.9 per
    step instead of 0.999), so that lambda reaches the scale of the loss's curvature within tens
    of steps; with them CurveBall trains without tuning on mean and sum losses alike. Pass
    `damping=10.0, damping_factor=0.999` for the PyTorch port's exact settings.

    Deviations from the authors' PyTorch code: the 2x2 pseudo-inverse is that of the
    Jacobi-scaled system (see `solve_rho_beta`; without it float32 runs on ill-conditioned
    problems lose the momentum direction); the predicted change used by the lambda rule is that
    of the step actually taken (identical when rho and beta are automatic, and meaningful when
    they are fixed); the gradient term may come from `grads`; the non-finite handling above is
    an addition.

    Args:
      learning_rate: fixed beta (the step size of the Newton-system iteration). `None`
        (default) chooses it automatically each step.
      momentum: fixed rho. `None` (default) chooses it automatically each step. When only one
        of the two is fixed, the other minimises the model along its line.
      damping: initial lambda. Default 1, the authors' MATLAB `CurveBall.m` (the code behind the
        paper's experiments); their PyTorch port uses 10.
      adaptive_damping: adapt lambda by the trust-ratio rule (paper: on).
      damping_factor: lambda is multiplied or divided by `damping_factor ** damping_interval`
        at each adaptation. Default 0.9 (a factor 0.59 per adaptation), this library's choice:
        the authors' 0.999 (0.995 per adaptation) needs thousands of steps to move lambda by
        one order of magnitude, so a lambda0 that does not suit the loss's scale (a mean
        against a sum loss, a small against a large model) is never corrected within a
        training run; 0.9 moves it tenfold in about 22 steps and trains mean and sum losses
        from the same lambda0 (bench/results/curveball.md).
      damping_low: ratio below which lambda grows (paper: 0.5).
      damping_high: ratio above which lambda shrinks (paper: 1.5).
      damping_interval: steps between lambda adaptations (paper: 5).
        The authors' exact rule is `damping=1.0` (MATLAB) or `damping=10.0` (PyTorch) with
        `damping_factor=0.999`; the other defaults are theirs.
      curvature: `"ggn"` (Gauss-Newton, default) or `"hessian"` (true Hessian of
        `loss_fn(predict_fn(w))` by forward-over-reverse; may be indefinite).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update(grads, state, params, *,
      predict_fn, loss_fn)` needs `params`, `predict_fn(params) -> outputs` (any pytree) and
      `loss_fn(outputs) -> scalar` for the current batch.

    References:
      Henriques, Ehrhardt, Albanie, Vedaldi, "Small steps and giant leaps: Minimal Newton
      solvers for Deep Learning", ICCV 2019, arXiv:1805.08095.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxsecond as js
      >>> x, y = jnp.ones((8, 3)), jnp.zeros(8)
      >>> params = {"w": jnp.ones(3)}
      >>> predict_fn = lambda p: x @ p["w"]
      >>> loss_fn = lambda out: jnp.mean((out - y) ** 2)
      >>> opt = js.curveball()
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: loss_fn(predict_fn(p)))(params)
      >>> updates, state = opt.update(grads, state, params, predict_fn=predict_fn,
      ...                             loss_fn=loss_fn)
      >>> params = optax.apply_updates(params, updates)
    """
    _check_number("learning_rate", learning_rate, optional=True)
    _check_number("momentum", momentum, optional=True)
    _check_number("damping", damping, low=0.0, low_open=adaptive_damping)
    if not isinstance(adaptive_damping, bool):
        raise TypeError(f"curveball: `adaptive_damping` must be a bool, got {adaptive_damping!r}.")
    _check_number("damping_factor", damping_factor, low=0.0, high=1.0, low_open=True)
    _check_number("damping_low", damping_low)
    _check_number("damping_high", damping_high)
    if _is_number(damping_low) and _is_number(damping_high) and damping_low > damping_high:
        raise ValueError(
            f"curveball: `damping_low` ({damping_low}) must be <= `damping_high` ({damping_high})."
        )
    if isinstance(damping_interval, bool) or not isinstance(damping_interval, numbers.Integral):
        raise TypeError(f"curveball: `damping_interval` must be an int, got {damping_interval!r}.")
    if damping_interval < 1:
        raise ValueError(f"curveball: `damping_interval` must be >= 1, got {damping_interval}.")
    if not isinstance(curvature, str) or curvature.lower() not in _CURVATURES:
        raise ValueError(f"curveball: `curvature` must be one of {_CURVATURES}, got {curvature!r}.")
    build_system = _ggn_system if curvature.lower() == "ggn" else _hessian_system
    needs_coefficients = learning_rate is None or momentum is None or adaptive_damping

    def init_fn(params):
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        return CurveBallState(
            z=optax.tree.zeros_like(params),
            damping=jnp.asarray(damping, dtype),
            count=jnp.zeros((), jnp.int32),
            rho=zero,
            beta=zero,
            ratio=jnp.ones((), dtype),
            total_notfinite=jnp.zeros((), jnp.int32),
        )

    def update_fn(grads, state, params=None, *, predict_fn=None, loss_fn=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("curveball: `params` is required (the curvature is taken at them).")
        if not callable(predict_fn):
            raise TypeError("curveball: `predict_fn` (params -> outputs) must be a callable.")
        if not callable(loss_fn):
            raise TypeError("curveball: `loss_fn` (outputs -> scalar) must be a callable.")
        dtype = state.damping.dtype
        lam = state.damping
        z = state.z
        system = build_system(predict_fn, loss_fn, params, z, lam, grads, needs_coefficients)
        rho, beta = _step_sizes(system, learning_rate, momentum, dtype)
        new_z = optax.tree.add_scale(optax.tree.scale(rho, z), -beta, system.delta_z)
        new_z = optax.tree.cast_like(new_z, z)

        if adaptive_damping:
            adapted = _trust_region_update(
                state, system, rho, beta,
                lambda: loss_fn(predict_fn(optax.apply_updates(params, new_z))),
                factor=damping_factor, low=damping_low, high=damping_high,
                interval=damping_interval,
            )
        else:
            adapted = _DampingUpdate(lam, state.ratio, jnp.array(True), jnp.array(False))

        finite = (
            jnp.isfinite(system.loss)
            & jnp.isfinite(rho)
            & jnp.isfinite(beta)
            & _tree_all_finite(new_z)
            & adapted.trial_finite
        )
        zeros = optax.tree.zeros_like(z)
        new_z = optax.tree.where(finite, new_z, zeros)
        new_state = CurveBallState(
            z=new_z,
            # A failed trial point (non-finite loss after the step) still grows lambda.
            damping=jnp.where(finite | adapted.trial_failed, adapted.damping, lam),
            count=jnp.where(finite, optax.safe_int32_increment(state.count), state.count),
            rho=jnp.where(finite, rho, state.rho).astype(dtype),
            beta=jnp.where(finite, beta, state.beta).astype(dtype),
            ratio=adapted.ratio,
            total_notfinite=state.total_notfinite + jnp.where(finite, 0, 1).astype(jnp.int32),
        )
        return new_z, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _SolveState(NamedTuple):
    x: jax.Array
    f: jax.Array
    g: jax.Array
    opt_state: CurveBallState
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array


def run_curveball(value_and_grad, fun, x0, options, *, damping_interval=5, disp=False):
    """CurveBall as a deterministic solver for ``minimize(method="curveball")`` (flat vectors).

    On a deterministic objective the model is the identity and the loss is ``fun`` itself, so the
    Gauss–Newton matrix is the exact Hessian of ``fun``. Each iteration evaluates the value and
    gradient once (for the convergence tests, which are ``minimize``'s), then takes one CurveBall
    step. CurveBall does not decrease ``f`` monotonically, so the relative-reduction (``ftol``) test
    is not used: the solve stops on ``gtol``, the budgets, or a non-finite value.

    Args:
      value_and_grad: ``x -> (f, g)``.
      fun: ``x -> f`` (for the curvature products and the damping rule's trial values).
      x0: the starting point.
      options: a dict with ``gtol``, ``maxiter``, ``maxfun`` and CurveBall's ``damping``,
        ``learning_rate`` and ``momentum`` (``None`` for automatic).
      damping_interval: steps between two adaptations of the damping (static).
      disp: print each iterate and the final status from inside the compiled loop.

    Returns:
      ``(x, f, g, nit, nfev, status)``. ``nfev`` counts every evaluation of ``fun``: the
      value-and-gradient, the forward pass of each curvature product and the damping rule's trials.
      An iteration is started only if its evaluations fit in ``maxfun`` (2, or 3 on the steps that
      adapt the damping), so ``nfev`` never exceeds ``max(maxfun, 1)``.
    """
    from jaxsecond.convergence import Status, status_at_iterate
    from jaxsecond.descent import _print_final

    opt = curveball(
        options["learning_rate"], options["momentum"], damping=options["damping"],
        damping_interval=damping_interval,
    )
    no_bounds = jnp.full_like(x0, jnp.inf)
    never = jnp.asarray(-jnp.inf, x0.dtype)  # an ftol no reduction can meet

    def step_cost(opt_state):
        # The curvature products' forward pass and the new value-and-gradient, plus the damping
        # rule's trial value on the steps that adapt lambda.
        return 2 + (opt_state.count % damping_interval == 0).astype(jnp.int32)

    def check(state, first):
        # MAXFUN when the next iteration would not fit in the budget (nfev + cost > maxfun).
        maxfun = options["maxfun"] - step_cost(state.opt_state) + 1
        status, pg_norm = status_at_iterate(
            state.x, state.f, state.g, state.f, -no_bounds, no_bounds, state.nit, state.nfev,
            options["gtol"], never, options["maxiter"], maxfun, first,
        )
        if disp:
            jax.debug.print(
                "iter {:5d}  f = {: .10e}  |g| = {:.4e}  damping = {:.3e}  nfev = {}",
                state.nit, state.f, pg_norm, state.opt_state.damping, state.nfev,
            )
        return state._replace(status=status)

    def body(state):
        updates, opt_state = opt.update(
            state.g, state.opt_state, state.x, predict_fn=lambda x: x, loss_fn=fun
        )
        x = state.x + updates
        f, g = value_and_grad(x)
        nfev = state.nfev + step_cost(state.opt_state)
        new = check(
            _SolveState(x, jnp.asarray(f, x0.dtype), g, opt_state, state.nit + 1, nfev, state.status),
            False,
        )
        # A step into a non-finite region (taken on a step that did not evaluate the damping
        # rule's trial value) ends the solve at the last finite iterate.
        failed = new.status == Status.NONFINITE
        return new._replace(
            x=jnp.where(failed, state.x, new.x), f=jnp.where(failed, state.f, new.f),
            g=jnp.where(failed, state.g, new.g),
        )

    f0, g0 = value_and_grad(x0)
    init = _SolveState(
        x0, jnp.asarray(f0, x0.dtype), g0, opt.init(x0), jnp.zeros((), jnp.int32),
        jnp.ones((), jnp.int32), jnp.int32(Status.RUNNING),
    )
    final = jax.lax.while_loop(lambda s: s.status == Status.RUNNING, body, check(init, True))
    if disp:
        jax.debug.callback(_print_final, final.status, final.nit, final.nfev, final.f)
    return final.x, final.f, final.g, final.nit, final.nfev, final.status
