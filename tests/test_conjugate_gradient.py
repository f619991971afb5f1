"""Polak–Ribière+ nonlinear CG against scipy's ``method="CG"``, and the methods that reject bounds."""

import jax.numpy as jnp
import numpy as np
import pytest
from methods_problems import PROBLEMS, logistic_problem, rosen, scipy_minimize, solve_both

import jaxsecond as js


@pytest.mark.parametrize("name", ["rosenbrock", "beale", "powell_singular"])
def test_cg_matches_scipy(name):
    res, ref = solve_both(name, "cg")
    np.testing.assert_allclose(res.fun, PROBLEMS[name][2], atol=1e-6)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-2)
    # scipy's extra descent test inside its line search is a restart here: counts differ a little.
    assert int(res.nit) <= 1.2 * ref.nit + 5
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-5


def test_cg_logistic_regression_matches_scipy():
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="CG")
    ref = scipy_minimize(fun, w0, "cg", args=args)
    assert bool(res.success) and ref.success
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-9)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-3)
    assert int(res.nfev) <= 1.2 * ref.nfev + 5


@pytest.mark.parametrize("method", ["bfgs", "cg", "newton", "newton-cg", "trust-ncg"])
def test_bounds_with_a_method_that_cannot_honour_them(method):
    with pytest.raises(ValueError, match="cannot honour bounds"):
        js.minimize(rosen, jnp.zeros(2), method=method, bounds=(0.0, 1.0))


@pytest.mark.parametrize(
    "method, options",
    [("cg", {"maxcor": 5}), ("bfgs", {"ftol": 1e-3}), ("trust-ncg", {"maxls": 3}), ("newton-cg", {"gtol": 1e-3})],
)
def test_options_of_other_methods_are_rejected(method, options):
    with pytest.raises(ValueError, match="unknown option"):
        js.minimize(rosen, jnp.zeros(2), method=method, options=options)


def test_aliases_and_case():
    # Any case selects CG itself: the same x, nit and nfev (every method's spellings are checked in
    # test_optimize.py); an unknown name lists every valid one.
    res = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="cg")
    for spelling in ("CG", "Cg"):
        other = js.minimize(rosen, jnp.array([-1.2, 1.0]), method=spelling)
        np.testing.assert_array_equal(other.x, res.x)
        assert (int(other.nit), int(other.nfev)) == (int(res.nit), int(res.nfev))
    valid = ["bfgs", "cg", "curveball", "l-bfgs", "l-bfgs-b", "lbfgs", "lbfgsb", "newton", "newton-cg",
             "newtoncg", "trust-ncg", "trustncg"]
    with pytest.raises(ValueError) as error:
        js.minimize(rosen, jnp.zeros(2), method="trust-krylov")
    assert str(error.value) == f"unknown method 'trust-krylov'; valid methods are {valid}"
