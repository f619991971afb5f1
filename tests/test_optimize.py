"""``js.minimize`` end to end: against scipy's L-BFGS-B, on pytrees, under jit/vmap, and on bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxsecond as js
from jaxsecond import optimize
from jaxsecond import problems
from jaxsecond.bounds import projected_gradient

METHODS = ["l-bfgs", "l-bfgs-b"]
SCIPY = {"ftol": 2.220446049250313e-09}  # scipy's L-BFGS-B default ftol: scipy's iterates exactly


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def scipy_lbfgsb(fun, x0, bounds=None, **options):
    vg = jax.jit(jax.value_and_grad(fun))
    return so.minimize(
        lambda x: tuple(np.asarray(v) for v in vg(x)), np.asarray(x0, float), jac=True,
        method="L-BFGS-B", bounds=bounds, options=options,
    )


ALL_PROBLEMS = {p.name: p for p in problems.mgh_problems() + problems.bounded_problems()}


@pytest.mark.parametrize("name", sorted(ALL_PROBLEMS))
def test_problem_set_against_scipy(name):
    """Every problem of the set that scipy's L-BFGS-B solves, we solve, with as few evaluations."""
    p = ALL_PROBLEMS[name]
    bounds = None if p.lower is None else (jnp.asarray(p.lower), jnp.asarray(p.upper))
    x0 = np.clip(p.x0, p.lower, p.upper) if p.bounded else p.x0
    res = js.minimize(p.fun, jnp.asarray(x0), bounds=bounds, options=SCIPY)
    ref = scipy_lbfgsb(p.fun, x0, bounds=None if p.lower is None else list(zip(p.lower, p.upper)))
    assert int(res.njev) == int(res.nfev)
    if int(res.status) == js.Status.GTOL:  # the reported gradient really is that small
        lower = np.full(p.n, -np.inf) if p.lower is None else p.lower
        upper = np.full(p.n, np.inf) if p.upper is None else p.upper
        pg = projected_gradient(res.x, res.jac, jnp.asarray(lower), jnp.asarray(upper))
        assert float(jnp.max(jnp.abs(pg))) <= 1e-5
    if problems.reached_minimum(p, ref.fun):
        assert problems.reached_minimum(p, float(res.fun)), (float(res.fun), ref.fun)
        # Same algorithm and line search as scipy: the counts agree up to rounding effects.
        assert int(res.nfev) <= ref.nfev + max(3, 0.1 * ref.nfev), (int(res.nfev), ref.nfev)
        if p.bounded:
            np.testing.assert_allclose(res.x, ref.x, atol=1e-4)


def test_bounded_rosenbrock_matches_scipy_exactly():
    lower, upper = jnp.array([-2.0, 1.5]), jnp.array([2.0, 3.0])
    res = js.minimize(rosen, jnp.array([-1.2, 2.0]), bounds=(lower, upper), options=SCIPY)
    ref = scipy_lbfgsb(rosen, [-1.2, 2.0], bounds=list(zip(lower, upper)))
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7)
    assert (int(res.nit), int(res.nfev)) == (ref.nit, ref.nfev)
    assert float(res.x[1]) == 1.5  # the active bound is met exactly


@pytest.mark.parametrize("seed", range(5))
def test_random_box_qp_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = 12
    a = rng.normal(size=(n, n))
    hess, lin = a @ a.T / n + 0.1 * np.eye(n), rng.normal(size=n) * 3
    lower = np.where(rng.random(n) < 0.7, -rng.random(n), -np.inf)
    upper = np.where(rng.random(n) < 0.7, rng.random(n), np.inf)
    fun = lambda x: 0.5 * x @ (jnp.asarray(hess) @ x) + jnp.asarray(lin) @ x
    x0 = np.clip(rng.normal(size=n), lower, upper)
    res = js.minimize(fun, jnp.asarray(x0), bounds=(jnp.asarray(lower), jnp.asarray(upper)),
        options={"gtol": 1e-10, "ftol": 1e-14},
    )
    ref = scipy_lbfgsb(fun, x0, bounds=list(zip(lower, upper)), gtol=1e-10, ftol=1e-14)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert np.all(np.asarray(res.x) >= lower) and np.all(np.asarray(res.x) <= upper)
    assert np.any((np.asarray(res.x) == lower) | (np.asarray(res.x) == upper))  # constraints active


def test_diagonal_box_qp_closed_form():
    # min sum d_i (x_i - c_i)^2 over a box: the solution is clip(c, lower, upper).
    d, c = jnp.array([1.0, 4.0, 0.5, 2.0]), jnp.array([2.0, -3.0, 0.2, 5.0])
    lower, upper = jnp.array([-1.0, -1.0, -1.0, -1.0]), jnp.array([1.0, 1.0, 1.0, 1.0])
    res = js.minimize(lambda x: jnp.sum(d * (x - c) ** 2), jnp.zeros(4), bounds=(lower, upper))
    np.testing.assert_allclose(res.x, jnp.clip(c, lower, upper), atol=1e-8)


def test_nonnegative_least_squares_matches_scipy_nnls():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 10)), rng.normal(size=30)
    fun = lambda x: 0.5 * jnp.sum((jnp.asarray(a) @ x - jnp.asarray(b)) ** 2)
    res = js.minimize(fun, jnp.ones(10), bounds=(0.0, None), tol=1e-12)
    x_ref, _ = so.nnls(a, b)
    np.testing.assert_allclose(res.x, x_ref, atol=1e-7)
    assert 0 < int(np.sum(x_ref == 0)) < 10  # the reference has active and inactive constraints


def test_logistic_regression_matches_scipy_on_breast_cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target.astype(float)
    X, Y = jnp.asarray(x), jnp.asarray(y)

    def loss(params, l2):
        logits = X @ params["w"] + params["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - Y * logits) + 0.5 * l2 * params["w"] @ params["w"]

    p0 = {"w": jnp.zeros(x.shape[1]), "b": jnp.array(0.0)}
    res = js.minimize(loss, p0, args=(1e-2,), options={"gtol": 1e-10, "ftol": 1e-14})
    flat = lambda v: loss({"w": v[:-1], "b": v[-1]}, 1e-2)
    ref = scipy_lbfgsb(flat, np.zeros(x.shape[1] + 1), gtol=1e-10, ftol=1e-14)
    np.testing.assert_allclose(res.x["w"], ref.x[:-1], atol=1e-5)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-10)


def test_dict_minimize_seed_example():
    def rosen_obj(params, shift):
        X, Y = params["x_half_a"] - shift, params["x_half_b"] - shift
        return 100 * (X[1] - X[0] ** 2) ** 2 + (1 - X[0]) ** 2 + 100 * (Y[1] - Y[0] ** 2) ** 2 + (1 - Y[0]) ** 2

    p0 = {"x_half_a": jnp.array([-1.2, 1.0]), "x_half_b": jnp.array([0.5, -0.5])}
    res = js.minimize(rosen_obj, p0, args=(-1.0,), method="l-bfgs-b")
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, {"x_half_a": jnp.zeros(2), "x_half_b": jnp.zeros(2)}, atol=1e-4)


def test_pytrees_of_mixed_shapes_and_dtypes():
    class Params(tuple):
        pass

    target = {"a": {"m": jnp.arange(6.0).reshape(2, 3)}, "t": (jnp.array(2.0), jnp.ones(4, jnp.float32))}
    x0 = jax.tree.map(jnp.zeros_like, target)
    fun = lambda p: sum(jnp.sum((u - v) ** 2) for u, v in zip(jax.tree.leaves(p), jax.tree.leaves(target)))
    res = js.minimize(fun, x0)
    assert jax.tree.structure(res.x) == jax.tree.structure(x0)
    assert res.x["t"][1].dtype == jnp.float32 and res.x["t"][0].dtype == jnp.float64
    chex.assert_trees_all_close(res.x, target, atol=1e-6)
    chex.assert_trees_all_close(res.jac, jax.tree.map(jnp.zeros_like, target), atol=1e-5)


@pytest.mark.parametrize("method", ["l-bfgs", "l-bfgs-b", "bfgs", "cg", "newton", "newton-cg", "trust-ncg", "curveball"])
@pytest.mark.parametrize("n", [2, 4])
def test_float32(method, n):
    x0 = jnp.array([-1.2, 1.0] * (n // 2), jnp.float32)
    res = js.minimize(rosen, x0, method=method)
    assert res.x.dtype == jnp.float32 and res.fun.dtype == jnp.float32
    np.testing.assert_allclose(res.x, np.ones(n), atol=1e-4)
    if method == "cg":
        # CG has no test on f: below gtol = 1e-5 the float32 gradient is rounding noise, and the
        # searches keep creeping until maxiter. A gtol above the noise ends it.
        assert int(res.status) == js.Status.MAXITER
        assert bool(js.minimize(rosen, x0, method=method, options={"gtol": 1e-4}).success)
    else:
        assert bool(res.success), res.message


@pytest.mark.parametrize("jac_kind", ["true", "callable"])
def test_user_supplied_gradient(jac_kind):
    grad = jax.grad(rosen)
    x0 = jnp.array([-1.2, 1.0])
    if jac_kind == "true":
        res = js.minimize(lambda x: (rosen(x), grad(x)), x0, jac=True)
    else:
        res = js.minimize(rosen, x0, jac=grad)
    ref = js.minimize(rosen, x0)
    np.testing.assert_allclose(res.x, ref.x)
    assert int(res.nfev) == int(ref.nfev)


def test_bounds_as_pytrees_with_none_and_scalars():
    x0 = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    fun = lambda p: jnp.sum((p["a"] - 2.0) ** 2) + jnp.sum((p["b"] + 2.0) ** 2)
    res = js.minimize(fun, x0, bounds=({"a": None, "b": jnp.array([-1.0, -3.0])}, 1.0))
    chex.assert_trees_all_close(res.x, {"a": jnp.ones(3), "b": jnp.array([-1.0, -2.0])}, atol=1e-6)


def test_x0_outside_the_box_is_projected():
    res = js.minimize(lambda x: jnp.sum(x**2), jnp.array([5.0, -5.0]), bounds=(1.0, 2.0), options={"maxiter": 0})
    np.testing.assert_allclose(res.x, [2.0, 1.0])


# --- composing with JAX transformations --------------------------------------------------------


def test_jit_and_no_recompile():
    traces = []

    def fun(x, a):
        traces.append(None)
        return jnp.sum((x - a) ** 2) + jnp.sum(x**4)

    js.minimize(fun, jnp.zeros(3), args=(1.0,))
    first = len(traces)
    for a in (2.0, 3.0):
        res = js.minimize(fun, jnp.zeros(3), args=(a,), options={"gtol": 1e-8, "maxiter": 100})
    assert len(traces) == first  # new values of args and numeric options reuse the compiled solve
    solved = jax.jit(lambda a: js.minimize(fun, jnp.zeros(3), args=(a,)).x)(3.0)
    np.testing.assert_allclose(solved, res.x, atol=1e-5)


def test_vmap_over_starts_and_args_stops_each_on_its_own():
    fun = lambda x, a: jnp.sum((x - a) ** 2) + jnp.sum(x**4)
    starts = jax.random.normal(jax.random.PRNGKey(0), (6, 3)) * jnp.arange(1, 7)[:, None]
    shifts = jnp.linspace(-1, 1, 6)
    batched = jax.vmap(lambda x0, a: js.minimize(fun, x0, args=(a,)))(starts, shifts)
    for i in range(6):
        single = js.minimize(fun, starts[i], args=(shifts[i],))
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-12)
        assert int(batched.nit[i]) == int(single.nit) and int(batched.nfev[i]) == int(single.nfev)
    assert len(set(np.asarray(batched.nit).tolist())) > 1  # they really stopped at different times
    assert list(batched.message) == ["CONVERGENCE: NORM OF PROJECTED GRADIENT <= GTOL"] * 6


def test_disp_prints_progress(capfd):
    js.minimize(rosen, jnp.array([-1.2, 1.0]), options={"disp": True, "maxiter": 3})
    out = capfd.readouterr().out
    assert "iter     0" in out and "iter     3" in out and "MAXITER" in out


# --- statuses: never a false success, never a hang ---------------------------------------------


ALL_METHODS = ["l-bfgs", "l-bfgs-b", "bfgs", "cg", "newton", "newton-cg", "trust-ncg", "curveball"]
HAS_MAXFUN = {"l-bfgs", "l-bfgs-b", "curveball"}  # scipy's other methods have no evaluation budget


def _jump(x):
    """Beyond x = 1 the function jumps up and falls again: no step of the first search meets the
    Wolfe conditions, and the objective is unbounded below further on."""
    return jnp.where(x[0] < 1.0, -x[0], 10.0 - 5 * x[0])


def _nan_wall(x):
    return jnp.sum(jnp.where(x < 1.0, (x - 2.0) ** 2, jnp.nan))


# (fun, x0, options, status, {method: status where it differs}). The methods without a line search
# (trust-ncg, CurveBall) cannot tell a linear objective from a long valley: they spend their budget.
FAILURES = {
    "nan_at_x0": (lambda x: jnp.sum(jnp.log(x)), [-1.0, 2.0], {}, js.Status.NONFINITE, {}),
    "linear": (
        lambda x: -jnp.sum(x), [0.0, 1.0], {"maxiter": 50}, js.Status.UNBOUNDED,
        {"trust-ncg": js.Status.MAXITER, "curveball": js.Status.MAXITER},
    ),
    "minus_inf": (lambda x: jnp.where(x[0] > 3, -jnp.inf, -x[0]), [0.0], {}, js.Status.UNBOUNDED, {}),
    "no_wolfe_step": (
        _jump, [0.0], {"maxiter": 300}, js.Status.UNBOUNDED,
        {
            "l-bfgs": js.Status.LINESEARCH_FAILED, "l-bfgs-b": js.Status.LINESEARCH_FAILED,
            "newton-cg": js.Status.LINESEARCH_FAILED, "trust-ncg": js.Status.MAXITER,
            "curveball": js.Status.MAXITER,
        },
    ),
    # NaN beyond x = 1, where f still falls: searches end at the wall, which is not a minimiser.
    # Newton, whose ftol test fires there, is tested on its own below.
    "nan_wall": (
        _nan_wall, [0.0, 0.0], {"maxiter": 50}, js.Status.NONFINITE,
        {
            "bfgs": js.Status.MAXITER, "cg": js.Status.MAXITER, "newton-cg": js.Status.LINESEARCH_FAILED,
            "trust-ncg": js.Status.MAXITER,
        },
    ),
    "maxiter_5": (rosen, [-1.2, 1.0], {"maxiter": 5}, js.Status.MAXITER, {}),
    "maxiter_0": (rosen, [-1.2, 1.0], {"maxiter": 0}, js.Status.MAXITER, {}),
    "maxiter_1": (rosen, [-1.2, 1.0], {"maxiter": 1}, js.Status.MAXITER, {}),
    "maxfun_6": (rosen, [-1.2, 1.0], {"maxfun": 6}, js.Status.MAXFUN, {}),
    "maxfun_0": (rosen, [-1.2, 1.0], {"maxfun": 0}, js.Status.MAXFUN, {}),
    "maxfun_1": (rosen, [-1.2, 1.0], {"maxfun": 1}, js.Status.MAXFUN, {}),
}


@pytest.mark.parametrize(
    "case, method",
    [
        (case, method) for case in FAILURES for method in ALL_METHODS
        if ("maxfun" not in FAILURES[case][2] or method in HAS_MAXFUN) and (case, method) != ("nan_wall", "newton")
    ],
)
def test_failures_have_their_own_status(case, method):
    fun, x0, options, status, differs = FAILURES[case]
    status = differs.get(method, status)
    res = js.minimize(fun, jnp.asarray(x0), method=method, options=options)
    assert int(res.status) == status and not bool(res.success), res.message
    assert res.message == js.convergence.MESSAGES[status]
    if "maxfun" in options:
        assert int(res.nfev) <= max(options["maxfun"], 1)
    if "maxiter" in options:
        assert int(res.nit) <= options["maxiter"]


def test_newton_at_a_nan_wall_reports_ftol_with_its_gradient():
    # FTOL is scipy's relative-reduction test: it says f stopped decreasing, not that the gradient is
    # small. At the edge of the domain f cannot decrease further, and Newton reports exactly that.
    res = js.minimize(_nan_wall, jnp.zeros(2), method="newton", options={"maxiter": 50})
    assert int(res.status) == js.Status.FTOL
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(res.jac, [-2.0, -2.0], atol=1e-5)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_nan_mid_solve_is_recovered(method):
    # A trial step leaves the domain of log: line searches backtrack into it, trust-ncg shrinks its
    # radius, CurveBall skips the step and resets its momentum.
    res = js.minimize(lambda x: jnp.sum(x - 2 * jnp.log(x)), jnp.array([0.1, 5.0]), method=method)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, [2.0, 2.0], atol=1e-4)


# --- bad input: clear errors at call time ------------------------------------------------------


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'sgd'.*l-bfgs-b"):
        js.minimize(rosen, jnp.zeros(2), method="sgd")


def test_method_is_case_insensitive_and_has_aliases():
    a = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="LBFGS")
    b = js.minimize(rosen, jnp.array([-1.2, 1.0]), method="L-BFGS")
    np.testing.assert_array_equal(a.x, b.x)


def test_unknown_option_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['maxitr'\].*maxiter"):
        js.minimize(rosen, jnp.zeros(2), options={"maxitr": 3})


@pytest.mark.parametrize("options", [{"maxcor": 0}, {"maxls": 0}, {"maxiter": -1}, {"gtol": -1.0}])
def test_invalid_option_values(options):
    with pytest.raises(ValueError, match=list(options)[0]):
        js.minimize(rosen, jnp.zeros(2), options=options)


def test_non_scalar_fun_output():
    with pytest.raises(ValueError, match="scalar floating value"):
        js.minimize(lambda x: x**2, jnp.zeros(2))


def test_integer_output_rejected():
    with pytest.raises(ValueError, match="scalar floating value"):
        js.minimize(lambda x: jnp.sum(x).astype(jnp.int32), jnp.zeros(2), jac=lambda x: x)


def test_integer_leaf_in_x0_names_path():
    with pytest.raises(TypeError, match=r"\['b'\].*int"):
        js.minimize(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.zeros(2), "b": jnp.arange(3)})


def test_non_array_leaf_in_x0_names_path():
    with pytest.raises(TypeError, match=r"\['b'\].*str"):
        js.minimize(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.zeros(2), "b": "hello"})


def test_bounds_structure_mismatch_names_structure():
    with pytest.raises(ValueError, match="structure of x0"):
        js.minimize(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.zeros(2)}, bounds=({"b": jnp.zeros(2)}, None))


def test_bounds_shape_mismatch_names_path():
    with pytest.raises(ValueError, match=r"upper at path \['a'\]"):
        js.minimize(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.zeros(2)}, bounds=(None, {"a": jnp.zeros(3)}))


def test_lower_above_upper_names_path_and_index():
    with pytest.raises(ValueError, match=r"lower > upper at path \['a'\], index \(1,\)"):
        js.minimize(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.zeros(2)}, bounds=({"a": jnp.array([0.0, 2.0])}, 1.0))


def test_bounds_with_unbounded_method():
    with pytest.raises(ValueError, match="cannot honour bounds"):
        js.minimize(rosen, jnp.zeros(2), method="l-bfgs", bounds=(0.0, 1.0))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_jac_true_with_mismatched_gradient_structure(method):
    with pytest.raises(ValueError, match="structure of x0"):
        js.minimize(lambda p: (jnp.sum(p["a"] ** 2), {"b": p["a"]}), {"a": jnp.zeros(2)}, jac=True, method=method)
    with pytest.raises(ValueError, match=r"shape \(3,\) at path \['a'\]"):
        js.minimize(
            lambda p: (jnp.sum(p["a"] ** 2), {"a": jnp.zeros(3)}), {"a": jnp.zeros(2)}, jac=True, method=method
        )


# --- Defaults whose success means a first-order point (issue 10) ------------------------------------

# Problems on which scipy's default ftol (and ours before) reported success away from a minimum.
FORMER_FALSE_SUCCESSES = [
    "wood", "meyer", "osborne1", "powell_badly_scaled", "gaussian", "clipped_quadratic_n20",
    "freudenstein_roth", "helical_valley", "powell_singular", "brown_dennis", "watson_n9", "brown_badly_scaled",
]


@pytest.mark.parametrize("name", FORMER_FALSE_SUCCESSES)
def test_default_success_means_a_small_projected_gradient(name):
    p = ALL_PROBLEMS[name]
    bounds = None if p.lower is None else (jnp.asarray(p.lower), jnp.asarray(p.upper))
    x0 = np.clip(p.x0, p.lower, p.upper) if p.bounded else p.x0
    res = js.minimize(p.fun, jnp.asarray(x0), bounds=bounds)
    lower = np.full(p.n, -np.inf) if p.lower is None else p.lower
    upper = np.full(p.n, np.inf) if p.upper is None else p.upper
    g = np.asarray(jax.grad(p.fun)(res.x))  # recomputed, not the solver's own
    pg = np.asarray(projected_gradient(res.x, jnp.asarray(g), jnp.asarray(lower), jnp.asarray(upper)))
    f = float(res.fun)
    rounding = np.sum(np.abs(pg)) <= p.n * np.sqrt(np.finfo(float).eps) * max(abs(f), 1.0)
    if bool(res.success) and not rounding:
        # Success away from the rounding level only at the known minimum of a badly scaled problem.
        assert np.max(np.abs(pg)) <= 1e-5 or problems.reached_minimum(p, f), (int(res.status), np.max(np.abs(pg)))
    assert float(p.fun(res.x)) <= float(p.fun(jnp.asarray(x0)))
    if name in ("wood", "meyer", "osborne1", "brown_badly_scaled", "helical_valley"):  # optax.lbfgs solves these
        assert problems.reached_minimum(p, f), f


def test_scipy_ftol_restores_scipy_statuses_and_counts():
    p = ALL_PROBLEMS["wood"]
    res = js.minimize(p.fun, jnp.asarray(p.x0), options=SCIPY)
    ref = scipy_lbfgsb(p.fun, p.x0)
    assert (int(res.nit), int(res.nfev), int(res.status)) == (ref.nit, ref.nfev, js.Status.FTOL)
    assert "REDUCTION OF F" in ref.message


def test_a_step_that_raises_f_is_never_accepted():
    """Badly scaled float32 variables: the search's rounding floor is per variable, and a warning
    step that raised f is a failed search, never FTOL (issue 16.1)."""
    f = lambda p: (p["big"] / 1e6 - 1) ** 2 + 1e4 * (p["small"] - 0.01) ** 2
    x0 = {"big": jnp.array(1.001e6, jnp.float32), "small": jnp.array(0.0, jnp.float32)}
    for method in ("l-bfgs", "newton", "bfgs"):
        res = js.minimize(f, x0, method=method)
        assert float(res.fun) <= float(f(x0)), method
        assert not bool(res.success) or float(res.fun) < 1e-3, (method, float(res.fun), int(res.status))


@pytest.mark.parametrize("method", ["l-bfgs", "cg", "bfgs"])
def test_convex_function_with_a_tiny_gradient_is_not_unbounded(method):
    """A descent ray is judged by the distance moved, not the step multiplier (issue 16.2)."""
    res = js.minimize(lambda x: 1e-11 * jnp.sum((x - 1e6) ** 2), jnp.zeros(1, jnp.float64), method=method)
    assert int(res.status) == js.Status.GTOL, res.message
    # gtol 1e-5 on a gradient 2e-11 (x - 1e6) allows |x - 1e6| <= 5e5; L-BFGS and CG land on it.
    np.testing.assert_allclose(res.x, [1e6], rtol=1e-6 if method != "bfgs" else 0.5)


def test_linear_objective_is_still_unbounded():
    for scale in (1e-4, 1.0):  # a short direction too: the ray is judged by the distance moved
        res = js.minimize(lambda x: scale * jnp.sum(x), jnp.zeros(3))
        assert int(res.status) == js.Status.UNBOUNDED, (scale, res.message)


# --- Derivatives, closures and arguments (issue 16) --------------------------------------------------

def test_derivative_with_respect_to_bounds_matches_finite_differences():
    def solve(u):
        return js.minimize(lambda x: jnp.sum((x - 2.0) ** 2 + 0.1 * x[0] * x[1]), jnp.zeros(2), bounds=(None, u))

    for out in (lambda r: r.x.sum(), lambda r: r.fun):
        grad = float(jax.grad(lambda u: out(solve(u)))(1.0))
        h = 1e-2
        fd = (float(out(solve(1.0 + h))) - float(out(solve(1.0 - h)))) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-3)
    # One bound active, one free: the free variable responds through the reduced system.
    g = jax.grad(lambda u: solve(jnp.array([u, 10.0])).x[1])(1.0)
    np.testing.assert_allclose(g, -0.1, rtol=1e-4)  # x1 = 2 - 0.1 x0 at the solution (the sum counts 0.1 x0 x1 twice)


def test_grad_through_a_closure_over_a_traced_value():
    grad = jax.grad(lambda a: js.minimize(lambda x: jnp.sum((x - a) ** 2), jnp.zeros(3)).x.sum())(1.0)
    np.testing.assert_allclose(grad, 3.0, rtol=1e-5)


def test_non_array_args_are_static():
    def fun(x, penalty, size, transform):
        base = jnp.sum((x[:size] - 1.0) ** 2)
        return base + (jnp.sum(transform(x) ** 2) if penalty == "l2" else 0.0)

    res = js.minimize(fun, jnp.zeros(4), args=("none", 2, jnp.sin))
    np.testing.assert_allclose(res.x, [1, 1, 0, 0], atol=1e-4)
    with pytest.raises(TypeError, match=r"args\[0\]"):
        js.minimize(lambda x, a: jnp.sum(x**2), jnp.zeros(2), args=([{"a": "b"}],))


def test_default_maxiter_does_not_overflow_int32():
    n = 10_800_000  # 200 n > 2**31
    res = js.minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(n), method="cg")
    assert bool(res.success) and int(res.nit) >= 1


def test_no_recompile_when_only_python_types_change():
    fun = lambda x, a: jnp.sum((x - a) ** 2)
    js.minimize(fun, jnp.zeros(3), args=(1.0,))
    size = len(optimize._COMPILE_CACHE)
    solve = next(reversed(optimize._COMPILE_CACHE.values()))
    for kwargs in ({"args": (jnp.array(1.0),)}, {"args": (np.float64(1.0),)}, {"args": (1.0,), "tol": 0.0},
                   {"args": (2.0,), "options": {"maxiter": np.int64(100)}}):
        js.minimize(fun, jnp.zeros(3), **kwargs)
    assert len(optimize._COMPILE_CACHE) == size
    assert solve._cache_size() == 1


def test_fresh_closures_reuse_the_compiled_solve_and_equal_args():
    def loss(w, X, y):
        return jnp.sum((X @ w - y) ** 2) + 1e-3 * jnp.sum(w**2)

    rng = np.random.default_rng(0)
    data = [(jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), jnp.asarray(rng.normal(size=8), jnp.float32))
            for _ in range(3)]
    results, size = [], None
    for X, y in data:
        res = js.minimize(lambda w: loss(w, X, y), jnp.zeros(3))
        size = size or len(optimize._COMPILE_CACHE)
        ref = js.minimize(loss, jnp.zeros(3), args=(X, y))
        chex.assert_trees_all_close(res.x, ref.x, rtol=1e-6)
        results.append(res.x)
    assert len(optimize._COMPILE_CACHE) == size + 1  # one entry for the closures, one for args
    assert not np.allclose(results[0], results[1])


# --- callback and scipy's bounds forms (issue 10) ----------------------------------------------------

def test_callback_sees_every_iterate_and_can_stop():
    seen = []
    res = js.minimize(rosen, jnp.array([-1.2, 1.0]), callback=lambda r: seen.append((float(r.fun), int(r.nit))))
    assert [n for _, n in seen] == list(range(1, int(res.nit) + 1))
    assert seen[-1][0] == pytest.approx(float(res.fun))
    assert all(a >= b for (a, _), (b, _) in zip(seen, seen[1:]))  # a descent method
    stopped = js.minimize(rosen, jnp.array([-1.2, 1.0]), callback=lambda r: int(r.nit) >= 3)
    assert (int(stopped.nit), int(stopped.status), bool(stopped.success)) == (3, js.Status.CALLBACK, False)

    def raise_stop(r):
        if int(r.nit) == 2:
            raise StopIteration

    assert int(jax.jit(lambda x: js.minimize(rosen, x, method="trust-ncg", callback=raise_stop).nit)(
        jnp.array([-1.2, 1.0]))) == 2


def test_scipy_bounds_forms():
    fun = lambda x: jnp.sum((x - 2.0) ** 2)
    res = js.minimize(fun, jnp.zeros(3), bounds=[(None, 1.0), (0.0, None), (-1.0, 0.5)])
    np.testing.assert_allclose(res.x, [1.0, 2.0, 0.5])
    res = js.minimize(fun, jnp.zeros(3), bounds=so.Bounds([-1, -1, -1], [1, 3, 1]))
    np.testing.assert_allclose(res.x, [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="one \\(min, max\\) pair per variable"):
        js.minimize(fun, jnp.zeros(3), bounds=[(0.0, 1.0), (0.0, 1.0)])
