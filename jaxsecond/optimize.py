"""``minimize``: scipy.optimize.minimize's contract on pytrees, compiled end to end.

This module is the front end: argument validation (at call time, naming pytree paths), the method
table with each method's options and scipy defaults, the result type, and the compile cache (the
objective traced to a jaxpr whose captured arrays are inputs, and one ``jax.jit`` per distinct jaxpr
and static options, so a new closure over new arrays does not compile again), and the call cache (a call
that repeats a recent one in everything but array values goes straight to its compiled solve). The
solvers themselves live in :mod:`jaxsecond.quasi_newton`,
:mod:`jaxsecond.conjugate_gradient` and :mod:`jaxsecond.newton` (directions and memory),
:mod:`jaxsecond.descent` (the shared line-search loop) and :mod:`jaxsecond.trust_region` (trust-ncg's
loop); :mod:`jaxsecond.implicit_diff` makes the solution differentiable in ``args``.
"""

import collections
import functools
import itertools
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.experimental import io_callback
from jax.tree_util import keystr, tree_flatten_with_path

from jaxsecond import _single_kernel as single_kernel
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


# scipy.optimize.minimize(method="L-BFGS-B")'s defaults but ftol: scipy's 2.220446049250313e-09 stops
# on one small relative decrease of f and calls it success at points far from a minimum (11 of the 46
# runs of jaxsecond.problems). With ftol 0 the solve stops on the gradient test, or where f no longer
# decreases at all, which is success only at a rounding-level gradient. scipy's value restores
# scipy's iterates exactly.
SCIPY_LBFGSB_FTOL = 2.220446049250313e-09
_LBFGS_DEFAULTS = {
    "maxcor": 10,
    "ftol": 0.0,
    "gtol": 1e-5,
    "maxiter": 15000,
    "maxfun": 15000,
    "maxls": 20,
    "disp": False,
}

# Each method's scipy defaults (scipy/optimize/_optimize.py and _trustregion.py); maxiter None is
# scipy's 200 * n. "newton" has no scipy counterpart: it takes trust-exact's gtol, and ftol 0 as L-BFGS:
# a gtol below the gradient's rounding noise ends in FTOL once a Newton step no longer decreases f.
_BFGS_DEFAULTS = {"gtol": 1e-5, "maxiter": None, "disp": False}
_NEWTON_CG_DEFAULTS = {"xtol": 1e-5, "maxiter": None, "disp": False}
_NEWTON_DEFAULTS = {"gtol": 1e-8, "ftol": 0.0, "maxiter": None, "disp": False}
_TRUST_NCG_DEFAULTS = {
    "gtol": 1e-4, "maxiter": None, "initial_trust_radius": 1.0, "max_trust_radius": 1000.0, "eta": 0.15,
    "disp": False,
}
_CURVEBALL_DEFAULTS = {
    "gtol": 1e-5,
    "maxiter": 15000,
    "maxfun": 45000,
    "damping": 1.0,  # the authors' MATLAB code (the transform measures its own by default)
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


def minimize(
    fun, x0, *, args=(), method=None, jac=None, bounds=None, tol=None, callback=None, options=None
) -> OptimizeResult:
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
      callback: ``None`` or ``callback(intermediate_result)``, called at each accepted iterate with an
        :class:`OptimizeResult` (``x``, ``fun``, ``nit``, ``nfev``) from inside the compiled loop;
        returning ``True`` or raising ``StopIteration`` ends the solve with status ``CALLBACK``. Not
        under ``vmap``, nor for ``"curveball"``.
      options: dict with scipy's names and, per method, scipy's defaults. L-BFGS(-B): ``maxcor``
        (10), ``ftol`` (0: stop on the gradient test, or where f no longer decreases at a
        rounding-level gradient; scipy's 2.220446049250313e-09 reproduces scipy exactly), ``gtol`` (1e-5), ``maxiter`` (15000), ``maxfun``
        (15000), ``maxls`` (20). BFGS and CG: ``gtol`` (1e-5, on the infinity norm), ``maxiter``
        (200 n). Newton-CG: ``xtol`` (1e-5, average per variable of the L1 norm of the step),
        ``maxiter`` (200 n). trust-ncg: ``gtol`` (1e-4, on the 2-norm), ``maxiter`` (200 n),
        ``initial_trust_radius`` (1), ``max_trust_radius`` (1000), ``eta`` (0.15). Newton: ``gtol``
        (1e-8), ``ftol`` (0, as L-BFGS), ``maxiter`` (200 n). All: ``disp`` (False; prints progress from inside the compiled
        loop).

    Returns:
      An ``OptimizeResult`` (``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``status``,
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
    if not isinstance(args, tuple):
        args = (args,)
    call_key, traced_args, static_args = _call_key(fun, x0, args, method, jac, bounds, tol, callback, options)
    prepared = _CALL_CACHE.pop(call_key, None) if call_key is not None else None
    if (prepared is not None and _TRACE_CACHE.get(prepared.trace_key) is prepared.traced
            and prepared.solve_key in _COMPILE_CACHE):
        # The same function object, options and shapes as a recent call: everything below but the
        # bounds was validated then; only the values differ. The entry is used only while the trace
        # cache holds the same trace (what the function captures is read as often as before) and
        # its solve is still compiled, and it refreshes both caches' order as a full call would.
        _CALL_CACHE[call_key] = prepared
        _TRACE_CACHE.move_to_end(prepared.trace_key)
        _COMPILE_CACHE.move_to_end(prepared.solve_key)
        lower, upper = broadcast_bounds(bounds, x0) if bounds is not None else (None, None)
        solve, consts = _COMPILE_CACHE[prepared.solve_key], prepared.traced[1]
        return solve(x0 if prepared.arrays_given else _as_arrays(x0), (consts, traced_args), lower, upper,
                     prepared.numeric)
    name, spec = _resolve_method(method, bounds)
    opts = _resolve_options(name, spec, tol, options)
    _check_x0(x0)
    if bounds is not None and not spec.supports_bounds:
        raise ValueError(
            f"method={name!r} cannot honour bounds; use method='l-bfgs-b' (or drop bounds)"
        )
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
    if name == "bfgs" and n > newton.MAX_NEWTON_SIZE:
        raise ValueError(
            f"method='bfgs' keeps a dense n x n inverse Hessian and updates it every iteration; x0 has "
            f"n = {n} > {newton.MAX_NEWTON_SIZE} variables (use 'l-bfgs', its limited-memory form)"
        )
    numeric = {k: opts.get(k, default) for k, default in _INACTIVE.items()}
    # The loop counts in int32: budgets beyond it (scipy's 200 n at n > 10,737,418) are unlimited.
    int_max = int(np.iinfo(np.int32).max)
    numeric["maxiter"] = min(200 * n if opts["maxiter"] is None else int(opts["maxiter"]), int_max)
    numeric["maxfun"] = min(int(numeric["maxfun"]), int_max)
    numeric["maxls"] = min(int(numeric["maxls"]), int_max)
    if "xtol" in opts:
        numeric["xtol"] = n * opts["xtol"]  # scipy's Newton-CG: the average per variable
    if name == "curveball":
        numeric.update({k: opts[k] for k in ("damping", "learning_rate", "momentum")})
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or a callable; got {callback!r}")
    if callback is not None and name == "curveball":
        raise ValueError("callback is not supported by method='curveball'")
    numeric = _pack_numeric({k: _canonical_number(v, k) for k, v in numeric.items()})
    arrays_given = all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(x0))
    x0 = _as_arrays(x0)
    config = _SolveConfig(
        jac=jac if jac is None or jac is True else "callable", method=name,
        static=tuple(sorted(static.items())), disp=bool(opts.get("disp", False)),
        callback=None if callback is None else _Identity(callback),
    )
    try:
        problem, consts, trace_key = _trace(fun, jac, x0, traced_args, static_args)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError, IndexError, TypeError):
        # fun may use an int argument as a Python value (a size, an index): trace again with ints
        # static (a failure there is fun's own error, raised as it is). Such calls are not keyed
        # for the fast path, whose key holds ints as traced values.
        if not any(isinstance(leaf, int) and not isinstance(leaf, bool) for leaf in jax.tree.leaves(args)):
            raise
        call_key = None
        traced_args, static_args = _split_args(args, static_ints=True)
        problem, consts, trace_key = _trace(fun, jac, x0, traced_args, static_args)
    solve = _compiled_solve(problem, config, n)
    if call_key is not None and trace_key is not None:
        _lru_get(_CALL_CACHE, call_key,
                 lambda: _Prepared(trace_key, _TRACE_CACHE[trace_key], (problem, config),
                                   numeric, arrays_given),
                 _TRACE_CACHE_SIZE)
    return solve(x0, (consts, traced_args), lower, upper, numeric)


class _Prepared(NamedTuple):
    """A call's cached preparation: the keys of its trace and compiled solve, and its options."""

    trace_key: Any
    traced: tuple  # the trace cache's (problem, consts) entry, compared by identity
    solve_key: Any
    numeric: Any  # packed: tolerances and budgets as device arrays (CurveBall's extras as they are)
    arrays_given: bool  # x0's leaves are jax arrays (the key fixes their types): no conversion


_FLOAT_OPTIONS = ("gtol", "ftol", "xtol")
_INT_OPTIONS = ("maxiter", "maxfun", "maxls")


def _pack_numeric(numeric):
    """The loop's tolerances and budgets as one float and one int32 device array, and CurveBall's
    hyper-parameters (``None`` for automatic) as they are. Concrete values are put on the device
    here, eagerly even under a trace, so that a cached call passes them without a transfer."""
    floats = [numeric[k] for k in _FLOAT_OPTIONS]
    traced = any(isinstance(v, jax.core.Tracer) for v in floats)  # tol traced under jit
    with jax.ensure_compile_time_eval():
        ints = jax.device_put(np.asarray([numeric[k] for k in _INT_OPTIONS], np.int32))
        if not traced:
            floats = jax.device_put(np.asarray(floats, np.float64))
    if traced:
        floats = jnp.stack([jnp.asarray(v, jnp.result_type(float)) for v in floats])
    rest = {k: v for k, v in numeric.items() if k not in _FLOAT_OPTIONS + _INT_OPTIONS}
    return floats, ints, rest


def _unpack_numeric(packed):
    floats, ints, rest = packed
    return {**dict(zip(_FLOAT_OPTIONS, floats)), **dict(zip(_INT_OPTIONS, ints)), **rest}


def _as_arrays(x0):
    return jax.tree.map(lambda leaf: leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf), x0)


def _leaf_signature(leaf):
    aval = getattr(leaf, "aval", None)
    if aval is not None:
        return type(leaf), aval.shape, aval.dtype, aval.weak_type
    return type(leaf), np.shape(leaf), getattr(leaf, "dtype", None)


def _call_key(fun, x0, args, method, jac, bounds, tol, callback, options):
    """The key of a call for the fast path, with ``args`` split into traced and static leaves.

    Everything that ``minimize`` validates, resolves or traces depends only on this key: the
    function objects (by identity where they hash so), the method, the type and value of every
    option, the structure, types, shapes and dtypes of ``x0`` and of the traced ``args``, the static
    ``args`` and whether bounds are given. The key is ``None`` where some part is unhashable (also
    options traced under ``jit``: tracers do not hash); such calls take the full path.
    """
    traced, static = _split_args(args)
    try:
        items = tuple((k, type(v), v) for k, v in sorted(dict(options or {}).items()))
        x_leaves, x_tree = jax.tree.flatten(x0)
        key = (
            fun, type(jac), jac, None if callback is None else _Identity(callback), method, type(tol), tol, items,
            bounds is None, x_tree, tuple(map(_leaf_signature, x_leaves)), static,
            tuple(_leaf_signature(leaf) for leaf in traced if leaf is not None),
        )
        hash(key)
    except (TypeError, ValueError):
        return None, traced, static
    return key, traced, static


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
            if key == "eta" and not isinstance(value, jax.core.Tracer) and not value < 0.25:
                raise ValueError(f"options['eta'] must be in [0, 0.25) (scipy's trust-region rule); got {value}")
    initial, largest = opts.get("initial_trust_radius"), opts.get("max_trust_radius")
    concrete = not any(isinstance(r, jax.core.Tracer) for r in (initial, largest))
    if initial is not None and concrete and not 0 < initial < largest:
        raise ValueError(
            f"options['initial_trust_radius'] ({initial}) must be positive and below "
            f"options['max_trust_radius'] ({largest}), as scipy requires"
        )
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
    if all(np.size(leaf) == 0 for _, leaf in leaves):
        raise ValueError("x0 has no element to optimise: every leaf is empty (size 0)")


def _canonical_number(value, key):
    """A concrete option as a Python number, so that ``np.int64(100)`` and ``100`` share a compiled
    solve; a traced one (``tol`` under ``jit``) as it is; ``None`` (automatic) stays ``None``."""
    if value is None or isinstance(value, jax.core.Tracer):
        return value
    return int(value) if key in ("maxiter", "maxfun", "maxls") else float(value)


def _is_array_like(leaf, static_ints):
    kinds = (jax.Array, np.ndarray, np.number, float, complex) + (() if static_ints else (int,))
    return isinstance(leaf, kinds) and not isinstance(leaf, (bool, np.bool_))


def _split_args(args, static_ints=False):
    """Splits the leaves of ``args`` into traced arrays and static values.

    Array leaves and Python/NumPy numbers are traced: a new value reuses the compiled solve, and
    ``1.0``, ``np.float64(1.0)`` and ``jnp.array(1.0)`` share one (Python and float64 NumPy scalars
    take JAX's default float dtype). Any other leaf (a string, a function, a bool) must be hashable
    and is static: part of the compile-cache key, with its type. With ``static_ints`` Python ints are
    static too (for an objective that uses one as a size).

    Returns:
      ``(traced, static)``: ``traced`` is the tuple of leaves with ``None`` at static positions;
      ``static`` is ``(treedef, ((position, type, value), ...))``.
    """
    leaves, treedef = jax.tree.flatten(args)
    traced, static = [], []
    for i, leaf in enumerate(leaves):
        if _is_array_like(leaf, static_ints):
            traced.append(_canonical_scalar(leaf))
            continue
        try:
            hash(leaf)
        except TypeError:
            raise TypeError(
                f"args leaf {i} ({type(leaf).__name__}) must be an array, a number, or a hashable "
                "value (a string, a function, a bool) used as a constant"
            ) from None
        traced.append(None)
        static.append((i, type(leaf), leaf))
    return tuple(traced), (treedef, tuple(static))


def _canonical_scalar(leaf):
    if isinstance(leaf, (float, np.float64)) or (
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and leaf.weak_type
        and jnp.issubdtype(leaf.dtype, jnp.floating)
    ):  # jnp.array(1.0) is weakly typed: the same as a Python float
        return jnp.asarray(leaf, jnp.result_type(float))
    if isinstance(leaf, (complex, np.complex128)):
        return jnp.asarray(leaf, jnp.result_type(complex))
    return leaf


def _merge_args(traced, static):
    treedef, values = static
    leaves = list(traced)
    for i, _, value in values:
        leaves[i] = value
    return tuple(jax.tree.unflatten(treedef, leaves))


def _opaque_parts(jaxpr, parts):
    """What ``str(jaxpr)`` does not show, collected from its equations and nested jaxprs: the
    constants of nested closed jaxprs (an inner ``jax.jit`` over captured arrays) and the functions
    in parameters (``custom_vjp`` rules, ``pure_callback`` targets). They join the cache key by
    identity."""
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            _collect_opaque(value, parts)
    return parts


def _collect_opaque(value, parts):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        parts.extend(value.consts)
        _opaque_parts(value.jaxpr, parts)
    elif isinstance(value, jax.extend.core.Jaxpr):
        _opaque_parts(value, parts)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_opaque(item, parts)
    elif callable(value) and not isinstance(value, type):
        parts.append(value)
    # A custom_jvp rule is a WrappedFun made anew at each trace of jax.nn.relu and friends: keyed
    # by identity it would defeat the cache for every closure that uses them, so only its name
    # (printed) is in the key. Two custom_jvp functions with the same primal and same-named rules
    # but different rules would share a solve (documented).


class _Identity:
    """Hashes and compares an object by identity (a callback that defines ``__eq__`` only)."""

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.obj is self.obj


class _Problem:
    """The objective as a jaxpr whose captured arrays are inputs: equal for two closures, lambdas or
    ``functools.partial`` objects that compute the same thing, whatever arrays they capture."""

    def __init__(self, jaxpr, in_tree, out_tree, const_avals):
        self.jaxpr, self.in_tree, self.out_tree = jaxpr, in_tree, out_tree
        # The opaque parts are held here, so that their ids stay theirs while the key lives.
        self._opaque = _opaque_parts(jaxpr, [])
        self._key = (str(jaxpr), in_tree, out_tree, const_avals, tuple(id(o) for o in self._opaque))
        self._hash = hash(self._key)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, _Problem) and self._key == other._key

    def __call__(self, consts, x, traced_args):
        flat = jax.tree.leaves((x, traced_args))
        out = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(self.jaxpr, ()))(*consts, *flat)
        return jax.tree.unflatten(self.out_tree, out)


class _SolveConfig(NamedTuple):
    jac: Any  # None, True or "callable" (the callable itself is part of the problem's jaxpr)
    method: str
    static: tuple
    disp: bool
    callback: Any


# Bounded caches (least recently used first out): traced problems of hashable objectives, so that a
# repeated call with the same function object skips tracing, and compiled solves keyed on the
# computation. Evicting a compiled solve frees its executable.
_TRACE_CACHE_SIZE = 8  # each entry holds a function and the arrays it captures
_COMPILE_CACHE_SIZE = 64
_TRACE_CACHE: "collections.OrderedDict" = collections.OrderedDict()
# Calls already prepared (validated options, traced objective, compiled solve), keyed by
# ``_call_key``: a repeated call skips straight to the compiled solve.
_CALL_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_COMPILE_CACHE: "collections.OrderedDict" = collections.OrderedDict()


def _lru_get(cache, key, make, size):
    try:
        value = cache.pop(key)
    except KeyError:
        value = make()
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def _avals(tree):
    return tuple(
        (np.shape(leaf), leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf),
         bool(getattr(getattr(leaf, "aval", leaf), "weak_type", False)))
        for leaf in jax.tree.leaves(tree)
    )


def _trace(fun, jac, x0, traced_args, static_args):
    """Traces ``fun`` (and ``jac``) once into a :class:`_Problem` and the arrays it captures; also
    returns the trace cache's key, ``None`` where the trace is not cached (an unhashable function,
    captured tracers)."""

    def full(x, targs):
        args = _merge_args(targs, static_args)
        if jac is None or jac is True:
            return fun(x, *args)
        return fun(x, *args), jac(x, *args)

    def make():
        closed, out = jax.make_jaxpr(full, return_shape=True)(x0, traced_args)
        _check_outputs(out, jac, x0)
        in_tree = jax.tree.structure((x0, traced_args))
        problem = _Problem(closed.jaxpr.replace(constvars=[], invars=closed.jaxpr.constvars + closed.jaxpr.invars),
                           in_tree, jax.tree.structure(out), _avals(closed.consts))
        return problem, tuple(closed.consts)

    try:
        key = (fun, type(jac), jac, static_args, jax.tree.structure((x0, traced_args)), _avals((x0, traced_args)))
        hash(key)
    except TypeError:
        return (*make(), None)
    problem, consts = _lru_get(_TRACE_CACHE, key, make, _TRACE_CACHE_SIZE)
    if any(isinstance(c, jax.core.Tracer) for c in consts):
        # Captured tracers belong to the trace that made them (an outer jit, grad or vmap): trace
        # again, and do not keep them.
        _TRACE_CACHE.pop(key, None)
        return (*make(), None)
    return problem, consts, key


def _check_outputs(out, jac, x0):
    """Checks the shapes and dtypes ``fun`` (and ``jac``) return (from the trace, no evaluation)."""
    if jac is True:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("with jac=True, fun must return a pair (value, grad_pytree)")
        value, grad = out
    elif jac is None:
        value, grad = out, None
    else:
        value, grad = out
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


# XLA:CPU options for the solves compiled here, that is for calls outside any trace (a solve inside the
# caller's jit is compiled with the caller's options; jax admits none on a nested jit), with fewer
# than OPTIONS_BELOW variables. XLA's elemental emitters, instead of its MLIR fusion emitters,
# compile L-BFGS-B's and Newton's solves in 55-65% of the time and run them as fast; other methods
# compile as fast either way (bench/compile_cost.py, issue #11). Not LLVM at -O1, which compiles
# every method faster still but changes rounding enough that one problem of the set no longer
# follows scipy's iterates (extended Powell: 39 iterations for scipy's 37); nor at n >= 10^4 or so,
# where large fused kernels dominate and the legacy emitters ran 2-9% slower. Set to {} before the
# first solve for XLA's defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
OPTIONS_BELOW = 4096


def _compiler_options(n):
    """:data:`CPU_COMPILER_OPTIONS` for a solve over ``n`` variables where they apply (see there) and
    the installed XLA accepts them, else ``None`` (XLA's defaults)."""
    items = tuple(sorted(CPU_COMPILER_OPTIONS.items()))
    if not items or n >= OPTIONS_BELOW or jax.default_backend() != "cpu" or not _accepted_by_xla(items):
        return None
    return dict(items)


@functools.cache
def _accepted_by_xla(items):
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(items)).lower(np.float32(0)).compile()
    except Exception:  # an XLA that has dropped or renamed one of them: its defaults, not an error
        return False
    return True


class _CompiledSolve(NamedTuple):
    """A solve's ``jax.jit`` with :func:`_compiler_options` for calls outside any trace, and without
    them for calls under one (jit, vmap, grad). Outside a trace, an exception the user's callback
    raised (it stopped the solve) is raised again once the solve has returned."""

    top_level: Callable
    traced: Callable
    callback: bool

    def __call__(self, *args):
        # jax has no public test for "outside any trace"; should its eval trace be renamed, every
        # call takes the plain jit (XLA's defaults), never an error.
        top = type(jax.extend.core.find_top_trace(())).__name__ == "EvalTrace"
        if not top:
            return self.traced(*args)
        if not self.callback:
            return self.top_level(*args)
        with _CALLBACK_LOCK:
            token = next(_CALLBACK_TOKENS) % 2**31
        try:
            result = jax.block_until_ready(self.top_level(*args, np.int32(token)))  # every callback ran
        finally:
            with _CALLBACK_LOCK:
                error = _CALLBACK_ERRORS.pop(token, None)
        if error is not None:
            raise error
        return result


def _compiled_solve(problem, config, n):
    def make():
        solve = functools.partial(_solve, problem, config)
        options = _compiler_options(n)
        traced = jax.jit(solve)
        top = jax.jit(solve, compiler_options=options) if options else traced
        return _CompiledSolve(top, traced, config.callback is not None)

    return _lru_get(_COMPILE_CACHE, (problem, config), make, _COMPILE_CACHE_SIZE)


# Exceptions raised by users' callbacks in solves called outside any trace, by the call's token: the
# callback runs in XLA's runtime, which would report them as its own error; the solve stops instead
# and the front end raises them again (_CompiledSolve). Calls from several threads each have their own.
_CALLBACK_ERRORS: dict = {}
_CALLBACK_LOCK = threading.Lock()
_CALLBACK_TOKENS = itertools.count()


def _host_callback(callback, x, f, nit, nfev, token):
    intermediate = OptimizeResult(
        x=x, fun=f, jac=None, nit=nit, nfev=nfev, njev=nfev, status=np.int32(Status.RUNNING), success=False
    )
    try:
        stop = callback(intermediate)
    except StopIteration:
        stop = True
    except Exception as error:  # noqa: BLE001 - raised again by the front end
        if token < 0:  # a solve under a trace: nothing outside it can raise it again
            raise
        with _CALLBACK_LOCK:
            _CALLBACK_ERRORS.setdefault(int(token), error)
        stop = True
    stop = np.asarray(stop) if isinstance(stop, (bool, np.bool_, np.ndarray, jax.Array)) else None
    return np.bool_(stop is not None and stop.dtype == bool and stop.ndim == 0 and bool(stop))


def _solve(problem, config, x0, args, lower, upper, numeric, token=-1):
    method = config.method
    spec = _METHODS[method]
    x_flat, unravel = ravel_pytree(x0)
    dtype = x_flat.dtype
    if lower is None:
        lo = jnp.full_like(x_flat, -jnp.inf)
        up = jnp.full_like(x_flat, jnp.inf)
    else:
        lo, up = ravel_pytree(lower)[0].astype(dtype), ravel_pytree(upper)[0].astype(dtype)

    def fun(x, args):
        return problem(args[0], x, args[1])

    value_and_grad = jax.value_and_grad(fun) if config.jac is None else fun

    def flat_value_and_grad(x, args):
        value, grad = value_and_grad(unravel(x), args)
        return jnp.asarray(value, dtype), ravel_pytree(grad)[0].astype(dtype)

    on_iterate = None
    if config.callback is not None:
        host = functools.partial(_host_callback, config.callback.obj)

        def on_iterate(x, f, g, nit, nfev):
            return io_callback(host, jax.ShapeDtypeStruct((), bool), unravel(x), f, nit, nfev, token, ordered=True)

    def solve(x_start, args, lo, up, numeric):
        numeric = _unpack_numeric(numeric)
        options = DescentOptions(
            gtol=jnp.asarray(numeric["gtol"], dtype),
            ftol=jnp.asarray(numeric["ftol"], dtype),
            maxiter=jnp.asarray(numeric["maxiter"], jnp.int32),
            maxfun=jnp.asarray(numeric["maxfun"], jnp.int32),
            maxls=jnp.asarray(numeric["maxls"], jnp.int32),
            xtol=jnp.asarray(numeric["xtol"], dtype),
        )
        vg = lambda x: flat_value_and_grad(x, args)
        static = dict(config.static)
        if method == "curveball":
            fun_only = lambda x: vg(x)[0]
            return run_curveball(vg, fun_only, x_start, numeric, disp=config.disp, **static)
        solver = spec.make(vg, **static) if spec.objective else spec.make(**static)
        if lower is None and not spec.supports_bounds:  # unconstrained: no box arithmetic compiled
            lo = up = None
        out = spec.run(vg, x_start, lo, up, solver, options, disp=config.disp, on_iterate=on_iterate)
        return out.x, out.f, out.g, out.nit, out.nfev, out.status

    # Derivatives with respect to args (and the arrays fun captures, and the bounds) by the implicit
    # function theorem, not through the loop.
    # On a CPU, a small solve is compiled into one kernel (see jaxsecond._single_kernel).
    x, f, g, nit, nfev, status = differentiable_solve(
        functools.partial(single_kernel.call, solve), flat_value_and_grad
    )(jnp.clip(x_flat, lo, up), args, lo, up, numeric)
    # Traced bounds cannot be checked at call time (concrete ones are a ValueError): an empty box
    # makes the result infeasible, whatever the loop reported.
    if lower is not None:
        status = jnp.where(jnp.all(lo <= up), status, Status.INFEASIBLE).astype(status.dtype)
    return OptimizeResult(
        x=unravel(x), fun=f, jac=unravel(g), nit=nit, nfev=nfev,
        njev=nit + 1 if method == "curveball" else nfev, status=status,
        success=(status == Status.GTOL) | (status == Status.FTOL) | (status == Status.XTOL),
    )
