"""Problems and scipy references shared by the tests of the BFGS, CG, Newton and trust-region methods.

The objectives are module-level functions so that each (objective, method) pair compiles once for
the whole test session.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so


from jaxsecond import problems

# Built once at import, so each objective is one function object and compiles once per method.
_ROSEN, _BEALE, _POWELL, _WOOD = (
    problems.chained_rosenbrock(2), problems.beale(), problems.powell_singular(), problems.wood()
)
rosen = _ROSEN.fun  # scipy.optimize.rosen, any length

# (fun, x0, f*) with the Moré–Garbow–Hillstrom starting points and optimal values.
PROBLEMS = {
    "rosenbrock": (rosen, [-1.2, 1.0], 0.0),
    "ext_rosenbrock_10": (rosen, [-1.2, 1.0] * 5, 0.0),
    "beale": (_BEALE.fun, list(_BEALE.x0), 0.0),
    "powell_singular": (_POWELL.fun, list(_POWELL.x0), 0.0),
    # From the standard start, scipy's methods and ours end in Wood's known non-global region.
    "wood": (_WOOD.fun, list(_WOOD.x0), 7.876954987),
}


SCIPY_NAMES = {"bfgs": "BFGS", "cg": "CG", "newton-cg": "Newton-CG", "trust-ncg": "trust-ncg", "newton": "trust-exact"}


@functools.lru_cache(maxsize=None)
def breast_cancer():
    """sklearn's breast cancer data, standardised, with a column of ones for the intercept."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return jnp.asarray(np.hstack([x, np.ones((x.shape[0], 1))])), jnp.asarray(data.target.astype(float))


def logistic_loss(w, l2, X, y):
    """Mean logistic loss plus (l2 / 2) |w|^2 (the intercept is penalised too, which keeps it simple)."""
    logits = X @ w
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits) + 0.5 * l2 * w @ w


def logistic_problem(l2=1e-2):
    X, y = breast_cancer()
    return logistic_loss, jnp.zeros(X.shape[1]), (l2, X, y)


def scipy_minimize(fun, x0, method, args=(), **options):
    """scipy's method of the same name with jax's exact gradient (and Hessian products / Hessian)."""
    vg = jax.jit(jax.value_and_grad(fun))
    kwargs = {}
    if method in ("newton-cg", "trust-ncg"):
        hvp = jax.jit(lambda x, p, *a: jax.jvp(lambda z: jax.grad(fun)(z, *a), (x,), (p,))[1])
        kwargs["hessp"] = lambda x, p, *a: np.asarray(hvp(x, p, *a))
    elif method == "newton":
        hess = jax.jit(jax.hessian(fun))
        kwargs["hess"] = lambda x, *a: np.asarray(hess(x, *a))
    return so.minimize(
        lambda x, *a: tuple(np.asarray(v) for v in vg(x, *a)), np.asarray(x0, float), args=args, jac=True,
        method=SCIPY_NAMES[method], options=options, **kwargs,
    )


def solve_both(name, method, **options):
    """``js.minimize`` and scipy's method of the same name on ``PROBLEMS[name]``; both must succeed."""
    import jaxsecond as js

    fun, x0, _ = PROBLEMS[name]
    res = js.minimize(fun, jnp.asarray(x0), method=method, options=options or None)
    ref = scipy_minimize(fun, x0, method, **options)
    assert bool(res.success) and ref.success, (res.message, ref.message)
    return res, ref
