"""Property tests (hypothesis): random strictly convex problems with known minimisers, random pytree
structures, dtypes and boxes, for every ``minimize`` method. Problem data are traced arguments, so
each (method, structure) pair compiles once."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jaxsecond as js
from jaxsecond.bounds import projected_gradient

STRUCTURES = [
    {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))},
    ({"w": jnp.zeros(4, jnp.float32)}, jnp.zeros(())),  # mixed float32/float64 and a scalar leaf
    [jnp.zeros((2, 3)), (jnp.zeros(1), jnp.zeros(2))],
]
METHODS = ["l-bfgs", "l-bfgs-b", "bfgs", "cg", "newton", "newton-cg", "trust-ncg", "curveball"]
XTOL = 1e-10  # Newton-CG's only test is on the step (average per variable of its L1 norm)


def quadratic(x, hess, lin):
    v, _ = ravel_pytree(x)
    return 0.5 * v @ hess @ v + lin @ v


def logistic(x, features, labels, l2):
    v, _ = ravel_pytree(x)
    logits = features @ v
    return jnp.mean(jnp.logaddexp(0.0, logits) - labels * logits) + 0.5 * l2 * v @ v


def _spd(rng, n, cond):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.T


def _tree(structure, flat):
    return ravel_pytree(structure)[1](jnp.asarray(flat))


def _draw(seed, which):
    """The random generator of a case, its pytree structure and its number of variables."""
    structure = STRUCTURES[which]
    return np.random.default_rng(seed), structure, ravel_pytree(structure)[0].size


def _has_float32(structure):
    return any(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(structure))


def _gtol(structure):
    """1e-8, or 1e-3 with a float32 leaf: its gradient is rounded to about 1e-4 on these problems."""
    return 1e-3 if _has_float32(structure) else 1e-8


def _options(method, gtol):
    """Tight tolerances in each method's own option names; ``ftol = 0`` where a method has one, so
    its relative-reduction test fires only when ``f`` stops decreasing at all."""
    if method == "newton-cg":
        return {"xtol": XTOL}
    return {"gtol": gtol, **({"ftol": 0.0} if method in ("l-bfgs", "l-bfgs-b", "newton") else {})}


def _assert_honest(res, method, gradient, gtol, float32, hess_norm=None, lower=None, upper=None):
    """What a reported success guarantees, per status, checked with the gradient recomputed in
    float64 at the returned point (``gradient(x)``), not with the solver's own ``res.jac``:

    * ``GTOL``: the projected gradient's infinity norm is at most gtol (trust-ncg tests the 2-norm,
      which is larger);
    * ``FTOL`` (ftol = 0 here): ``f`` stopped decreasing at all, at a rounding-level gradient;
    * ``XTOL`` (Newton-CG): the last Newton step was below xtol, so ``|g|_1 <= 2 |H|_1 n xtol`` (the
      inner CG stops at a residual of at most half the gradient), or the line search was stopped by
      rounding where ``|g|_1 <= n sqrt(eps) max(|f|, 1)``.

    A failure must be at a point that does not meet gtol and can only be a line search stalled by
    rounding (as scipy's L-BFGS-B does); never NaN or a budget. The reported gradient must belong to
    the reported point (to the rounding of float32 leaves)."""
    x = np.asarray(ravel_pytree(res.x)[0], np.float64)
    g = gradient(x)
    slack = 1e-3 if float32 else 1e-9  # float32 leaves compute their gradient in float32
    np.testing.assert_allclose(np.asarray(ravel_pytree(res.jac)[0]), g, atol=slack)
    lower = np.full_like(x, -np.inf) if lower is None else np.asarray(lower)
    upper = np.full_like(x, np.inf) if upper is None else np.asarray(upper)
    pg = np.abs(np.asarray(projected_gradient(jnp.asarray(x), jnp.asarray(g), jnp.asarray(lower), jnp.asarray(upper))))
    # trust-ncg's gtol is on the 2-norm: the larger one, so a success meets the infinity norm too.
    pg = float(np.linalg.norm(pg) if method == "trust-ncg" else np.max(pg))
    status = int(res.status)
    if not bool(res.success):
        assert status == js.Status.LINESEARCH_FAILED and pg > gtol - slack, (method, res.message, pg)
    elif status == js.Status.GTOL:
        assert pg <= gtol + slack, (method, pg)
    elif status == js.Status.XTOL:
        g1 = float(np.sum(np.abs(g)))
        small_step = g1 <= 2 * hess_norm * x.size * XTOL + x.size * slack
        rounding = g1 <= x.size * (np.sqrt(np.finfo(np.float64).eps) * max(abs(float(res.fun)), 1.0) + slack)
        assert method == "newton-cg" and (small_step or rounding), (g, res.message)
    else:
        # FTOL: a user's ftol (l-bfgs(-b), newton), or a stall at a rounding-level gradient (every
        # line-search method); trust-ncg and CurveBall have no line search.
        assert status == js.Status.FTOL and method not in ("trust-ncg", "curveball"), (method, res.message)


# Derandomized so CI is reproducible; run with JAXSECOND_HYPOTHESIS_EXAMPLES=500 to search wider.
common = settings(
    max_examples=int(os.environ.get("JAXSECOND_HYPOTHESIS_EXAMPLES", 25)),
    deadline=None,
    derandomize="JAXSECOND_HYPOTHESIS_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("method", METHODS)
@common
@given(st.integers(0, 2**31 - 1), st.sampled_from(range(len(STRUCTURES))), st.floats(1.0, 1e3))
def test_unconstrained_quadratic_reaches_known_minimiser(method, seed, which, cond):
    rng, structure, n = _draw(seed, which)
    hess, lin = _spd(rng, n, cond), rng.normal(size=n)
    x0 = _tree(structure, rng.normal(size=n) * 3)
    gtol = _gtol(structure)
    res = js.minimize(quadratic, x0, args=(hess, lin), method=method, options=_options(method, gtol))
    assert float(res.fun) <= float(quadratic(x0, hess, lin))  # never worse than the start
    xstar = -np.linalg.solve(hess, lin)
    _assert_honest(
        res, method, lambda x: hess @ x + lin, gtol, _has_float32(structure), hess_norm=np.abs(hess).sum(0).max()
    )
    # |x - x*| <= |H^-1| |g|_2 = |g|_2 (the smallest eigenvalue is 1); Newton-CG's XTOL allows
    # |g|_1 up to 2 |H|_1 n xtol, about 5e-6 here.
    np.testing.assert_allclose(ravel_pytree(res.x)[0], xstar, atol=5e-3 if gtol > 1e-6 else 1e-5)
    assert jax.tree.structure(res.x) == jax.tree.structure(x0)


@common
@given(st.integers(0, 2**31 - 1), st.sampled_from(range(len(STRUCTURES))))
def test_box_quadratic_stays_in_box_and_reaches_clipped_minimiser(seed, which):
    # Diagonal Hessian: the box-constrained minimiser is the unconstrained one clipped to the box.
    rng, structure, n = _draw(seed, which)
    diag, centre = rng.uniform(0.1, 10.0, n), rng.normal(size=n) * 2
    lower = np.where(rng.random(n) < 0.7, rng.uniform(-2, 0, n), -np.inf)
    upper = np.where(rng.random(n) < 0.7, rng.uniform(0, 2, n), np.inf)
    # Bounds as the leaves hold them (a float32 leaf rounds its bounds to float32).
    lower_tree, upper_tree = _tree(structure, lower), _tree(structure, upper)
    lower, upper = (np.asarray(ravel_pytree(t)[0]) for t in (lower_tree, upper_tree))
    x0 = _tree(structure, rng.normal(size=n) * 3)  # may start outside: projected
    # gtol 1e-8 even with a float32 leaf: L-BFGS-B's ftol = 0 test then stops where f stops falling.
    gtol = 1e-8
    res = js.minimize(
        quadratic, x0, args=(np.diag(diag), -diag * centre), bounds=(lower_tree, upper_tree),
        options=_options("l-bfgs-b", gtol),
    )
    x = np.asarray(ravel_pytree(res.x)[0])
    assert np.all(x >= lower) and np.all(x <= upper)
    x0_in_box = jax.tree.map(lambda v, lo, up: jnp.clip(v, lo, up), x0, lower_tree, upper_tree)
    assert float(res.fun) <= float(quadratic(x0_in_box, np.diag(diag), -diag * centre))
    _assert_honest(
        res, "l-bfgs-b", lambda x: diag * (x - centre), gtol, _has_float32(structure), lower=lower, upper=upper
    )
    # A float32 leaf is evaluated at float32 points: f is resolved to ~1e-7 relative, and the
    # relative-reduction test stops where x is good to about the square root of that.
    atol = 1e-4 if _has_float32(structure) else 1e-6
    np.testing.assert_allclose(x, np.clip(centre, lower, upper), atol=atol)


@pytest.mark.parametrize("method", METHODS)
@common
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1.0))
def test_logistic_regression_success_means_small_gradient(method, seed, l2):
    # The minimiser is not known in closed form: check first-order optimality of what is reported,
    # with each method's default tolerances.
    rng, structure, n = _draw(seed, 0)
    features = rng.normal(size=(40, n))
    labels = (rng.random(40) < 0.5).astype(float)
    res = js.minimize(logistic, _tree(structure, np.zeros(n)), args=(features, labels, l2), method=method)
    assert float(res.fun) <= float(logistic(_tree(structure, np.zeros(n)), features, labels, l2))
    x = np.asarray(ravel_pytree(res.x)[0])
    g = features.T @ (1 / (1 + np.exp(-features @ x)) - labels) / len(labels) + l2 * x  # independent
    np.testing.assert_allclose(np.asarray(ravel_pytree(res.jac)[0]), g, atol=1e-12)
    assert bool(res.success), res.message
    if int(res.status) == js.Status.GTOL:  # every default gtol is at most 1e-4 (trust-ncg's 2-norm)
        assert np.max(np.abs(g)) <= 1e-4
    # Strong convexity (l2 > 0): |x - x*| <= |g| / l2, and the minimiser satisfies it to 1e-3 / l2.
    assert np.max(np.abs(g)) <= 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_vmap_one_failing_problem_leaves_the_others_unchanged(method):
    def fun(x, a):
        return jnp.sum((x - a) ** 2) + jnp.sum(x**4) + jnp.log(a)  # NaN for a < 0

    shifts = jnp.array([0.5, -1.0, 2.0])
    batched = jax.vmap(lambda a: js.minimize(fun, jnp.zeros(3), args=(a,), method=method))(shifts)
    assert list(np.asarray(batched.success)) == [True, False, True]
    assert int(batched.status[1]) == js.Status.NONFINITE
    for i in (0, 2):
        single = js.minimize(fun, jnp.zeros(3), args=(shifts[i],), method=method)
        np.testing.assert_array_equal(batched.x[i], single.x)
        assert int(batched.nfev[i]) == int(single.nfev) and int(batched.status[i]) == int(single.status)


def _curveball_least_squares(x0, features, targets, steps=200):
    """200 CurveBall steps (fused form) on 0.5 mean((A v - b)^2), v the flattened parameters."""
    opt = js.curveball(damping=1.0)
    predict = lambda p: features @ ravel_pytree(p)[0]
    loss = lambda out: 0.5 * jnp.mean((out - targets) ** 2)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(None, state, params, predict_fn=predict, loss_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
    return params, state


_curveball_least_squares_jit = jax.jit(_curveball_least_squares)


@common
@given(st.integers(0, 2**31 - 1), st.sampled_from(range(len(STRUCTURES))))
def test_curveball_transform_reaches_least_squares_solution(seed, which):
    # Random pytree structures (mixed float32/float64 leaves included), random well-posed least
    # squares: the Gauss-Newton matrix is the exact Hessian and the minimiser is numpy's lstsq.
    rng, structure, n = _draw(seed, which)
    features, targets = rng.normal(size=(3 * n, n)), rng.normal(size=3 * n)
    x0 = _tree(structure, rng.normal(size=n))
    params, state = _curveball_least_squares_jit(x0, features, targets)
    assert jax.tree.map(lambda p: p.dtype, params) == jax.tree.map(lambda p: p.dtype, x0)
    assert int(state.total_notfinite) == 0
    xstar = np.linalg.lstsq(features, targets, rcond=None)[0]
    # The damping rule compares loss changes, which resolves x only to about sqrt(eps) of the loss
    # scale: 200 steps reach 6e-8 cond(A) at worst over 180 cases, and more steps do not go further.
    np.testing.assert_allclose(ravel_pytree(params)[0], xstar, atol=1e-6 * np.linalg.cond(features))


def test_projected_gradient_is_zero_exactly_at_kkt_points():
    x = jnp.array([0.0, 1.0, 0.5])
    g = jnp.array([2.0, -3.0, 0.0])  # pushing out of the box at both bounds, stationary inside
    np.testing.assert_array_equal(projected_gradient(x, g, jnp.zeros(3), jnp.ones(3)), jnp.zeros(3))
