"""Dense BFGS against scipy's ``method="BFGS"``: same line search, same first steps, same iterates."""

import jax.numpy as jnp
import numpy as np
import pytest
from methods_problems import logistic_problem, scipy_minimize, solve_both

import jaxsecond as js


@pytest.mark.parametrize("name", ["rosenbrock", "beale", "powell_singular", "wood"])
def test_bfgs_matches_scipy(name):
    res, ref = solve_both(name, "bfgs")
    np.testing.assert_allclose(res.x, ref.x, atol=1e-5)
    # The same algorithm and search: the iteration and evaluation counts agree up to rounding.
    assert abs(int(res.nit) - ref.nit) <= 2
    assert int(res.nfev) <= ref.nfev + 2


def test_bfgs_logistic_regression_matches_scipy():
    fun, w0, args = logistic_problem()
    res = js.minimize(fun, w0, args=args, method="BFGS")
    ref = scipy_minimize(fun, w0, "bfgs", args=args)
    assert bool(res.success) and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-4)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-9)
    assert int(res.nfev) <= 1.1 * ref.nfev + 2
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-5
