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

from jaxsecond._validation import check_number, check_ordered, concrete_float

__all__ = [
    "CurveBallState",
    "curveball",
    "ggn_vector_product",
    "hessian_vector_product",
    "solve_rho_beta",
    "quadratic_model_change",
    "trust_ratio",
    "adapt_damping",
    "nielsen_damping",
]

_CURVATURES = ("ggn", "hessian")
_DAMPING_RULES = ("nielsen", "threshold")


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
      ratio: the last trust ratio computed (actual / predicted change of f; -inf when f rose
        where the model predicted no decrease).
      total_notfinite: number of steps skipped because a value was not finite.
      damping_growth: Nielsen's nu, the factor by which lambda grows at the next failed
        adaptation (2, doubled by each consecutive failure); unused by the threshold rule.
    """

    z: optax.Updates
    damping: jax.Array
    count: jax.Array
    rho: jax.Array
    beta: jax.Array
    ratio: jax.Array
    total_notfinite: jax.Array
    damping_growth: jax.Array


class _NewtonSystem(NamedTuple):
    """One step's view of the damped Newton system.

    The quadratic forms of H and of the identity are kept apart, so that the damped forms
    (`damped_forms`) can use a lambda chosen after the products (the first step's) and the trust
    ratio can judge the undamped model.
    """

    loss: jax.Array
    delta_z: optax.Updates
    h11: Optional[jax.Array] = None  # delta_z^T H delta_z
    h12: Optional[jax.Array] = None  # z^T H delta_z
    h22: Optional[jax.Array] = None  # z^T H z
    n11: Optional[jax.Array] = None  # delta_z^T delta_z
    n12: Optional[jax.Array] = None  # z^T delta_z
    n22: Optional[jax.Array] = None  # z^T z
    b1: Optional[jax.Array] = None  # grad f^T delta_z
    b2: Optional[jax.Array] = None  # grad f^T z

    def damped_forms(self, damping):
        """a11, a12, a22: the quadratic forms of H + damping I."""
        return (self.h11 + damping * self.n11, self.h12 + damping * self.n12,
                self.h22 + damping * self.n22)


def _identity_forms(z, delta_z):
    return optax.tree.vdot(delta_z, delta_z), optax.tree.vdot(z, delta_z), optax.tree.vdot(z, z)


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
        return _NewtonSystem(loss, delta_z)

    j_dz = model_jvp(delta_z)
    h_jdz = loss_hvp(j_dz)
    h_forms = (optax.tree.vdot(j_dz, h_jdz), optax.tree.vdot(jz, h_jdz), optax.tree.vdot(jz, h_jz))
    if grads is None:
        b1 = optax.tree.vdot(output_grad, j_dz)
        b2 = optax.tree.vdot(output_grad, jz)
    else:
        b1 = optax.tree.vdot(grads, delta_z)
        b2 = optax.tree.vdot(grads, z)
    return _NewtonSystem(loss, delta_z, *h_forms, *_identity_forms(z, delta_z), b1, b2)


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
        return _NewtonSystem(loss, delta_z)

    h_dz = hvp(delta_z)
    h_forms = (optax.tree.vdot(delta_z, h_dz), optax.tree.vdot(z, h_dz), optax.tree.vdot(z, hz))
    b1 = optax.tree.vdot(grads, delta_z)
    b2 = optax.tree.vdot(grads, z)
    return _NewtonSystem(loss, delta_z, *h_forms, *_identity_forms(z, delta_z), b1, b2)


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
    The keyword defaults are the authors'; `curveball(damping_rule="threshold")` uses this rule.

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


def nielsen_damping(damping, growth, ratio):
    """Nielsen's Levenberg-Marquardt update of lambda from a trust ratio.

    A step that decreased f as the model predicted (ratio > 0) scales lambda by
    max(1/3, 1 - (2 ratio - 1)^3) -- a third when the model was exact (ratio near 1), nearly
    nothing when ratio is near 1/2 -- and resets the growth factor nu to 2. A step that did not
    decrease f multiplies lambda by nu and doubles nu, so consecutive failures raise lambda
    geometrically faster. NaN leaves both unchanged.

    Args:
      damping: current lambda.
      growth: current nu (2 after a success).
      ratio: from `trust_ratio`.

    Returns:
      `(damping, growth)`: the new lambda and nu.

    References:
      Nielsen, "Damping parameter in Marquardt's method", IMM-REP-1999-05, DTU, 1999;
      Madsen, Nielsen, Tingleff, "Methods for non-linear least squares problems", 2004, sec. 3.2.

    Example:
      >>> lam, nu = nielsen_damping(1.0, 2.0, 1.0)    # (1/3, 2): an exact model
      >>> lam, nu = nielsen_damping(1.0, 2.0, -1.0)   # (2, 4): f went up
    """
    dtype = jnp.result_type(damping, growth, ratio, 1.0)
    damping, growth, ratio = (jnp.asarray(x, dtype) for x in (damping, growth, ratio))
    success = ratio > 0
    # (2 r - 1)^3 overflows for huge ratios; any ratio >= 1 already gives the 1/3 floor.
    shrink = jnp.maximum(1 / 3, 1 - (2 * jnp.minimum(ratio, 1) - 1) ** 3)
    new_damping = jnp.where(success, damping * shrink, damping * growth)
    new_growth = jnp.where(success, 2, 2 * growth).astype(dtype)
    # After many consecutive failures nu^k overflows: lambda then stays at its last finite value.
    unchanged = jnp.isnan(ratio) | ~jnp.isfinite(new_damping) | ~jnp.isfinite(new_growth)
    return jnp.where(unchanged, damping, new_damping), jnp.where(unchanged, growth, new_growth)


# --------------------------------------------------------------------------------------------
# The optax transform.
# --------------------------------------------------------------------------------------------


def _check_number(name, value, *, low=None, high=None, low_open=False, optional=False, finite=True):
    """Validate a concrete scalar option (finite unless `finite` is false, in range); traced values
    (inject_hyperparams) pass through."""
    if value is None:
        if optional:
            return
        raise TypeError(f"curveball: `{name}` must be a number, got None.")
    check_number(f"curveball: `{name}`", value, low=low, high=high, low_open=low_open, finite=finite)


def _scalar_dtype(params):
    leaves = [
        x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]
    if not leaves:
        raise TypeError("curveball: `params` must contain at least one floating-point array.")
    return jnp.promote_types(jnp.result_type(*leaves), jnp.float32)


def _new_z_finite(system, new_z, rho, beta):
    """Whether every entry of new_z = rho z - beta delta_z (cast to its leaf's dtype) is finite.

    When the step computed the Gram entries of z and delta_z, a scalar test replaces a pass over
    the parameters: |z|^2 and |delta_z|^2 are finite only if every entry is, and every entry of
    new_z is at most |new_z| = sqrt(rho^2 |z|^2 - 2 rho beta z.delta_z + beta^2 |delta_z|^2), so
    |new_z|^2 <= (largest value of the narrowest leaf dtype)^2 rules out an overflow in the cast.
    The test can only err towards skipping a step, within a few orders of magnitude of overflow.
    """
    if system.n11 is None:
        return _tree_all_finite(new_z)
    norm2 = rho**2 * system.n22 - 2 * rho * beta * system.n12 + beta**2 * system.n11
    floating = [x.dtype for x in jax.tree.leaves(new_z) if jnp.issubdtype(x.dtype, jnp.inexact)]
    narrowest = min((jnp.finfo(d).max for d in floating), default=jnp.inf)
    largest = jnp.asarray(narrowest, norm2.dtype)  # inf in float32: then any finite norm passes
    return (jnp.isfinite(system.n11) & jnp.isfinite(system.n22) & jnp.isfinite(norm2)
            & (norm2 <= largest * largest))


def _tree_all_finite(tree):
    return jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.array(True)
    )


def _line_minimum(numerator, curvature):
    return jnp.where(curvature != 0, numerator / jnp.where(curvature != 0, curvature, 1), 0)


def _step_sizes(system, damping, learning_rate, momentum, momentum_range, dtype):
    """rho and beta: automatic, partly fixed (1-D minimisation) or fixed.

    An automatic rho outside `momentum_range` is clipped to it, and an automatic beta is then the
    model's minimiser for that rho (the model restricted to the strip is convex in rho, so this is
    the constrained minimiser when the 2x2 matrix is positive definite).
    """
    if learning_rate is not None and momentum is not None:
        return jnp.asarray(momentum, dtype), jnp.asarray(learning_rate, dtype)
    a11, a12, a22 = system.damped_forms(damping)
    b1, b2 = system.b1, system.b2
    if momentum is not None:
        rho = jnp.asarray(momentum, dtype)
    elif learning_rate is None:
        rho, beta = solve_rho_beta(a11, a12, a22, b1, b2)
        if momentum_range is None:
            return rho, beta
    else:
        rho = _line_minimum(a12 * learning_rate - b2, a22)
    if momentum is None and momentum_range is not None:
        rho = jnp.clip(rho, *momentum_range)
    if learning_rate is None:
        beta = _line_minimum(b1 + a12 * rho, a11)
    else:
        beta = learning_rate
    return jnp.asarray(rho, dtype), jnp.asarray(beta, dtype)


def _curvature(system):
    """The Rayleigh quotient along delta_z, h11 / n11 (over 1 where n11 is zero)."""
    return system.h11 / jnp.where(system.n11 > 0, system.n11, 1)


def _damping_floor(system, dtype):
    """eps x the curvature along delta_z: below it lambda no longer changes H + lambda I there.

    Nielsen's rule divides lambda by 3 after every good step; in a long run it underflows to zero,
    where no multiplication can raise it again. The floor (at least the smallest normal number)
    keeps lambda where a few failed steps bring it back: 2^(1+2+...+k) passes 1/eps after k = 7
    (float32) or 10 (float64) consecutive failures.
    """
    finfo = jnp.finfo(dtype)
    curvature = jnp.abs(_curvature(system))
    floor = finfo.eps * jnp.where(jnp.isfinite(curvature), curvature, 0)
    return jnp.maximum(floor, finfo.tiny).astype(dtype)


def _initial_damping(system, dtype):
    """lambda0 = g^T H g / g^T g, the curvature along the first gradient (z = 0, delta_z = g).

    1 (the authors' MATLAB default) when that is not a positive finite number (no gradient, or a
    direction of zero or negative curvature in Hessian mode).
    """
    rayleigh = _curvature(system)
    usable = (system.n11 > 0) & (rayleigh > 0) & jnp.isfinite(rayleigh)
    return jnp.where(usable, rayleigh, 1).astype(dtype)


class _DampingUpdate(NamedTuple):
    damping: jax.Array
    growth: jax.Array
    ratio: jax.Array
    trial_finite: jax.Array  # the loss after the step was finite (or not evaluated)
    trial_failed: jax.Array  # f(w) was finite but the loss after the step was not


def _trust_region_update(
    state, system, damping, rho, beta, trial_loss, *, rule, factor, low, high, interval,
    damped_ratio,
):
    """The lambda rule, run when `state.count % interval == 0`.

    The loss after the step is evaluated on the same batch (one forward pass, inside `lax.cond`
    so that the other steps do not pay for it); a non-finite value counts as ratio -inf. The
    predicted change is that of the damped model (the authors') or of the undamped one
    (Levenberg-Marquardt as in Martens 2010 and K-FAC).
    """
    dtype = state.damping.dtype
    adapt_now = state.count % interval == 0
    new_loss = jax.lax.cond(
        adapt_now,
        lambda: jnp.asarray(trial_loss(), dtype),
        lambda: jnp.asarray(system.loss, dtype),
    )
    forms = system.damped_forms(damping if damped_ratio else 0)
    predicted = quadratic_model_change(*forms, system.b1, system.b2, rho, beta)
    actual = new_loss - system.loss
    ratio = trust_ratio(actual, predicted).astype(dtype)
    finite = jnp.isfinite(new_loss)
    # At a minimum both changes are rounding noise of f and their ratio says nothing about the
    # model: lambda is left as it is (NaN leaves both rules unchanged) instead of drifting.
    noise = 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(system.loss), jnp.abs(new_loss))
    rounding = (jnp.abs(actual) <= noise) & (jnp.abs(predicted) <= noise)
    judged = jnp.where(finite, jnp.where(rounding, jnp.nan, ratio), -jnp.inf)
    if rule == "nielsen":
        adapted, growth = nielsen_damping(damping, state.damping_growth, judged)
    else:
        adapted = adapt_damping(
            damping, judged, factor=factor, low=low, high=high, interval=interval
        )
        growth = state.damping_growth
    return _DampingUpdate(
        damping=jnp.where(adapt_now, adapted, damping).astype(dtype),
        growth=jnp.where(adapt_now, growth, state.damping_growth).astype(dtype),
        ratio=jnp.where(adapt_now & finite, ratio, state.ratio),
        trial_finite=finite,
        trial_failed=adapt_now & jnp.isfinite(system.loss) & ~finite,
    )


def curveball(
    learning_rate: Optional[float] = None,
    momentum: Optional[float] = None,
    *,
    damping: Optional[float] = None,
    adaptive_damping: bool = True,
    damping_rule: str = "nielsen",
    damping_factor: Optional[float] = None,
    damping_low: Optional[float] = None,
    damping_high: Optional[float] = None,
    damping_interval: int = 5,
    damped_ratio: bool = False,
    momentum_range: Optional[tuple[float, float]] = (0.6, 1.0),
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
    after the step, to the change the model predicted (`trust_ratio`).

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
    receive a non-finite update, and z and lambda stay finite.

    Defaults, chosen so that CurveBall trains without tuning on mean and sum losses, small and
    large models, full batches and mini-batches (bench/results/curveball.md: six tasks, against
    SGD+momentum and Adam each at its best learning rate):

    - lambda0 is measured, not given: g^T H g / g^T g, the curvature along the first gradient
      (free: the first step computes it), so the first step is half the exact line minimum along
      -g whatever the scale of the loss. The authors use a constant (1 in MATLAB, 10 in PyTorch),
      which suits one scale of loss only.
    - lambda follows Nielsen's Levenberg-Marquardt rule (`nielsen_damping`: divided by up to 3
      per adaptation while the model predicts well, multiplied by 2, 4, 8, ... on consecutive
      failures) on the ratio of the actual change to the change predicted by the *undamped*
      model (as Martens 2010 and K-FAC judge it). The authors' rule (`adapt_damping`: x or /
      0.999^5 when the ratio of the *damped* model leaves [0.5, 1.5]) needs thousands of steps to
      move lambda tenfold, and the damped model's ratio tends to 2, not 1, when lambda dominates.
    - rho is clipped to [0.6, 1] (`momentum_range`), beta then minimising the model for that rho.
      On a mini-batch the 2x2 solve fits the current batch: it often shrinks rho (forgetting
      directions fit to earlier batches, which momentum SGD keeps averaging) or extrapolates with
      rho > 1 (amplifying the last batch's noise). The authors leave rho free.

    The authors' exact settings: `damping=10.0` (PyTorch; `1.0` for MATLAB),
    `damping_rule="threshold", damped_ratio=True, momentum_range=None` (the threshold rule's
    defaults, `damping_factor=0.999, damping_low=0.5, damping_high=1.5, damping_interval=5`, are
    theirs).

    Deviations from the authors' code, beyond the defaults above: the 2x2 pseudo-inverse is that
    of the Jacobi-scaled system (see `solve_rho_beta`; without it float32 runs on
    ill-conditioned problems lose the momentum direction); the predicted change used by the
    lambda rule is that of the step actually taken (identical when rho and beta are automatic,
    and meaningful when they are fixed or clipped); lambda is left as it is when the actual and
    predicted changes are both at the rounding level of f (at a minimum their ratio is noise);
    with adaptive damping the lambda used is at least eps x the curvature along delta_z
    (Nielsen's rule would otherwise underflow it to zero in long runs, where no failure can
    raise it again); the gradient term may come from `grads`; the non-finite handling above is
    an addition.

    Args:
      learning_rate: fixed beta (the step size of the Newton-system iteration). `None`
        (default) chooses it automatically each step.
      momentum: fixed rho. `None` (default) chooses it automatically each step. When only one
        of the two is fixed, the other minimises the model along its line.
      damping: initial lambda; `None` (default) measures it at the first step as above.
      adaptive_damping: adapt lambda by the trust-ratio rule (paper: on).
      damping_rule: `"nielsen"` (default, `nielsen_damping`) or `"threshold"` (the authors',
        `adapt_damping` with the three options below).
      damping_factor: threshold rule only: lambda is multiplied or divided by
        `damping_factor ** damping_interval` at each adaptation. Default 0.999 (the authors').
      damping_low: threshold rule only: ratio below which lambda grows. Default 0.5 (authors).
      damping_high: threshold rule only: ratio above which lambda shrinks. Default 1.5
        (authors). Passing any of these three with `damping_rule="nielsen"` is a `ValueError`.
      damping_interval: steps between lambda adaptations (paper: 5); each adaptation costs one
        forward pass.
      damped_ratio: judge the damped model (the authors') instead of the undamped one.
      momentum_range: `(low, high)` bounds of the automatic rho, or `None` for a free rho (the
        authors'). Ignored when `momentum` is fixed.
      curvature: `"ggn"` (Gauss-Newton, default) or `"hessian"` (true Hessian of
        `loss_fn(predict_fn(w))` by forward-over-reverse; may be indefinite).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update(grads, state, params, *,
      predict_fn, loss_fn)` needs `params`, `predict_fn(params) -> outputs` (any pytree) and
      `loss_fn(outputs) -> scalar` for the current batch.

    References:
      Henriques, Ehrhardt, Albanie, Vedaldi, "Small steps and giant leaps: Minimal Newton
      solvers for Deep Learning", ICCV 2019, arXiv:1805.08095.
      Nielsen, "Damping parameter in Marquardt's method", IMM-REP-1999-05, DTU, 1999.
      Martens, "Deep learning via Hessian-free optimization", ICML 2010.

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
    _check_number("learning_rate", learning_rate, low=0.0, optional=True)
    _check_number("momentum", momentum, optional=True)
    _check_number("damping", damping, low=0.0, low_open=adaptive_damping, optional=True)
    if not isinstance(adaptive_damping, bool):
        raise TypeError(f"curveball: `adaptive_damping` must be a bool, got {adaptive_damping!r}.")
    if damping_rule not in _DAMPING_RULES:
        raise ValueError(
            f"curveball: `damping_rule` must be one of {_DAMPING_RULES}, got {damping_rule!r}."
        )
    threshold_options = dict(damping_factor=damping_factor, damping_low=damping_low,
                             damping_high=damping_high)
    if damping_rule == "nielsen":
        given = [name for name, value in threshold_options.items() if value is not None]
        if given:
            raise ValueError(
                f"curveball: `{given[0]}` applies to `damping_rule='threshold'` only (the "
                "default rule is Nielsen's, which has no such option)."
            )
    damping_factor = 0.999 if damping_factor is None else damping_factor
    damping_low = 0.5 if damping_low is None else damping_low
    damping_high = 1.5 if damping_high is None else damping_high
    _check_number("damping_factor", damping_factor, low=0.0, high=1.0, low_open=True)
    _check_number("damping_low", damping_low)
    _check_number("damping_high", damping_high)
    check_ordered("`damping_low`", damping_low, "curveball: `damping_high`", damping_high)
    # A 0-d integer array is accepted too (traced or not): optax.inject_hyperparams passes every
    # numeric argument as one, and the interval is only used in array arithmetic.
    dtype = getattr(damping_interval, "dtype", None)
    integer_array = (dtype is not None and jnp.ndim(damping_interval) == 0
                     and jnp.issubdtype(dtype, jnp.integer))
    if isinstance(damping_interval, bool) or not (
        isinstance(damping_interval, numbers.Integral) or integer_array
    ):
        raise TypeError(f"curveball: `damping_interval` must be an int, got {damping_interval!r}.")
    interval = concrete_float(damping_interval)
    if interval is not None and interval < 1:
        raise ValueError(f"curveball: `damping_interval` must be >= 1, got {damping_interval}.")
    if not isinstance(damped_ratio, bool):
        raise TypeError(f"curveball: `damped_ratio` must be a bool, got {damped_ratio!r}.")
    if momentum_range is not None:
        if not isinstance(momentum_range, (tuple, list)) or len(momentum_range) != 2:
            raise TypeError(
                f"curveball: `momentum_range` must be None or a pair (low, high), got {momentum_range!r}."
            )
        _check_number("momentum_range[0]", momentum_range[0], finite=False)  # -inf, inf: unbounded
        _check_number("momentum_range[1]", momentum_range[1], finite=False)
        check_ordered("`momentum_range[0]`", momentum_range[0],
                      "curveball: `momentum_range[1]`", momentum_range[1])
        momentum_range = tuple(momentum_range)
    if not isinstance(curvature, str) or curvature.lower() not in _CURVATURES:
        raise ValueError(f"curveball: `curvature` must be one of {_CURVATURES}, got {curvature!r}.")
    build_system = _ggn_system if curvature.lower() == "ggn" else _hessian_system
    needs_coefficients = (
        learning_rate is None or momentum is None or adaptive_damping or damping is None
    )

    def init_fn(params):
        dtype = _scalar_dtype(params)
        zero = jnp.zeros((), dtype)
        return CurveBallState(
            z=optax.tree.zeros_like(params),
            # With `damping=None`, 0 until the first step measures lambda0 (z = 0 makes the first
            # delta_z independent of lambda).
            damping=jnp.asarray(0.0 if damping is None else damping, dtype),
            count=jnp.zeros((), jnp.int32),
            rho=zero,
            beta=zero,
            ratio=jnp.ones((), dtype),
            total_notfinite=jnp.zeros((), jnp.int32),
            damping_growth=jnp.asarray(2.0, dtype),
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
        if damping is None:
            # Measured once: until a step is taken or fails its trial (a grown lambda is kept),
            # the stored lambda is init's 0.
            unmeasured = (state.count == 0) & (state.damping == 0)
            lam = jnp.where(unmeasured, _initial_damping(system, dtype), lam)
        if adaptive_damping:
            lam = jnp.maximum(lam, _damping_floor(system, dtype))
        rho, beta = _step_sizes(system, lam, learning_rate, momentum, momentum_range, dtype)
        new_z = optax.tree.add_scale(optax.tree.scale(rho, z), -beta, system.delta_z)
        new_z = optax.tree.cast_like(new_z, z)

        if adaptive_damping:
            adapted = _trust_region_update(
                state, system, lam, rho, beta,
                lambda: loss_fn(predict_fn(optax.apply_updates(params, new_z))),
                factor=damping_factor, low=damping_low, high=damping_high,
                rule=damping_rule, interval=damping_interval, damped_ratio=damped_ratio,
            )
        else:
            adapted = _DampingUpdate(
                lam, state.damping_growth, state.ratio, jnp.array(True), jnp.array(False)
            )

        finite = (
            jnp.isfinite(system.loss)
            & jnp.isfinite(rho)
            & jnp.isfinite(beta)
            & _new_z_finite(system, new_z, rho, beta)
            & adapted.trial_finite
        )
        zeros = optax.tree.zeros_like(z)
        new_z = optax.tree.where(finite, new_z, zeros)
        new_state = CurveBallState(
            z=new_z,
            # A failed trial point (non-finite loss after the step) still grows lambda.
            damping=jnp.where(finite | adapted.trial_failed, adapted.damping, state.damping),
            count=jnp.where(finite, optax.safe_int32_increment(state.count), state.count),
            rho=jnp.where(finite, rho, state.rho).astype(dtype),
            beta=jnp.where(finite, beta, state.beta).astype(dtype),
            ratio=adapted.ratio,
            total_notfinite=state.total_notfinite + jnp.where(finite, 0, 1).astype(jnp.int32),
            damping_growth=jnp.where(
                finite | adapted.trial_failed, adapted.growth, state.damping_growth
            ),
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

    # The paper's free rho and threshold rule on the damped model, with this library's faster
    # factor: the solver's behaviour since it was written (its tests and scipy comparisons).
    opt = curveball(
        options["learning_rate"], options["momentum"], damping=options["damping"],
        damping_interval=damping_interval, damping_rule="threshold", damping_factor=0.9,
        damped_ratio=True, momentum_range=None,
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
