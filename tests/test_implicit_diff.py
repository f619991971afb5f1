"""Derivatives of ``res.x`` and ``res.fun`` in ``args`` by implicit differentiation, for every method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from methods_problems import logistic_loss, logistic_problem

import jaxsecond as js

_rng = np.random.default_rng(0)
A = jnp.asarray(_rng.normal(size=(30, 5)))
B = jnp.asarray(_rng.normal(size=30))


def ridge(w, lam, a, b):
    return 0.5 * jnp.sum((a @ w - b) ** 2) + 0.5 * lam * w @ w


def ridge_closed_form(lam):
    return jnp.linalg.solve(A.T @ A + lam * jnp.eye(5), A.T @ B)


TIGHT = {  # l-bfgs-b is tested on a bounded problem below
    "l-bfgs": {"gtol": 1e-11, "ftol": 0.0}, "bfgs": {"gtol": 1e-11},
    "cg": {"gtol": 1e-11}, "newton": {"gtol": 1e-11}, "newton-cg": {"xtol": 1e-12}, "trust-ncg": {"gtol": 1e-11},
    "curveball": {"gtol": 1e-11, "damping": 1.0},
}


@pytest.mark.parametrize("method", sorted(TIGHT))
def test_ridge_regression_against_closed_form(method):
    def solve(lam):
        return js.minimize(ridge, jnp.zeros(5), args=(lam, A, B), method=method, options=TIGHT[method])

    lam = 2.0
    np.testing.assert_allclose(jax.jacobian(lambda l: solve(l).x)(lam), jax.jacobian(ridge_closed_form)(lam), atol=1e-8)
    # Envelope theorem: d f(x*(lam), lam) / d lam = |x*|^2 / 2.
    expected = jax.grad(lambda l: ridge(ridge_closed_form(l), l, A, B))(lam)
    np.testing.assert_allclose(jax.grad(lambda l: solve(l).fun)(lam), expected, rtol=1e-8)


def test_forward_mode_and_derivative_in_the_data():
    def solve(lam, b):
        return js.minimize(ridge, jnp.zeros(5), args=(lam, A, b), method="newton", options=TIGHT["newton"]).x

    def closed(lam, b):
        return jnp.linalg.solve(A.T @ A + lam * jnp.eye(5), A.T @ b)

    tangents = (1.0, jnp.asarray(_rng.normal(size=30)))
    _, got = jax.jvp(solve, (1.0, B), tangents)
    _, expected = jax.jvp(closed, (1.0, B), tangents)
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_logistic_regression_hyperparameter_gradient_and_descent():
    """The gradient of a validation loss in log(L2 strength), against finite differences, then used."""
    fun, w0, (_, X, y) = logistic_problem()

    def validation(log_l2):
        res = js.minimize(fun, w0, args=(jnp.exp(log_l2), X[:300], y[:300]), method="newton", options={"gtol": 1e-12})
        return logistic_loss(res.x, 0.0, X[300:], y[300:])

    step = jax.jit(jax.value_and_grad(validation))
    log_l2 = jnp.log(0.1)
    value, grad = step(log_l2)
    h = 1e-5
    np.testing.assert_allclose(grad, (validation(log_l2 + h) - validation(log_l2 - h)) / (2 * h), rtol=1e-5)
    first = value
    for _ in range(5):
        log_l2 = log_l2 - grad
        value, grad = step(log_l2)
    assert float(value) < float(first)


def bounded(w, c):
    return jnp.sum((w - c) ** 2) + 0.1 * jnp.sum(w) ** 2


def test_bounded_problem_active_bounds_have_zero_derivative():
    c = jnp.array([1.0, -1.0, 0.5])
    solve = lambda c: js.minimize(bounded, jnp.zeros(3), args=(c,), bounds=(0.0, None), options={"gtol": 1e-12}).x
    jac = jax.jacobian(solve)(c)
    # w1 sits at its bound; the free pair solves (2 I + 0.2 11^T) dw = 2 dc on {0, 2}.
    free = np.linalg.solve(2 * np.eye(2) + 0.2 * np.ones((2, 2)), 2 * np.eye(2))
    expected = np.zeros((3, 3))
    expected[np.ix_([0, 2], [0, 2])] = free
    np.testing.assert_allclose(jac, expected, atol=1e-9)
    # Finite differences agree (the active set does not change for a small perturbation). The
    # objective is quadratic, so a central difference has no truncation error: h = 1e-3 keeps the
    # solves' rounding-level error (|g| ~ 1e-9, where f stops resolving a decrease) below atol.
    h = 1e-3
    for j in range(3):
        e = jnp.zeros(3).at[j].set(h)
        np.testing.assert_allclose((solve(c + e) - solve(c - e)) / (2 * h), jac[:, j], atol=1e-6)


def test_bounded_problem_derivative_of_the_value():
    # Envelope theorem with an active bound: d f(w*(c), c) / dc = df/dc at w* = -2 (w* - c) - the
    # bound does not move. Checked against the closed-form minimiser and finite differences.
    c = jnp.array([1.0, -1.0, 0.5])
    value = lambda c: js.minimize(bounded, jnp.zeros(3), args=(c,), bounds=(0.0, None), options={"gtol": 1e-12}).fun
    free = np.linalg.solve(2 * np.eye(2) + 0.2 * np.ones((2, 2)), 2 * np.asarray(c)[[0, 2]])
    w_star = np.array([free[0], 0.0, free[1]])
    got = jax.grad(value)(c)
    np.testing.assert_allclose(got, -2 * (w_star - np.asarray(c)), atol=1e-9)
    h = 1e-6
    for j in range(3):
        e = jnp.zeros(3).at[j].set(h)
        np.testing.assert_allclose((value(c + e) - value(c - e)) / (2 * h), got[j], atol=1e-6)


def test_grad_through_the_solve_under_jit_and_vmap():
    def total(lam):
        return jnp.sum(js.minimize(ridge, jnp.zeros(5), args=(lam, A, B), method="trust-ncg", options={"gtol": 1e-11}).x)

    lams = jnp.array([0.5, 1.0, 2.0])
    got = jax.jit(jax.vmap(jax.grad(total)))(lams)
    expected = jax.vmap(jax.grad(lambda l: jnp.sum(ridge_closed_form(l))))(lams)
    np.testing.assert_allclose(got, expected, atol=1e-8)
