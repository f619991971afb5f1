"""Tests for jaxsecond.curveball (Henriques et al. 2019)."""

import importlib
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

import jaxsecond as js
# `jaxsecond.curveball` the function shadows the module of the same name on the package.
cb = importlib.import_module("jaxsecond.curveball")

# ---------------------------------------------------------------------------------------------
# Small problems
# ---------------------------------------------------------------------------------------------


def _mlp_problem(dtype=jnp.float64, seed=0):
    """A 3-4-(3+2) network whose outputs are a pytree; softmax cross-entropy plus squared error."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b1": jnp.asarray(rng.normal(size=4), dtype),
        "w2": jnp.asarray(rng.normal(size=(4, 5)), dtype),
    }
    x = jnp.asarray(rng.normal(size=(6, 3)), dtype)
    labels = jnp.asarray(rng.integers(0, 3, size=6))
    targets = jnp.asarray(rng.normal(size=(6, 2)), dtype)

    def predict_fn(p, x=x):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        out = h @ p["w2"]
        return {"logits": out[:, :3], "regression": (out[:, 3:],)}

    def loss_fn(outputs, labels=labels, targets=targets):
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], labels).mean()
        mse = jnp.mean((outputs["regression"][0] - targets) ** 2)
        return ce + mse

    return params, predict_fn, loss_fn


def _quadratic(n=6, seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.linspace(1.0, 20.0, n)) @ q.T
    b = rng.normal(size=n)
    a_j, b_j = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    return (lambda w: 0.5 * w @ a_j @ w - b_j @ w), np.linalg.solve(a, b)


def _explicit_ggn(params, predict_fn, loss_fn):
    flat, unravel = ravel_pytree(params)
    out_flat, out_unravel = ravel_pytree(predict_fn(params))
    jac = jax.jit(jax.jacfwd(lambda v: ravel_pytree(predict_fn(unravel(v)))[0]))(flat)
    h_l = jax.jit(jax.hessian(lambda o: loss_fn(out_unravel(o))))(out_flat)
    return np.asarray(jac.T @ h_l @ jac), unravel


def _update(opt, grads, state, params, predict_fn, loss_fn):
    """opt.update under jit (eager dispatch of every primitive is slow on a shared CPU)."""
    fn = jax.jit(lambda g, s, p: opt.update(g, s, p, predict_fn=predict_fn, loss_fn=loss_fn))
    return fn(grads, state, params)


def _run(opt, params, predict_fn, loss_fn, steps, fused=False, state=None):
    @jax.jit
    def step(params, state):
        grads = None if fused else jax.grad(lambda p: loss_fn(predict_fn(p)))(params)
        updates, state = opt.update(grads, state, params, predict_fn=predict_fn, loss_fn=loss_fn)
        return optax.apply_updates(params, updates), state

    state = opt.init(params) if state is None else state
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


# ---------------------------------------------------------------------------------------------
# Curvature products
# ---------------------------------------------------------------------------------------------


def test_ggn_vector_product_matches_explicit_matrix():
    params, predict_fn, loss_fn = _mlp_problem()
    ggn, unravel = _explicit_ggn(params, predict_fn, loss_fn)
    v = np.random.default_rng(1).normal(size=ggn.shape[0])
    got = jax.jit(cb.ggn_vector_product, static_argnums=(0, 1))(
        predict_fn, loss_fn, params, unravel(jnp.asarray(v))
    )
    np.testing.assert_allclose(ravel_pytree(got)[0], ggn @ v, rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_matches_jax_hessian():
    params, predict_fn, loss_fn = _mlp_problem()
    flat, unravel = ravel_pytree(params)
    hess = jax.jit(jax.hessian(lambda v: loss_fn(predict_fn(unravel(v)))))(flat)
    v = np.random.default_rng(2).normal(size=flat.shape[0])
    got = jax.jit(cb.hessian_vector_product, static_argnums=0)(
        lambda p: loss_fn(predict_fn(p)), params, unravel(jnp.asarray(v))
    )
    np.testing.assert_allclose(ravel_pytree(got)[0], hess @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
@pytest.mark.parametrize("fused", [False, True])
def test_update_applies_the_damped_newton_system(curvature, fused):
    # With rho = 0 and beta = 1 the update is -delta_z = -((H + lambda I) z + grad f).
    params, predict_fn, loss_fn = _mlp_problem()
    flat, unravel = ravel_pytree(params)
    if curvature == "ggn":
        curv, _ = _explicit_ggn(params, predict_fn, loss_fn)
    else:
        curv = np.asarray(jax.jit(jax.hessian(lambda v: loss_fn(predict_fn(unravel(v)))))(flat))
    grad = np.asarray(jax.jit(jax.grad(lambda v: loss_fn(predict_fn(unravel(v)))))(flat))
    lam = 0.3
    z = np.random.default_rng(3).normal(size=flat.shape[0])
    opt = js.curveball(
        learning_rate=1.0, momentum=0.0, damping=lam, adaptive_damping=False, curvature=curvature
    )
    state = opt.init(params)._replace(z=unravel(jnp.asarray(z)))
    grads = None if fused else unravel(jnp.asarray(grad))
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, predict_fn=predict_fn, loss_fn=loss_fn))
    updates, _ = update(grads, state, params)
    expected = -(curv @ z + lam * z + grad)
    np.testing.assert_allclose(ravel_pytree(updates)[0], expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The 2x2 solve and the damping rule
# ---------------------------------------------------------------------------------------------


def _coefficients(h, z, dz, g, lam):
    hl = h + lam * np.eye(len(z))
    return dz @ hl @ dz, z @ hl @ dz, z @ hl @ z, g @ dz, g @ z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solve_rho_beta_minimises_the_quadratic_model(seed):
    rng = np.random.default_rng(seed)
    n = 5
    m = rng.normal(size=(n, n))
    h, z, dz, g, lam = m @ m.T, rng.normal(size=n), rng.normal(size=n), rng.normal(size=n), 0.7
    hl = h + lam * np.eye(n)

    def model(x):
        step = x[0] * z - x[1] * dz
        return g @ step + 0.5 * step @ hl @ step

    coeffs = _coefficients(h, z, dz, g, lam)
    rho, beta = cb.solve_rho_beta(*coeffs)
    brute = scipy.optimize.minimize(model, np.zeros(2), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose([rho, beta], brute, rtol=1e-6, atol=1e-8)
    change = cb.quadratic_model_change(*coeffs, rho, beta)
    np.testing.assert_allclose(change, model(brute), rtol=1e-8)
    # At the optimum, the paper's -1/2 [beta, -rho] . [b1, b2] is the same number.
    np.testing.assert_allclose(change, -0.5 * (beta * coeffs[3] - rho * coeffs[4]), rtol=1e-8)


def test_solve_rho_beta_singular_first_step_is_the_line_minimiser():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(4, 4))
    h, g, lam = m @ m.T, rng.normal(size=4), 2.0
    z = np.zeros(4)
    coeffs = _coefficients(h, z, g, g, lam)  # first step: z = 0, delta_z = grad
    rho, beta = cb.solve_rho_beta(*coeffs)
    # The minimiser of -b g.g + b^2 g.(H + lam I).g / 2, in closed form (Brent's method in
    # scipy.optimize.minimize_scalar resolves it only to its xtol, 1.5e-8 relative).
    line = (g @ g) / (g @ (h + lam * np.eye(4)) @ g)
    assert float(rho) == 0.0
    np.testing.assert_allclose(beta, line, rtol=1e-8)
    # and agrees with the SVD pseudo-inverse on the singular system
    a = np.array([[coeffs[0], coeffs[1]], [coeffs[1], coeffs[2]]])
    np.testing.assert_allclose([beta, -rho], np.linalg.pinv(a) @ coeffs[3:], rtol=1e-10)


def test_solve_rho_beta_parallel_directions_and_zero_system():
    # z parallel to delta_z: a rank-one system; the step reaches the line minimum.
    rng = np.random.default_rng(6)
    m = rng.normal(size=(4, 4))
    h, dz, g, lam = m @ m.T, rng.normal(size=4), rng.normal(size=4), 0.5
    z = -3.0 * dz
    coeffs = _coefficients(h, z, dz, g, lam)
    rho, beta = cb.solve_rho_beta(*coeffs)
    hl = h + lam * np.eye(4)
    line_best = -0.5 * (g @ dz) ** 2 / (dz @ hl @ dz)
    step = float(rho) * z - float(beta) * dz
    np.testing.assert_allclose(g @ step + 0.5 * step @ hl @ step, line_best, rtol=1e-10)
    rho, beta = cb.solve_rho_beta(0.0, 0.0, 0.0, 0.0, 0.0)
    assert float(rho) == 0.0 and float(beta) == 0.0


def test_solve_rho_beta_keeps_a_well_determined_small_direction_in_float32():
    # a11 >> a22 with z, delta_z far from parallel: an unscaled pseudo-inverse in float32 would
    # drop the z direction (rho = 0); the scaled solve recovers the float64 answer.
    coeffs = (3.0e7, 1.0e3, 0.05, 10.0, -0.3)
    rho64, beta64 = cb.solve_rho_beta(*coeffs)
    rho32, beta32 = cb.solve_rho_beta(*(np.float32(c) for c in coeffs))
    assert rho32.dtype == jnp.float32
    np.testing.assert_allclose([rho32, beta32], [rho64, beta64], rtol=1e-4)
    assert abs(float(rho32)) > 1.0


def test_adapt_damping_rule():
    f = 0.999**5
    np.testing.assert_allclose(cb.adapt_damping(10.0, 0.2), 10.0 / f)
    np.testing.assert_allclose(cb.adapt_damping(10.0, 1.0), 10.0)
    np.testing.assert_allclose(cb.adapt_damping(10.0, 2.0), 10.0 * f)
    np.testing.assert_allclose(cb.adapt_damping(10.0, jnp.nan), 10.0)
    assert float(cb.trust_ratio(-1.0, -2.0)) == 0.5
    assert float(cb.trust_ratio(1.0, 0.0)) == -np.inf
    assert float(cb.trust_ratio(0.0, 0.0)) == 1.0


@pytest.mark.parametrize(
    "ratio, damping, growth",
    [
        (1.0, 1 / 3, 2.0),  # an exact model: the 1/3 floor
        (1e30, 1 / 3, 2.0),  # a huge ratio neither overflows nor passes the floor
        (0.5, 1.0, 2.0),  # 1 - 0^3
        (0.75, 1 - 0.5**3, 2.0),
        (0.25, 1 + 0.5**3, 2.0),  # a small success raises lambda a little
        (-1.0, 3.0, 6.0),  # f went up: lambda * nu, nu doubled
        (-np.inf, 3.0, 6.0),
        (np.nan, 1.0, 3.0),  # unchanged
    ],
)
def test_nielsen_damping_rule(ratio, damping, growth):
    # Madsen, Nielsen & Tingleff (2004), eq. 3.16, with nu = 3 on entry (2 on a success).
    new_damping, new_growth = cb.nielsen_damping(1.0, 3.0 if ratio <= 0 or np.isnan(ratio) else 2.0, ratio)
    np.testing.assert_allclose([new_damping, new_growth], [damping, growth], rtol=1e-15)


def test_nielsen_damping_stays_finite_after_many_failures():
    lam, nu = 1.0, 2.0
    for _ in range(40):
        lam, nu = cb.nielsen_damping(jnp.float32(lam), jnp.float32(nu), -1.0)
    assert np.isfinite(lam) and np.isfinite(nu) and float(lam) > 1e30


def test_damping_rises_after_a_badly_predicted_step():
    # Pseudo-Huber loss far from its minimum: almost no curvature, so with little damping the
    # model predicts a huge decrease and the step overshoots; the ratio is negative.
    loss_fn = lambda o: jnp.sum(jnp.sqrt(1.0 + o**2))  # noqa: E731
    opt = js.curveball(damping=1e-3)
    params = jnp.array([10.0])
    _, state = _run(opt, params, lambda w: w, loss_fn, steps=1)
    assert float(state.ratio) < 0
    np.testing.assert_allclose(state.damping, 2e-3)  # Nielsen: lambda * nu, nu = 2 -> 4
    np.testing.assert_allclose(state.damping_growth, 4.0)


def test_damping_never_reaches_zero_and_recovers_from_its_floor():
    # After many good steps Nielsen's rule would divide lambda into zero (seen in float32 after
    # 600 mini-batch steps), where failures could no longer raise it. The lambda used is at least
    # eps x the curvature along delta_z: here the first step of the pseudo-Huber loss far from its
    # minimum, delta_z = g and curvature f''(10) = 101^(-3/2); the step fails, so lambda doubles.
    loss_fn = lambda o: jnp.sum(jnp.sqrt(1.0 + o**2))  # noqa: E731
    params = jnp.array([10.0], jnp.float32)
    opt = js.curveball()
    state = opt.init(params)._replace(damping=jnp.float32(0.0), count=jnp.int32(5))
    _, state = _update(opt, jax.grad(loss_fn)(params), state, params, lambda w: w, loss_fn)
    assert float(state.ratio) < 0
    floor = np.finfo(np.float32).eps * 101.0**-1.5
    np.testing.assert_allclose(state.damping, 2 * floor, rtol=1e-4)  # float32 curvature


def test_authors_rule_lowers_damping_after_a_well_predicted_step():
    # On a quadratic the damped model over-estimates the curvature (ratio = 2 - 1/(1+lambda)).
    fun, _ = _quadratic(n=1)
    opt = js.curveball(damping=10.0, damping_rule="threshold", damped_ratio=True)  # PyTorch port
    _, state = _run(opt, jnp.array([3.0]), lambda w: w, fun, steps=1)
    assert float(state.ratio) > 1.5
    np.testing.assert_allclose(state.damping, 10.0 * 0.999**5)


@pytest.mark.parametrize("fused", [False, True])
def test_default_damping_starts_at_the_curvature_along_the_gradient_and_falls_by_three(fused):
    # lambda0 = g^T H g / g^T g, measured on the first step; on a quadratic the undamped model is
    # exact, so the trust ratio is 1 and Nielsen's rule divides lambda by 3.
    fun, _ = _quadratic()
    hess = np.asarray(jax.hessian(fun)(jnp.zeros(6)))
    w0 = jnp.asarray(np.random.default_rng(2).normal(size=6))
    g = np.asarray(jax.grad(fun)(w0))
    lambda0 = g @ hess @ g / (g @ g)
    opt = js.curveball()
    assert float(opt.init(w0).damping) == 0.0  # measured at the first step
    params, state = _run(opt, w0, lambda w: w, fun, steps=1, fused=fused)
    np.testing.assert_allclose(state.ratio, 1.0, rtol=1e-10)
    np.testing.assert_allclose(state.damping, lambda0 / 3, rtol=1e-12)
    # The first step is the line minimum of the model damped by lambda0 along -g: half the
    # exact line minimum.
    np.testing.assert_allclose(params - w0, -0.5 * (g @ g) / (g @ hess @ g) * g, rtol=1e-12)


def test_damping_adapts_only_every_interval():
    # Every damping argument explicit. After each step, lambda is checked against the rule applied
    # by hand: at counts 0, 3, 6 the ratio of the actual change of f (at the new point) to the
    # damped model's prediction for the step taken decides; in between lambda stays.
    fun, _ = _quadratic()
    hess = np.asarray(jax.hessian(fun)(jnp.zeros(6)))
    lin = -np.asarray(jax.grad(fun)(jnp.zeros(6)))
    f_np = lambda w: 0.5 * w @ hess @ w - lin @ w  # noqa: E731
    factor, low, high, interval = 0.999, 0.5, 1.5, 3
    opt = js.curveball(
        damping=10.0, adaptive_damping=True, damping_rule="threshold", damping_factor=factor,
        damping_low=low, damping_high=high, damping_interval=interval, damped_ratio=True,
    )
    step = jax.jit(lambda g, s, p: opt.update(g, s, p, predict_fn=lambda w: w, loss_fn=fun))
    params, state = jnp.zeros(6), opt.init(jnp.zeros(6))
    lam, moved = 10.0, 0
    for count in range(8):
        w = np.asarray(params)
        updates, state = step(jax.grad(fun)(params), state, params)
        params = optax.apply_updates(params, updates)
        s = np.asarray(updates)
        if count % interval == 0:
            predicted = (hess @ w - lin) @ s + 0.5 * s @ (hess + lam * np.eye(6)) @ s
            ratio = (f_np(w + s) - f_np(w)) / predicted
            np.testing.assert_allclose(state.ratio, ratio, rtol=1e-8)
            new_lam = lam / factor**interval if ratio < low else lam * factor**interval if ratio > high else lam
            moved += new_lam != lam
            lam = new_lam
        assert int(state.count) == count + 1
        np.testing.assert_allclose(state.damping, lam, rtol=1e-13, err_msg=f"after step {count + 1}")
    assert moved == 3  # lambda did change at each of the three adaptations
    _, state_off = _run(
        js.curveball(damping=10.0, adaptive_damping=False), jnp.zeros(6), lambda w: w, fun, 4
    )
    assert float(state_off.damping) == 10.0


# ---------------------------------------------------------------------------------------------
# Convergence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_converges_to_the_minimiser_of_a_convex_quadratic(curvature):
    fun, w_star = _quadratic()
    opt = js.curveball(damping=1.0, curvature=curvature)
    params, state = _run(opt, jnp.zeros(6), lambda w: w, fun, steps=150)
    np.testing.assert_allclose(params, w_star, rtol=0, atol=1e-9)
    assert int(state.total_notfinite) == 0
    # Converged: the changes of f are rounding noise, which must not drive lambda (judged as
    # failures, Nielsen's doubling growth would take it past 1e80 by step 300).
    lam = float(state.damping)
    params, state = _run(opt, params, lambda w: w, fun, steps=150, state=state)
    assert float(state.damping) <= lam and np.all(np.isfinite(params))


@pytest.mark.parametrize(
    "learning_rate, momentum, atol", [(None, 0.5, 1e-5), (0.05, None, 1e-5), (0.01, 0.9, 1e-4)]
)
def test_fixed_rho_or_beta(learning_rate, momentum, atol):
    fun, w_star = _quadratic()
    opt = js.curveball(learning_rate=learning_rate, momentum=momentum, damping=1.0)
    params, state = _run(opt, jnp.zeros(6), lambda w: w, fun, steps=250)
    if momentum is not None:
        assert float(state.rho) == momentum
    if learning_rate is not None:
        assert float(state.beta) == learning_rate
    np.testing.assert_allclose(params, w_star, atol=atol)


def test_momentum_range_clips_rho_and_takes_the_line_minimum_for_beta():
    # A range of one point is a fixed rho with an automatic beta; an unbounded range is the
    # paper's free 2x2 solve.
    params, predict_fn, loss_fn = _mlp_problem()
    pinned, _ = _run(js.curveball(momentum_range=(0.95, 0.95)), params, predict_fn, loss_fn, 6)
    fixed, _ = _run(js.curveball(momentum=0.95), params, predict_fn, loss_fn, 6)
    chex.assert_trees_all_close(pinned, fixed, rtol=1e-12)
    unbounded, _ = _run(
        js.curveball(momentum_range=(-np.inf, np.inf)), params, predict_fn, loss_fn, 6
    )
    free, _ = _run(js.curveball(momentum_range=None), params, predict_fn, loss_fn, 6)
    chex.assert_trees_all_close(unbounded, free, rtol=1e-9)
    clipped_params, state = _run(js.curveball(), params, predict_fn, loss_fn, 6)
    assert 0.6 <= float(state.rho) <= 1.0


def test_least_squares_through_a_model_converges():
    # Gauss-Newton curvature of a linear model with squared error is the exact Hessian.
    rng = np.random.default_rng(5)
    x, y = jnp.asarray(rng.normal(size=(20, 4))), jnp.asarray(rng.normal(size=20))
    w_star = np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0]
    params, _ = _run(
        js.curveball(damping=1.0),
        {"w": jnp.zeros(4)},
        lambda p: x @ p["w"],
        lambda o: 0.5 * jnp.mean((o - y) ** 2),
        steps=150,
        fused=True,
    )
    np.testing.assert_allclose(params["w"], w_star, atol=1e-8)


def test_float32_end_to_end():
    fun, w_star = _quadratic(dtype=jnp.float32)
    opt = js.curveball(damping=1.0)
    params, state = _run(opt, jnp.zeros(6, jnp.float32), lambda w: w, fun, steps=100)
    assert params.dtype == jnp.float32
    assert state.z.dtype == jnp.float32
    assert state.damping.dtype == jnp.float32
    np.testing.assert_allclose(params, w_star, atol=1e-4)
    # a float32 network too
    params, predict_fn, loss_fn = _mlp_problem(dtype=jnp.float32)
    loss0 = loss_fn(predict_fn(params))
    params, state = _run(js.curveball(), params, predict_fn, loss_fn, steps=20)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert float(loss_fn(predict_fn(params))) < 0.5 * float(loss0)
    assert int(state.total_notfinite) == 0


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
@pytest.mark.parametrize("fused", [False, True])
def test_mixed_float32_float64_parameters(curvature, fused):
    # Least squares with a float64 weight and a float32 bias: each leaf keeps its dtype and the
    # solution is the least-squares one (to float32 precision in the bias).
    rng = np.random.default_rng(6)
    x, y = jnp.asarray(rng.normal(size=(20, 3))), jnp.asarray(rng.normal(size=20))
    w_star = np.linalg.lstsq(np.hstack([np.asarray(x), np.ones((20, 1))]), np.asarray(y), rcond=None)[0]
    params = {"w": jnp.zeros(3), "b": jnp.zeros((), jnp.float32)}
    params, state = _run(
        js.curveball(damping=1.0, curvature=curvature), params,
        lambda p: x @ p["w"] + p["b"], lambda o: 0.5 * jnp.mean((o - y) ** 2), steps=150, fused=fused,
    )
    assert params["w"].dtype == jnp.float64 and params["b"].dtype == jnp.float32
    assert state.z["w"].dtype == jnp.float64 and state.z["b"].dtype == jnp.float32
    np.testing.assert_allclose(np.append(params["w"], params["b"]), w_star, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Composition: chain, MultiSteps, jit
# ---------------------------------------------------------------------------------------------


def test_chain_after_clip_by_global_norm_acts_on_the_gradient():
    params, predict_fn, loss_fn = _mlp_problem()
    opt = optax.chain(
        optax.clip_by_global_norm(1e-3),
        js.curveball(learning_rate=1.0, momentum=0.0, adaptive_damping=False),
    )
    state = opt.init(params)
    grads = jax.jit(jax.grad(lambda p: loss_fn(predict_fn(p))))(params)
    updates, state = _update(opt, grads, state, params, predict_fn, loss_fn)
    # First step: z = 0 so the update is -beta * (clipped gradient).
    np.testing.assert_allclose(optax.tree.norm(updates), 1e-3, rtol=1e-10)


def test_multisteps_accumulates_gradients():
    params, predict_fn, loss_fn = _mlp_problem()
    _, predict_b, loss_b = _mlp_problem(seed=1)  # a second batch (different x, labels)
    rng = np.random.default_rng(7)
    x_b = jnp.asarray(rng.normal(size=(6, 3)))
    predict_b = lambda p: predict_fn(p, x=x_b)  # noqa: E731
    grad = lambda pf: jax.jit(jax.grad(lambda p: loss_fn(pf(p))))(params)  # noqa: E731
    g1, g2 = grad(predict_fn), grad(predict_b)

    multi = optax.MultiSteps(js.curveball(), every_k_schedule=2)
    state = multi.init(params)
    u1, state = _update(multi, g1, state, params, predict_fn, loss_fn)
    assert float(optax.tree.norm(u1)) == 0.0
    u2, state = _update(multi, g2, state, params, predict_b, loss_fn)

    single = js.curveball()
    mean_grad = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    expected, _ = _update(single, mean_grad, single.init(params), params, predict_b, loss_fn)
    chex.assert_trees_all_close(u2, expected, rtol=1e-6)


def test_jit_compiles_once():
    params, predict_fn, loss_fn = _mlp_problem()
    opt = js.curveball()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.grad(lambda p: loss_fn(predict_fn(p)))(params)
        updates, state = opt.update(grads, state, params, predict_fn=predict_fn, loss_fn=loss_fn)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(7):
        params, state = step(params, state)
    assert int(state.count) == 7


def test_inject_hyperparams_schedules_a_fixed_step_size():
    fun, _ = _quadratic()
    opt = optax.inject_hyperparams(js.curveball, static_args=("damping_interval",))(
        learning_rate=optax.linear_schedule(0.05, 0.01, 10), momentum=0.5
    )
    params, state = _run(opt, jnp.zeros(6), lambda w: w, fun, steps=3)
    # the third step (schedule count 2) used beta = 0.05 - 2 * 0.004
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.042, rtol=1e-6)
    np.testing.assert_allclose(state.inner_state.beta, 0.042, rtol=1e-6)
    assert np.all(np.isfinite(params))


def test_inject_hyperparams_needs_no_static_args():
    """inject_hyperparams passes the default damping_interval as an integer array (traced in the
    update): the same steps as the plain transform, with no static_args."""
    fun, _ = _quadratic()
    injected = optax.inject_hyperparams(js.curveball)(learning_rate=0.05, momentum=0.5)
    params, state = _run(injected, jnp.zeros(6), lambda w: w, fun, steps=7)
    plain_params, plain_state = _run(js.curveball(learning_rate=0.05, momentum=0.5), jnp.zeros(6),
                                     lambda w: w, fun, steps=7)
    np.testing.assert_allclose(params, plain_params, rtol=1e-12)
    np.testing.assert_allclose(state.inner_state.damping, plain_state.damping, rtol=1e-12)


def test_state_holds_one_parameter_sized_buffer():
    params, _, _ = _mlp_problem()
    state = js.curveball().init(params)
    n_params = ravel_pytree(params)[0].size
    sizes = [np.size(x) for x in jax.tree.leaves(state)]
    assert sum(sizes) == n_params + 7
    chex.assert_trees_all_equal_structs(state.z, params)


# ---------------------------------------------------------------------------------------------
# Non-finite values and checkpointing
# ---------------------------------------------------------------------------------------------


def test_nonfinite_loss_skips_the_step_and_keeps_the_state_finite():
    params, predict_fn, loss_fn = _mlp_problem()
    opt = js.curveball()
    params, state = _run(opt, params, predict_fn, loss_fn, steps=3)
    assert float(optax.tree.norm(state.z)) > 0

    bad_predict = lambda p: predict_fn(p, x=jnp.full((6, 3), jnp.nan))  # noqa: E731
    bad_grads = jax.jit(jax.grad(lambda p: loss_fn(bad_predict(p))))(params)
    updates, bad_state = _update(opt, bad_grads, state, params, bad_predict, loss_fn)
    assert float(optax.tree.norm(updates)) == 0.0
    assert float(optax.tree.norm(bad_state.z)) == 0.0
    assert int(bad_state.total_notfinite) == 1
    assert int(bad_state.count) == int(state.count)
    assert float(bad_state.damping) == float(state.damping)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(bad_state))

    # The next finite batch proceeds from a gradient step.
    grads = jax.jit(jax.grad(lambda p: loss_fn(predict_fn(p))))(params)
    updates, good_state = _update(opt, grads, bad_state, params, predict_fn, loss_fn)
    assert float(good_state.beta) > 0
    chex.assert_trees_all_close(updates, optax.tree.scale(-good_state.beta, grads), rtol=1e-12)
    assert int(good_state.count) == int(state.count) + 1


@pytest.mark.parametrize(
    "z, delta_z, rho, beta, expected",
    [
        ([1.0, -2.0], [0.5, 3.0], 0.9, 0.1, True),
        ([1.0, np.inf], [0.5, 3.0], 0.9, 0.1, False),  # z not finite
        ([1.0, 2.0], [np.nan, 3.0], 0.9, 0.1, False),  # delta_z not finite
        ([1e30, 2.0], [0.5, 3.0], 1e10, 0.1, False),  # |z|^2 and rho z overflow float32
        ([1.0, 2.0], [0.5, 3.0], 3e38, 0.1, False),  # only rho z overflows
        ([1.0, 2.0], [0.5, 3.0], 0.9, -3e38, False),  # only beta delta_z overflows
    ],
)
def test_new_z_finite_from_the_gram_entries_agrees_with_the_entries(z, delta_z, rho, beta, expected):
    z, delta_z = jnp.asarray(z, jnp.float32), jnp.asarray(delta_z, jnp.float32)
    system = cb._NewtonSystem(jnp.float32(0), delta_z, *(jnp.float32(0),) * 3,
                              *cb._identity_forms(z, delta_z))
    new_z = rho * z - beta * delta_z
    assert bool(cb._tree_all_finite(new_z)) == expected
    assert bool(cb._new_z_finite(system, new_z, jnp.float32(rho), jnp.float32(beta))) == expected


def test_new_z_finite_sees_an_overflow_in_a_float32_leaf_of_mixed_parameters():
    # rho, beta and the Gram entries are float64 when one leaf is; new_z's float32 leaf overflows
    # only when cast back, while |new_z|^2 (1e78) is a finite float64.
    z = {"a": jnp.ones(1, jnp.float32), "b": jnp.ones(1, jnp.float64)}
    delta_z = {"a": jnp.full(1, 1e19, jnp.float32), "b": jnp.ones(1, jnp.float64)}
    rho, beta = jnp.float64(0.9), jnp.float64(-1e20)
    new_z = optax.tree.cast_like(optax.tree.add_scale(optax.tree.scale(rho, z), -beta, delta_z), z)
    system = cb._NewtonSystem(jnp.float64(0), delta_z, *(jnp.float64(0),) * 3,
                              *cb._identity_forms(z, delta_z))
    assert not bool(cb._tree_all_finite(new_z))
    assert not bool(cb._new_z_finite(system, new_z, rho, beta))


def test_nonfinite_trial_at_the_first_step_keeps_the_grown_damping():
    # A log barrier, the defaults: lambda0 = f''(0) = 2 and the step -5 / (2 + 2) leaves the domain
    # (|w| < 1), so the trial loss is NaN: the step is skipped and lambda doubles to 4. The next
    # call keeps that lambda (it is not measured again) and steps to -5 / (2 + 4), inside.
    loss_fn = lambda o: jnp.sum(-jnp.log(1.0 - o**2) + 5.0 * o)  # noqa: E731
    opt = js.curveball()
    params = jnp.array([0.0])
    grads = jax.grad(loss_fn)(params)
    updates, state = _update(opt, grads, opt.init(params), params, lambda w: w, loss_fn)
    assert float(updates[0]) == 0.0 and int(state.total_notfinite) == 1 and int(state.count) == 0
    np.testing.assert_allclose([state.damping, state.damping_growth], [4.0, 4.0], rtol=1e-12)
    updates, state = _update(opt, grads, state, params, lambda w: w, loss_fn)
    np.testing.assert_allclose(updates, [-5.0 / 6.0], rtol=1e-12)
    assert int(state.count) == 1 and int(state.total_notfinite) == 1


def test_consecutive_failures_raise_damping_by_2_4_8_and_a_success_resets_the_growth():
    # Nielsen's rule inside the transform: a log barrier from lambda = 1e-6, adapting every step.
    # Each step -5 / (2 + lambda) leaves the domain |w| < 1 until lambda > 3, so the first seven
    # trials fail: after k, lambda = 1e-6 * 2^(1 + 2 + ... + k) and nu = 2^(k + 1). The 8th step
    # (lambda = 1e-6 * 2^28 ~ 268) stays inside, is taken, and nu returns to 2.
    loss_fn = lambda o: jnp.sum(-jnp.log(1.0 - o**2) + 5.0 * o)  # noqa: E731
    opt = js.curveball(damping=1e-6, damping_interval=1)
    params = jnp.array([0.0])
    grads = jax.grad(loss_fn)(params)
    state = opt.init(params)
    for k in range(1, 8):
        updates, state = _update(opt, grads, state, params, lambda w: w, loss_fn)
        assert float(updates[0]) == 0.0 and int(state.total_notfinite) == k
        np.testing.assert_allclose(state.damping, 1e-6 * 2.0 ** (k * (k + 1) / 2), rtol=1e-12)
        np.testing.assert_allclose(state.damping_growth, 2.0 ** (k + 1))
    updates, state = _update(opt, grads, state, params, lambda w: w, loss_fn)
    np.testing.assert_allclose(updates, [-5.0 / (2.0 + 1e-6 * 2.0**28)], rtol=1e-12)
    assert int(state.count) == 1 and float(state.damping_growth) == 2.0


def test_nonfinite_trial_loss_rejects_the_step_and_grows_damping():
    # A log barrier: the first (undamped) step jumps outside the domain where the loss is inf.
    loss_fn = lambda o: jnp.sum(-jnp.log(1.0 - o**2) + 5.0 * o)  # noqa: E731
    opt = js.curveball(damping=1e-6)
    params = jnp.array([0.0])
    grads = jax.grad(loss_fn)(params)
    updates, state = _update(opt, grads, opt.init(params), params, lambda w: w, loss_fn)
    assert float(updates[0]) == 0.0
    assert int(state.total_notfinite) == 1 and int(state.count) == 0
    assert float(state.damping) > 1e-6


def test_checkpoint_as_numpy_and_resume_gives_identical_trajectory():
    params, predict_fn, loss_fn = _mlp_problem()
    opt = js.curveball()

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: loss_fn(predict_fn(p)))(params)
        updates, state = opt.update(grads, state, params, predict_fn=predict_fn, loss_fn=loss_fn)
        return optax.apply_updates(params, updates), state

    p, s = params, opt.init(params)
    for _ in range(12):
        p, s = step(p, s)
    reference = (p, s)

    p, s = params, opt.init(params)
    for _ in range(6):
        p, s = step(p, s)
    saved = jax.tree.map(np.asarray, (p, s))  # e.g. np.savez / pickle of these arrays
    p, s = jax.tree.map(jnp.asarray, saved)
    assert isinstance(s, js.CurveBallState)
    for _ in range(6):
        p, s = step(p, s)
    chex.assert_trees_all_equal(reference, (p, s))


@pytest.mark.parametrize("scale", [1.0, 128.0])
def test_defaults_train_the_softmax_regression_of_issue_13_for_mean_and_sum_losses(scale):
    # Issue #13: separable softmax regression, 50 steps after clip_by_global_norm(10). The
    # authors' PyTorch defaults (lambda0 = 10, factor 0.999) end at 0.51 (mean loss), this
    # library's previous ones (lambda0 = 1, factor 0.9) at 0.022; Adam at the best learning rate
    # of bench/curveball.py's grid (3) at 2.9e-4, SGD+momentum (3) at 7.3e-3.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype(np.float32)
    y = jnp.asarray(np.argmax(x @ rng.normal(size=(8, 3)).astype(np.float32), axis=1))
    x = jnp.asarray(x)
    params = {"w": jnp.zeros((8, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    predict_fn = lambda p: x @ p["w"] + p["b"]  # noqa: E731
    loss_fn = lambda o: scale * optax.softmax_cross_entropy_with_integer_labels(o, y).mean()  # noqa: E731
    opt = optax.chain(optax.clip_by_global_norm(10.0), js.curveball())
    params, _ = _run(opt, params, predict_fn, loss_fn, steps=50)
    assert float(loss_fn(predict_fn(params))) / scale < 2.9e-4


# ---------------------------------------------------------------------------------------------
# Argument validation and third-party models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"curvature": "fisher"}, ValueError, "curvature"),
        ({"damping": -1.0}, ValueError, "damping"),
        ({"damping": 0.0}, ValueError, "damping"),
        ({"damping_factor": 1.5, "damping_rule": "threshold"}, ValueError, "damping_factor"),
        ({"damping_factor": 0.9}, ValueError, "damping_factor"),  # not Nielsen's
        ({"damping_high": 2.0}, ValueError, "damping_high"),
        ({"damping_interval": 0}, ValueError, "damping_interval"),
        ({"damping_interval": 2.5}, TypeError, "damping_interval"),
        ({"damping_low": 2.0, "damping_high": 1.0, "damping_rule": "threshold"}, ValueError,
         "damping_low"),
        ({"learning_rate": "fast"}, TypeError, "learning_rate"),
        ({"adaptive_damping": 1}, TypeError, "adaptive_damping"),
        ({"damping_rule": "marquardt"}, ValueError, "damping_rule"),
        ({"damped_ratio": "yes"}, TypeError, "damped_ratio"),
        ({"momentum_range": 0.9}, TypeError, "momentum_range"),
        ({"momentum_range": (1.0, 0.5)}, ValueError, "momentum_range"),
        ({"momentum_range": (0.5, "one")}, TypeError, "momentum_range"),
        ({"momentum_range": (np.nan, 1.0)}, ValueError, "momentum_range"),
        ({"damping": np.nan}, ValueError, "damping"),
        ({"damping": np.inf}, ValueError, "damping"),
        ({"learning_rate": np.nan}, ValueError, "learning_rate"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"learning_rate": jnp.asarray(-1.0)}, ValueError, "learning_rate"),
        ({"momentum": np.inf}, ValueError, "momentum"),
        ({"damping_interval": jnp.int32(0)}, ValueError, "damping_interval"),
        ({"damping_interval": jnp.float32(5.0)}, TypeError, "damping_interval"),
    ],
)
def test_invalid_options_raise(kwargs, error, name):
    with pytest.raises(error, match=name):
        js.curveball(**kwargs)


def test_update_requires_predict_and_loss_functions():
    params, predict_fn, _ = _mlp_problem()
    opt = js.curveball()
    state = opt.init(params)
    with pytest.raises(TypeError, match="loss_fn"):
        opt.update(params, state, params, predict_fn=predict_fn)
    with pytest.raises(TypeError, match="predict_fn"):
        opt.update(params, state, params, loss_fn=lambda o: 0.0)
    with pytest.raises(ValueError, match="params"):
        opt.update(params, state, None, predict_fn=predict_fn, loss_fn=lambda o: 0.0)


# flax and equinox models (both are in the `test` extra): a model of each library trains with
# CurveBall and with js.adamw exactly as the same network written in plain JAX with the same
# parameters, and a checkpoint of its state leaves (saved with numpy) resumes bit-identically.


def _third_party_data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 3)))
    return x, jnp.sin(x[:, :2])


def _trainer(opt, predict_fn, loss_fn):
    is_curveball = isinstance(opt, optax.GradientTransformationExtraArgs)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(lambda p: loss_fn(predict_fn(p)))(params)
        if is_curveball:
            updates, state = opt.update(grads, state, params, predict_fn=predict_fn, loss_fn=loss_fn)
        else:
            updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    def train(params, state, steps):
        values = []
        for _ in range(steps):
            params, state, value = step(params, state)
            values.append(float(value))
        return params, state, np.array(values)

    return train


def _check_against_plain_jax(opt, params, predict_fn, plain_params, plain_predict, to_plain):
    _, y = _third_party_data()
    loss_fn = lambda o: jnp.mean((o - y) ** 2)  # noqa: E731
    np.testing.assert_allclose(predict_fn(params), plain_predict(plain_params), rtol=1e-12)
    train = _trainer(opt, predict_fn, loss_fn)
    trained, state, values = train(params, opt.init(params), 10)
    plain_trained, _, plain_values = _trainer(opt, plain_predict, loss_fn)(
        plain_params, opt.init(plain_params), 10
    )
    np.testing.assert_allclose(values, plain_values, rtol=1e-6)
    chex.assert_trees_all_close(to_plain(trained), plain_trained, rtol=1e-6, atol=1e-9)
    assert values[-1] < 0.5 * values[0]
    # Checkpoint after 5 steps: save the leaves with numpy, restore into the treedef, continue.
    p, s, _ = train(params, opt.init(params), 5)
    leaves, treedef = jax.tree.flatten((p, s))
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(leaf) for leaf in leaves])
    buffer.seek(0)
    with np.load(buffer) as saved:
        restored = [jnp.asarray(saved[f"arr_{i}"]) for i in range(len(leaves))]
    p, s = jax.tree.unflatten(treedef, restored)
    p, s, _ = train(p, s, 5)
    chex.assert_trees_all_equal((p, s), (trained, state))


_THIRD_PARTY_OPTIMIZERS = {
    "curveball": lambda: js.curveball(),
    "adamw": lambda: js.adamw(0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(_THIRD_PARTY_OPTIMIZERS))
def test_flax_linen_model_trains_as_the_same_network_in_plain_jax(name):
    import flax.linen as nn

    x, _ = _third_party_data()
    model = nn.Sequential([nn.Dense(8, param_dtype=jnp.float64), nn.tanh,
                           nn.Dense(2, param_dtype=jnp.float64)])
    params = model.init(jax.random.PRNGKey(0), x)
    predict_fn = lambda p: model.apply(p, x)  # noqa: E731

    def to_plain(p):
        layers = p["params"]
        return {k: (layers[f"layers_{i}"]["kernel"], layers[f"layers_{i}"]["bias"])
                for k, i in (("hidden", 0), ("out", 2))}

    def plain_predict(q):
        return jnp.tanh(x @ q["hidden"][0] + q["hidden"][1]) @ q["out"][0] + q["out"][1]

    _check_against_plain_jax(
        _THIRD_PARTY_OPTIMIZERS[name](), params, predict_fn, to_plain(params), plain_predict,
        to_plain,
    )


@pytest.mark.parametrize("name", sorted(_THIRD_PARTY_OPTIMIZERS))
def test_equinox_model_trains_as_the_same_network_in_plain_jax(name):
    import equinox as eqx

    x, _ = _third_party_data()
    model = eqx.nn.MLP(3, 2, 8, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    predict_fn = lambda p: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731

    def to_plain(p):
        return {k: (p.layers[i].weight, p.layers[i].bias) for k, i in (("hidden", 0), ("out", 1))}

    def plain_predict(q):
        return jnp.tanh(x @ q["hidden"][0].T + q["hidden"][1]) @ q["out"][0].T + q["out"][1]

    _check_against_plain_jax(
        _THIRD_PARTY_OPTIMIZERS[name](), params, predict_fn, to_plain(params), plain_predict,
        to_plain,
    )


# --- minimize(method="curveball") ---------------------------------------------------------------


def test_minimize_curveball_solves_a_quadratic_exactly():
    a = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    b = jnp.array([1.0, -1.0, 2.0])
    x0 = {"u": jnp.zeros(2), "v": jnp.zeros(())}
    fun = lambda p: 0.5 * jnp.concatenate([p["u"], p["v"][None]]) @ a @ jnp.concatenate([p["u"], p["v"][None]]) - b @ jnp.concatenate([p["u"], p["v"][None]])
    res = js.minimize(fun, x0, method="curveball", options={"gtol": 1e-10})
    expected = jnp.linalg.solve(a, b)
    assert bool(res.success) and int(res.status) == js.Status.GTOL
    np.testing.assert_allclose(jnp.concatenate([res.x["u"], res.x["v"][None]]), expected, rtol=1e-8)
    assert int(res.njev) == int(res.nit) + 1 and int(res.nfev) > int(res.njev)


def test_minimize_curveball_rosenbrock_and_budget():
    rosen = lambda x: 100.0 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    res = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="curveball")
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)
    capped = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="curveball", options={"maxiter": 5})
    assert int(capped.status) == js.Status.MAXITER and not bool(capped.success) and int(capped.nit) == 5


@pytest.mark.parametrize("maxfun", [0, 1, 2, 4, 5, 7])
def test_minimize_curveball_never_exceeds_maxfun(maxfun):
    # Issue #16 item 8: maxfun 5 gave nfev 6, 2 gave 4, 7 gave 8.
    rosen = lambda x: 100.0 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2  # noqa: E731
    res = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="curveball", options={"maxfun": maxfun})
    assert int(res.status) == js.Status.MAXFUN
    assert int(res.nfev) <= max(maxfun, 1)
    # The budget is used: one more iteration (2 or 3 evaluations) would not have fitted.
    assert int(res.nfev) + 3 > max(maxfun, 1)


def test_minimize_curveball_stops_at_the_last_finite_iterate_before_a_nan_wall():
    fun = lambda x: jnp.sum(jnp.where(x < 1.0, (x - 2.0) ** 2, jnp.nan))  # noqa: E731
    res = js.minimize(fun, jnp.zeros(2), method="curveball", options={"maxiter": 50})
    assert int(res.status) == js.Status.NONFINITE
    assert bool(jnp.all(res.x < 1.0)) and float(res.fun) == float(fun(res.x)) < float(fun(jnp.zeros(2)))


def test_minimize_curveball_disp_prints_iterates_and_the_final_status(capfd):
    res = js.minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(2), method="curveball",
                      options={"disp": True, "maxiter": 3})
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert out.count("iter ") == 4 and "MAXITER" in out and f"nfev = {int(res.nfev)}" in out


def test_minimize_curveball_rejects_bounds_and_unknown_options():
    with pytest.raises(ValueError, match="cannot honour bounds"):
        js.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), method="curveball", bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="valid options.*damping"):
        js.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), method="curveball", options={"maxcor": 3})
