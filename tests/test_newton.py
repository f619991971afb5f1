"""Newton (exact Hessian, modified Cholesky) and truncated Newton (scipy's Newton-CG)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from methods_problems import logistic_problem, scipy_minimize, solve_both

import jaxsecond as js
from jaxsecond.newton import shifted_cholesky_solve


@pytest.mark.parametrize("name", ["rosenbrock", "beale", "powell_singular"])
def test_newton_cg_matches_scipy(name):
    res, ref = solve_both(name, "newton-cg")
    assert int(res.status) == js.Status.XTOL
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert abs(int(res.nit) - ref.nit) <= 2
    assert int(res.nfev) <= ref.nfev + 2


@pytest.mark.parametrize("name", ["rosenbrock", "beale", "powell_singular", "wood"])
def test_newton_solves_what_trust_exact_solves(name):
    res, ref = solve_both(name, "newton")
    np.testing.assert_allclose(res.fun, ref.fun, atol=1e-6)
    np.testing.assert_allclose(res.x, ref.x, atol=2e-2)  # Powell's singular minimiser is flat
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-8
    assert int(res.nit) <= 1.2 * ref.nit + 8


def test_newton_converges_quadratically_on_logistic_regression():
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="newton", options={"gtol": 1e-10})
    assert bool(res.success) and int(res.nit) <= 10
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-10
    ref = scipy_minimize(fun, w0, "newton", args=args, gtol=1e-10)  # trust-exact
    np.testing.assert_allclose(res.x, ref.x, atol=1e-8)
    # |g| after k iterations, by reruns with maxiter=k (a numeric option: no recompilation).
    norms = [
        float(jnp.max(jnp.abs(js.minimize(fun, w0, args=args, method="newton", options={"gtol": 1e-10, "maxiter": k}).jac)))
        for k in range(int(res.nit) + 1)
    ]
    # Quadratic in the last two steps: |g+| <= C |g|^2 (a linear rate of 0.1 would be 1e5 times slower).
    for before, after in zip(norms[-3:-1], norms[-2:]):
        assert after <= 100 * before**2
    assert all(b < a for a, b in zip(norms, norms[1:]))


def saddle(p):
    return p[0] ** 2 - p[1] ** 2 + p[1] ** 4 / 4  # minima at (0, ±sqrt 2), saddle at 0


def test_indefinite_start_descends_where_plain_newton_goes_uphill():
    x0 = jnp.array([0.01, 0.5])
    g, hess = jax.grad(saddle)(x0), jax.hessian(saddle)(x0)
    assert np.linalg.eigvalsh(hess).min() < 0
    plain = -np.linalg.solve(hess, g)
    assert g @ plain > 0  # the plain Newton step is an ascent direction in y
    modified = -shifted_cholesky_solve(hess, g)
    assert g @ modified < 0
    first = js.minimize(saddle, x0, method="newton", options={"maxiter": 1})
    assert float(first.fun) < float(saddle(x0))
    res = js.minimize(saddle, x0, method="newton")
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [0.0, np.sqrt(2.0)], atol=1e-8)
    np.testing.assert_allclose(res.fun, -1.0, atol=1e-12)


def test_shifted_cholesky_is_plain_newton_on_positive_definite_matrices():
    a = np.random.default_rng(0).normal(size=(6, 6))
    hess = jnp.asarray(a @ a.T + np.eye(6))
    rhs = jnp.arange(6.0)
    np.testing.assert_allclose(shifted_cholesky_solve(hess, rhs), np.linalg.solve(hess, rhs), rtol=1e-10)


def test_newton_refuses_problems_too_large_for_a_dense_hessian():
    with pytest.raises(ValueError, match="newton-cg"):
        js.minimize(lambda x: jnp.sum(x**2), jnp.zeros(20001), method="newton")


def test_newton_on_a_pytree_under_jit_and_vmap():
    def quad(p, c):
        return jnp.sum((p["a"] - c) ** 2) + (p["b"] - 2 * c) ** 2 + 0.5 * jnp.sum(p["a"]) * p["b"]

    # Closed form: over (a1, a2, b) the Hessian is H below and the minimiser solves H x = c (2, 2, 4).
    hess = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.5, 0.5, 2.0]])
    cs = jnp.array([0.0, 1.0, -3.0])
    starts = {"a": jnp.array([[0.0, 0.0], [5.0, -1.0], [-2.0, 7.0]]), "b": jnp.array([0.0, 3.0, -4.0])}
    solve = jax.jit(jax.vmap(lambda p0, c: js.minimize(quad, p0, args=(c,), method="newton")))
    res = solve(starts, cs)
    assert bool(jnp.all(res.success))
    for i, c in enumerate(np.asarray(cs)):
        x_star = np.linalg.solve(hess, c * np.array([2.0, 2.0, 4.0]))
        np.testing.assert_allclose(res.x["a"][i], x_star[:2], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.x["b"][i], x_star[2], rtol=0, atol=1e-12)
        single = js.minimize(quad, jax.tree.map(lambda leaf: leaf[i], starts), args=(c,), method="newton")
        np.testing.assert_allclose(res.x["a"][i], single.x["a"], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(res.x["b"][i], single.x["b"], rtol=1e-14, atol=1e-15)
        assert (int(res.nit[i]), int(res.nfev[i])) == (int(single.nit), int(single.nfev))
    # A quadratic: one Newton step from a start off the minimiser, none from the minimiser itself.
    np.testing.assert_array_equal(res.nit, [0, 1, 1])


def test_newton_cg_logistic_regression_matches_scipy():
    # Ends where the inner CG proposes no step (curvature along -g below rounding): scipy's success.
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="newton-cg")
    ref = scipy_minimize(fun, w0, "newton-cg", args=args)
    assert bool(res.success) and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert int(res.nfev) <= ref.nfev + 1


def test_newton_with_an_unreachable_gtol_stops_at_the_rounding_floor():
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="newton", options={"gtol": 0.0})
    assert int(res.status) in (js.Status.FTOL, js.Status.GTOL) and int(res.nit) < 20
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-12
