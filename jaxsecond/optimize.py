"""``minimize``: scipy.optimize.minimize's contract on pytrees, compiled end to end.

This module is the front end: argument validation (at call time, naming pytree paths), the method
table with each method's options and scipy defaults, the result type, and the compile cache (one
``jax.jit`` keyed on the objective and the static options, so repeated calls with the same function
and shapes do not compile again). The solvers themselves live in :mod:`jaxsecond.quasi_newton`,
:mod:`jaxsecond.conjugate_gradient` and :mod:`jaxsecond.newton` (directions and memory),
:mod:`jaxsecond.descent` (the shared line-search loop) and :mod:`jaxsecond.trust_region` (trust-ncg's
loop); :mod:`jaxsecond.implicit_diff` makes the solution differentiable in ``args``.
"""

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.tree_util import keystr, tree_flatten_with_path

from jaxsecond import conjugate_gradient, newton, quasi_newton, trust_region
from jaxsecond.curveball import run_curveball
from jaxsecond.bounds import broadcast_bounds
from jaxsecond.convergence import MESSAGES, Status
from jaxsecond.descent import DescentOptions, run_descent
from jaxsecond.implicit_diff import differentiable_solve


class OptimizeResult(NamedTuple):
    """The result of :func:`minimize`; a pytree, so it passes through ``jit`` and ``vmap``.

    Attributes:
      x: the solution, a pytree like ``x0``.
      fun: objective value at ``x``.
      jac: gradient at ``x`` (a pytree like ``x0``).
      nit: iterations performed.
      nfev: objective evaluations (each also evaluates the gradient).
      njev: gradient evaluations.
      status: an int, see :class:`jaxsecond.Status`; ``message`` gives its text.
      success: true only when a convergence test was met.
    """

    x: Any
    fun: Array
    jac: Any
    nit: Array
    nfev: Array
    njev: Array
    status: Array
    success: Array

    @property
    def message(self):
        """Text for ``status``: a string, or an array of strings for a batched (vmapped) result."""
        status = np.asarray(self.status)
        if status.ndim == 0:
            return MESSAGES[Status(int(status))]
        return np.vectorize(lambda s: MESSAGES[Status(int(s))], otypes=[object])(status)


class _MethodSpec(NamedTuple):
    make: Callable[..., Any]  # static options -> solver description
    supports_bounds: bool
    defaults: dict
    static: tuple  # option names that change the compiled program
    objective: bool = False  # make also takes the flat value_and_grad (Hessian-based methods)
    run: Callable[..., Any] = run_descent


_LBFGS_DEFAULTS = {  # scipy.optimize.minimize(method="L-BFGS-B") defaults
    "maxcor": 10,
    "ftol": 2.220446049250313e-09,
    "gtol": 1e-5,
    "maxiter": 15000,
    "maxfun": 15000,
    "maxls": 20,
    "disp": False,
}

# Each method's scipy defaults (scipy/optimize/_optimize.py and _trustregion.py); maxiter None is
# scipy's 200 * n. "newton" has no scipy counterpart: it takes trust-exact's gtol, and an ftol of ten
# float64 ulps so that a gtol below the gradient's rounding noise ends in FTOL, not in 200 n iterations.
_BFGS_DEFAULTS = {"gtol": 1e-5, "maxiter": None, "disp": False}
_NEWTON_CG_DEFAULTS = {"xtol": 1e-5, "maxiter": None, "disp": False}
_NEWTON_DEFAULTS = {"gtol": 1e-8, "ftol": 2.220446049250313e-15, "maxiter": None, "disp": False}
_TRUST_NCG_DEFAULTS = {
    "gtol": 1e-4, "maxiter": None, "initial_trust_radius": 1.0, "max_trust_radius": 1000.0, "eta": 0.15,
    "disp": False,
}
_CURVEBALL_DEFAULTS = {
    "gtol": 1e-5,
    "maxiter": 15000,
    "maxfun": 45000,
    "damping": 1.0,  # the transform's default (the authors' MATLAB code)
    "damping_interval": 5,
    "learning_rate": None,
    "momentum": None,
    "disp": False,
}
# Values of the loop's numeric options for methods that do not have them: tests that never fire.
_INACTIVE = {"gtol": 0.0, "ftol": -np.inf, "maxfun": np.iinfo(np.int32).max, "maxls": 100, "xtol": -1.0}

_METHODS = {
    "l-bfgs": _MethodSpec(quasi_newton.lbfgs, False, _LBFGS_DEFAULTS, ("maxcor",)),
    "l-bfgs-b": _MethodSpec(quasi_newton.lbfgsb, True, _LBFGS_DEFAULTS, ("maxcor",)),
    "bfgs": _MethodSpec(quasi_newton.bfgs, False, _BFGS_DEFAULTS, ()),
    "cg": _MethodSpec(conjugate_gradient.cg, False, _BFGS_DEFAULTS, ()),
    "newton": _MethodSpec(newton.newton, False, _NEWTON_DEFAULTS, (), objective=True),
    "newton-cg": _MethodSpec(newton.newton_cg, False, _NEWTON_CG_DEFAULTS, (), objective=True),
    "trust-ncg": _MethodSpec(
        trust_region.TrustRegionMethod, False, _TRUST_NCG_DEFAULTS,
        ("initial_trust_radius", "max_trust_radius", "eta"), run=trust_region.run_trust_region,
    ),
    "curveball": _MethodSpec(None, False, _CURVEBALL_DEFAULTS, ("damping_interval",)),
}
_ALIASES = {"lbfgs": "l-bfgs", "lbfgsb": "l-bfgs-b", "newtoncg": "newton-cg", "trustncg": "trust-ncg"}


def minimize(fun, x0, *, args=(), method=None, jac=None, bounds=None, tol=None, options=None) -> OptimizeResult:
    """Minimises a scalar function of a pytree, with the whole solve compiled into one XLA loop.

    Args:
      fun: ``fun(x, *args) -> scalar``; ``x`` is a pytree of floating arrays shaped like ``x0``.
      x0: starting point: any pytree (dict, list, tuple, NamedTuple, flax/equinox parameters) of
        floating arrays; mixed shapes and float32/float64 are fine (the solve runs in the promoted
        dtype). Projected into the box when ``bounds`` are given.
      args: extra arguments passed to ``fun`` (and ``jac``); may be traced (``jit``/``vmap``).
      method: case-insensitive: ``"l-bfgs"`` (alias ``"lbfgs"``), ``"l-bfgs-b"``, ``"bfgs"`` (dense
        inverse Hessian), ``"cg"`` (Polak–Ribière+), ``"newton"`` (exact Hessian of the flattened
        ``x``, modified Cholesky; O(n^2) memory, at most 20000 variables), ``"newton-cg"`` (truncated
        Newton) or ``"trust-ncg"`` (Steihaug–Toint trust region); the last two use Hessian-vector
        products only. Only ``"l-bfgs-b"`` honours bounds. Default: ``"l-bfgs-b"`` when ``bounds`` is
        given, else ``"l-bfgs"``.
      jac: ``None`` (gradient by ``jax.grad``), ``True`` (``fun`` returns ``(value, grad_pytree)``) or
        a callable ``jac(x, *args) -> grad_pytree``.
      bounds: ``None`` or ``(lower, upper)``; each side a pytree like ``x0``, a scalar, or ``None``;
        ``±inf`` entries are unbounded.
      tol: sets both ``gtol`` and ``ftol`` (``xtol`` for ``"newton-cg"``) unless ``options`` sets them.
      options: dict with scipy's names and, per method, scipy's defaults. L-BFGS(-B): ``maxcor``
        (10), ``ftol`` (2.220446049250313e-09), ``gtol`` (1e-5), ``maxiter`` (15000), ``maxfun``
        (15000), ``maxls`` (20). BFGS and CG: ``gtol`` (1e-5, on the infinity norm), ``maxiter``
        (200 n). Newton-CG: ``xtol`` (1e-5, average per variable of the L1 norm of the step),
        ``maxiter`` (200 n). trust-ncg: ``gtol`` (1e-4, on the 2-norm), ``maxiter`` (200 n),
        ``initial_trust_radius`` (1), ``max_trust_radius`` (1000), ``eta`` (0.15). Newton: ``gtol``
        (1e-8), ``ftol`` (2.220446049250313e-15: stop when f stops decreasing), ``maxiter`` (200 n). All: ``disp`` (False; prints progress from inside the compiled
        loop).

    Returns:
      An :class:`OptimizeResult` (``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``status``,
      ``success``, and the ``message`` property). ``jax.grad``/``jax.jvp`` of ``x`` and ``fun`` in
      ``args`` use implicit differentiation at the solution (:mod:`jaxsecond.implicit_diff`).

    Raises:
      ValueError / TypeError: at call time, for an unknown method or option, an invalid option value,
        a non-floating or non-array leaf of ``x0``, bounds that do not match ``x0`` (naming the path),
        ``lower > upper``, bounds with a method that cannot honour them, or a ``fun``/``jac`` output of
        the wrong shape, dtype or structure.

    References:
      Byrd, Lu, Nocedal, Zhu (1995). A limited memory algorithm for bound constrained optimization.
      SIAM J. Sci. Comput. 16(5). Liu and Nocedal (1989). On the limited memory BFGS method for large
      scale optimization. Math. Programming 45. Moré and Thuente (1994), ACM TOMS 20(3).

    Example:
      >>> import jax.numpy as jnp, jaxsecond as js
      >>> def rosen(p, shift):
      ...     x, y = p["a"] - shift, p["b"] - shift
      ...     return 100 * (y - x**2) ** 2 + (1 - x) ** 2
      >>> res = js.minimize(rosen, {"a": jnp.array(-1.2), "b": jnp.array(1.0)}, args=(0.0,))
      >>> bool(res.success), round(float(res.x["a"]), 4)
      (True, 1.0)
    """
    name, spec = _resolve_method(method, bounds)
    opts = _resolve_options(name, spec, tol, options)
    _check_x0(x0)
    if bounds is not None and not spec.supports_bounds:
        raise ValueError(
            f"method={name!r} cannot honour bounds; use method='l-bfgs-b' (or drop bounds)"
        )
    if not isinstance(args, tuple):
        args = (args,)
    if jac is not None and jac is not True and not callable(jac):
        raise TypeError(f"jac must be None, True or a callable; got {jac!r}")
    lower, upper = broadcast_bounds(bounds, x0) if bounds is not None else (None, None)
    static = {k: opts[k] for k in spec.static}
    n = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(x0))
    if name == "newton" and n > newton.MAX_NEWTON_SIZE:
        raise ValueError(
            f"method='newton' forms the dense n x n Hessian; x0 has n = {n} > {newton.MAX_NEWTON_SIZE} "
            "variables (use 'newton-cg' or 'trust-ncg', which need only Hessian-vector products)"
        )
    numeric = {k: opts.get(k, default) for k, default in _INACTIVE.items()}
    numeric["maxiter"] = 200 * n if opts["maxiter"] is None else opts["maxiter"]
    if "xtol" in opts:
        numeric["xtol"] = n * opts["xtol"]  # scipy's Newton-CG: the average per variable
    if name == "curveball":
        numeric.update({k: opts[k] for k in ("damping", "learning_rate", "momentum")})
    solve = _solve if _hashable(fun) and _hashable(jac) else _solve.__wrapped__
    return solve(
        x0, args, lower, upper, numeric,
        fun=fun, jac=jac, method=name, static=tuple(sorted(static.items())), disp=bool(opts.get("disp", False)),
    )


def _resolve_method(method, bounds):
    if method is None:
        return ("l-bfgs-b", _METHODS["l-bfgs-b"]) if bounds is not None else ("l-bfgs", _METHODS["l-bfgs"])
    if not isinstance(method, str):
        raise TypeError(f"method must be a string; got {type(method).__name__}")
    name = _ALIASES.get(method.lower(), method.lower())
    if name not in _METHODS:
        valid = sorted(set(_METHODS) | set(_ALIASES))
        raise ValueError(f"unknown method {method!r}; valid methods are {valid}")
    return name, _METHODS[name]


def _resolve_options(name, spec, tol, options):
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {name!r}; valid options are {sorted(spec.defaults)}"
        )
    if tol is not None:
        _check_number("tol", tol, low=0.0)
        for key in ("gtol", "ftol", "xtol"):
            if key in spec.defaults:
                options.setdefault(key, tol)
    opts = {**spec.defaults, **options}
    for key, value in opts.items():
        if key == "disp":
            if not isinstance(value, (bool, int, np.bool_)):
                raise TypeError(f"options['disp'] must be a bool; got {value!r}")
        elif key in ("learning_rate", "momentum") and value is None:
            continue
        elif key in ("maxcor", "maxls", "damping_interval"):
            _check_int(key, value, low=1)
        elif key in ("maxiter", "maxfun"):
            if value is not None or key != "maxiter":
                _check_int(key, value, low=0)
        else:
            _check_number(key, value, low=0.0)
    return opts


def _check_int(key, value, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"options[{key!r}] must be an int; got {value!r}")
    if value < low:
        raise ValueError(f"options[{key!r}] must be >= {low}; got {value}")


def _check_number(key, value, low):
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_)) or not np.isscalar(value) and np.shape(value) != ():
        raise TypeError(f"{key!r} must be a real scalar; got {value!r}")
    if not value >= low:
        raise ValueError(f"{key!r} must be >= {low}; got {value}")


def _check_x0(x0):
    leaves = tree_flatten_with_path(x0)[0]
    if not leaves:
        raise ValueError("x0 must contain at least one array leaf; got an empty pytree")
    for path, leaf in leaves:
        where = keystr(path) or "<root>"
        if not (hasattr(leaf, "dtype") and hasattr(leaf, "shape")) and not isinstance(leaf, float):
            raise TypeError(
                f"x0 leaf at path {where} must be a floating array (or Python float); got {type(leaf).__name__}"
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"x0 leaf at path {where} has dtype {dtype}; minimize needs floating arrays "
                "(cast it, e.g. jnp.asarray(x, jnp.float32))"
            )


def _hashable(obj):
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _value_and_grad(fun, jac):
    """``(x, *args) -> (value, grad_pytree)`` for the three forms of ``jac``."""
    if jac is None:
        return jax.value_and_grad(fun)
    if jac is True:
        return fun
    return lambda x, *args: (fun(x, *args), jac(x, *args))


def _check_outputs(fun, jac, x0, args):
    """Checks the shapes and dtypes ``fun`` (and ``jac``) return, at trace time (no evaluation)."""
    out = jax.eval_shape(fun, x0, *args)
    if jac is True:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("with jac=True, fun must return a pair (value, grad_pytree)")
        value, grad = out
    else:
        value, grad = out, (jax.eval_shape(jac, x0, *args) if callable(jac) else None)
    if not hasattr(value, "shape") or value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(
            "fun must return a scalar floating value"
            + (" as the first element of its pair" if jac is True else "")
            + f"; got {getattr(value, 'dtype', type(value).__name__)}{getattr(value, 'shape', '')}"
        )
    if grad is not None:
        x_struct, g_struct = jax.tree.structure(x0), jax.tree.structure(grad)
        source = "fun's second output" if jac is True else "jac"
        if x_struct != g_struct:
            raise ValueError(f"{source} must return a pytree with the structure of x0 {x_struct}; got {g_struct}")
        for (path, x), g in zip(tree_flatten_with_path(x0)[0], jax.tree.leaves(grad)):
            if jnp.shape(x) != g.shape:
                raise ValueError(
                    f"{source} returned shape {g.shape} at path {keystr(path) or '<root>'}, "
                    f"where x0 has shape {jnp.shape(x)}"
                )


@functools.partial(jax.jit, static_argnames=("fun", "jac", "method", "static", "disp"))
def _solve(x0, args, lower, upper, numeric, *, fun, jac, method, static, disp):
    x0 = jax.tree.map(jnp.asarray, x0)
    _check_outputs(fun, jac, x0, args)
    spec = _METHODS[method]
    x_flat, unravel = ravel_pytree(x0)
    dtype = x_flat.dtype
    if lower is None:
        lo = jnp.full_like(x_flat, -jnp.inf)
        up = jnp.full_like(x_flat, jnp.inf)
    else:
        lo, up = ravel_pytree(lower)[0].astype(dtype), ravel_pytree(upper)[0].astype(dtype)
    value_and_grad = _value_and_grad(fun, jac)

    def flat_value_and_grad(x, args):
        value, grad = value_and_grad(unravel(x), *args)
        return jnp.asarray(value, dtype), ravel_pytree(grad)[0].astype(dtype)

    def solve(x_start, args, lo, up, numeric):
        options = DescentOptions(
            gtol=jnp.asarray(numeric["gtol"], dtype),
            ftol=jnp.asarray(numeric["ftol"], dtype),
            maxiter=jnp.asarray(numeric["maxiter"], jnp.int32),
            maxfun=jnp.asarray(numeric["maxfun"], jnp.int32),
            maxls=jnp.asarray(numeric["maxls"], jnp.int32),
            xtol=jnp.asarray(numeric["xtol"], dtype),
        )
        vg = lambda x: flat_value_and_grad(x, args)
        if method == "curveball":
            fun_only = lambda x: vg(x)[0]
            return run_curveball(vg, fun_only, x_start, numeric, disp=disp, **dict(static))
        solver = spec.make(vg, **dict(static)) if spec.objective else spec.make(**dict(static))
        out = spec.run(vg, x_start, lo, up, solver, options, disp=disp)
        return out.x, out.f, out.g, out.nit, out.nfev, out.status

    # Derivatives with respect to args by the implicit function theorem, not through the loop.
    x, f, g, nit, nfev, status = differentiable_solve(solve, flat_value_and_grad)(
        jnp.clip(x_flat, lo, up), args, lo, up, numeric
    )
    return OptimizeResult(
        x=unravel(x), fun=f, jac=unravel(g), nit=nit, nfev=nfev,
        njev=nit + 1 if method == "curveball" else nfev, status=status,
        success=(status == Status.GTOL) | (status == Status.FTOL) | (status == Status.XTOL),
    )
