"""Trust-region Newton-CG (Steihaug–Toint) against scipy's ``method="trust-ncg"``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from methods_problems import PROBLEMS, logistic_problem, scipy_minimize, solve_both
from scipy.optimize._trustregion_ncg import CGSteihaugSubproblem

import jaxsecond as js
from jaxsecond.trust_region import steihaug_cg


@pytest.mark.parametrize("name", ["rosenbrock", "wood", "ext_rosenbrock_10"])
def test_trust_ncg_matches_scipy(name):
    res, ref = solve_both(name, "trust-ncg")
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    # Same radius rule and subproblem: the same number of trial points (one evaluation each).
    assert abs(int(res.nit) - ref.nit) <= 2
    assert int(res.nfev) <= ref.nfev + 2


def test_trust_ncg_logistic_regression_and_options():
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="trust-ncg", options={"gtol": 1e-8, "initial_trust_radius": 0.1})
    ref = scipy_minimize(fun, w0, "trust-ncg", args=args, gtol=1e-8, initial_trust_radius=0.1)
    assert bool(res.success) and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-7)
    assert abs(int(res.nit) - ref.nit) <= 2
    assert float(jnp.linalg.norm(res.jac)) < 1e-8


def _scipy_steihaug(hess, g, radius):
    """scipy's own Steihaug-Toint subproblem solver (used by its trust-ncg) on the same model."""
    hess, g = np.asarray(hess), np.asarray(g)
    sub = CGSteihaugSubproblem(np.zeros(len(g)), lambda x: 0.0, lambda x: g, hess=lambda x: hess)
    return sub.solve(radius)


def _indefinite(seed, n=5):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    return m + m.T, rng.normal(size=n)


@pytest.mark.parametrize(
    "hess, g, radius",
    [
        (np.diag([2.0, -1.0]), np.array([1.0, 0.5]), 3.0),  # negative curvature at the second direction
        (np.diag([-1.0, 2.0]), np.array([1.0, 0.0]), 2.0),  # ... at the first: p = -radius g / |g|
        (*_indefinite(0), 2.0),
        (*_indefinite(1), 2.0),
    ],
)
def test_steihaug_follows_negative_curvature_to_the_boundary(hess, g, radius):
    p, hits = steihaug_cg(lambda v: jnp.asarray(hess) @ v, jnp.asarray(g), radius)
    p_ref, hits_ref = _scipy_steihaug(hess, g, radius)
    assert bool(hits) and hits_ref
    np.testing.assert_allclose(p, p_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.linalg.norm(p), radius, rtol=1e-12)
    if np.count_nonzero(g) == 1:
        np.testing.assert_allclose(p, -radius * g / np.linalg.norm(g), rtol=1e-12)


def test_steihaug_interior_solution_is_the_newton_step():
    a = np.random.default_rng(1).normal(size=(5, 5))
    hess = jnp.asarray(a @ a.T + 5 * np.eye(5))
    g = jnp.asarray(np.random.default_rng(2).normal(size=5)) * 1e-3
    p, hits = steihaug_cg(lambda v: hess @ v, g, 10.0)
    assert not bool(hits)
    newton = -np.linalg.solve(hess, g)
    assert np.linalg.norm(p - newton) <= min(0.5, np.sqrt(np.linalg.norm(g))) * np.linalg.norm(g) / 5


def test_trust_ncg_vmap_each_problem_stops_on_its_own():
    fun = PROBLEMS["rosenbrock"][0]
    x0 = jnp.array([[-1.2, 1.0], [0.9, 0.8]])
    res = jax.vmap(lambda x: js.minimize(fun, x, method="trust-ncg"))(x0)
    assert bool(jnp.all(res.success))
    single = js.minimize(fun, x0[1], method="trust-ncg")
    assert int(res.nit[1]) == int(single.nit) < int(res.nit[0])


@pytest.mark.parametrize("x0", [3e-5, 1e-5, 3e-6])
def test_a_step_below_the_rounding_of_f_is_judged_by_the_model(x0):
    """1e8 + a quadratic: the Newton step's reduction (< 7e-9) is below f's rounding (1.5e-8), so
    the plain ratio of reductions is noise; without the shifted ratio every step was refused and the
    radius collapsed (LINESEARCH_FAILED after 250 iterations, |g| ~ 1e-4)."""
    d = jnp.arange(1.0, 6.0)
    res = js.minimize(lambda x: 1e8 + 0.5 * jnp.sum(d * x**2), jnp.full(5, x0), method="trust-ncg",
                      options={"gtol": 1e-9})
    assert int(res.status) == js.Status.GTOL and int(res.nit) == 1
    np.testing.assert_allclose(res.x, 0.0, atol=1e-15)
