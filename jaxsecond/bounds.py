"""Box constraints: validating user bounds against a pytree, and the geometry of a box.

Every method that honours bounds goes through this module: :func:`broadcast_bounds` turns the
user's ``(lower, upper)`` into two pytrees shaped like ``x0`` (at call time, naming the offending
pytree path), and the flat-vector helpers below (projection, projected gradient, longest feasible
step) are what the solvers use inside the compiled loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path, tree_structure


def broadcast_bounds(bounds, x0):
    """Validates ``bounds = (lower, upper)`` and broadcasts each side to ``x0``'s structure.

    Args:
      bounds: ``None`` or a pair ``(lower, upper)``; each side is ``None`` (unbounded), a scalar applied
        to every leaf, or a pytree with ``x0``'s structure whose leaves broadcast to ``x0``'s leaves.
        ``±inf`` entries mean unbounded.
      x0: the starting point (a pytree of floating arrays).

    Returns:
      ``(lower, upper)``: two pytrees with ``x0``'s structure, shapes and dtypes.

    Raises:
      ValueError: naming the pytree path of a mismatched structure or shape, or of ``lower > upper``
        (checked when the bounds are concrete, i.e. not traced).
    """
    if bounds is None:
        bounds = (None, None)
    bounds = _from_scipy_form(bounds, x0)
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(
            "bounds must be None, a pair (lower, upper) of pytrees/scalars/None, or (when x0 is a "
            "single array) scipy's sequence of (min, max) pairs or a scipy.optimize.Bounds; "
            f"got {type(bounds).__name__}"
            + (f" of length {len(bounds)}" if isinstance(bounds, (tuple, list)) else "")
        )
    lower = _broadcast_side(bounds[0], x0, "lower", -jnp.inf)
    upper = _broadcast_side(bounds[1], x0, "upper", jnp.inf)
    _check_order(lower, upper, x0)
    return lower, upper


def _from_scipy_form(bounds, x0):
    """scipy's two other forms, for an ``x0`` that is a single array: an object with ``.lb`` and
    ``.ub`` (``scipy.optimize.Bounds``, duck-typed so that scipy stays optional) and a sequence of
    ``(min, max)`` pairs, one per variable in ``x0.ravel()`` order, ``None`` meaning unbounded. A pair of
    lists or tuples is read as scipy's pairs; give lower and upper as arrays for the other reading."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return (bounds.lb, bounds.ub)
    single = len(jax.tree_util.tree_leaves(x0)) == 1 and not isinstance(x0, (tuple, list, dict))
    array = isinstance(bounds, (np.ndarray, jax.Array)) and not isinstance(bounds, jax.core.Tracer)
    if single and array and bounds.ndim == 2 and bounds.shape[1] == 2:
        bounds = [tuple(pair) for pair in np.asarray(bounds).tolist()]  # scipy's (n, 2) array of pairs
    pairs = isinstance(bounds, (tuple, list)) and all(
        isinstance(b, (tuple, list)) and len(b) == 2 for b in bounds
    )
    if not (single and pairs) or not bounds:
        return bounds
    shape = np.shape(x0)
    if len(bounds) != int(np.prod(shape)):
        raise ValueError(
            f"bounds: scipy's form needs one (min, max) pair per variable; x0 has {int(np.prod(shape))} "
            f"variables but bounds has {len(bounds)} pairs"
        )
    side = lambda i, fill: np.reshape(
        np.array([fill if pair[i] is None else pair[i] for pair in bounds], np.float64), shape
    )
    return (side(0, -np.inf), side(1, np.inf))


def _broadcast_side(side, x0, name, fill):
    x_leaves, treedef = jax.tree_util.tree_flatten(x0)
    if side is None or _is_scalar(side):
        value = fill if side is None else side
        leaves = [jnp.full(jnp.shape(x), value, jnp.result_type(x)) for x in x_leaves]
        return jax.tree_util.tree_unflatten(treedef, leaves)
    side_struct = tree_structure(side, is_leaf=lambda v: v is None)
    if side_struct != treedef:
        raise ValueError(
            f"bounds {name} must have the structure of x0 (or be a scalar or None); "
            + _first_difference(x0, side, name) + f"x0 has structure {treedef} but {name} has {side_struct}"
        )
    paths = [keystr(p) for p, _ in tree_flatten_with_path(x0)[0]]
    side_leaves = jax.tree_util.tree_leaves(side, is_leaf=lambda v: v is None)
    leaves = []
    for path, x, b in zip(paths, x_leaves, side_leaves):
        if b is None:
            b = fill
        b = jnp.asarray(b)
        if not (jnp.issubdtype(b.dtype, jnp.floating) or jnp.issubdtype(b.dtype, jnp.integer)):
            raise TypeError(f"bounds {name} at path {path or '<root>'} must be real numbers; got dtype {b.dtype}")
        try:
            b = jnp.broadcast_to(b, jnp.shape(x))
        except ValueError:
            raise ValueError(
                f"bounds {name} at path {path or '<root>'} has shape {b.shape}, which does not broadcast "
                f"to the shape {jnp.shape(x)} of x0 there"
            ) from None
        leaves.append(b.astype(jnp.result_type(x)))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _first_difference(x0, side, name):
    """Where the two structures part, as leaf paths one has and the other lacks ("" when their
    paths agree and only node types differ)."""
    x_paths = [keystr(p) for p, _ in tree_flatten_with_path(x0)[0]]
    side_paths = [keystr(p) for p, _ in tree_flatten_with_path(side, is_leaf=lambda v: v is None)[0]]
    missing = [p for p in x_paths if p not in side_paths]
    if missing:
        return f"{name} has no leaf at path {missing[0]}; "
    extra = [p for p in side_paths if p not in x_paths]
    return f"{name} has a leaf at path {extra[0]} that x0 lacks; " if extra else ""


def _is_scalar(v):
    return isinstance(v, (int, float, np.number)) or (hasattr(v, "shape") and np.shape(v) == ())


def _check_order(lower, upper, x0):
    paths = [keystr(p) for p, _ in tree_flatten_with_path(x0)[0]]
    for path, lo, up in zip(paths, jax.tree_util.tree_leaves(lower), jax.tree_util.tree_leaves(upper)):
        if isinstance(lo, jax.core.Tracer) or isinstance(up, jax.core.Tracer):
            continue
        lo, up = np.asarray(lo), np.asarray(up)
        for name, side in (("lower", lo), ("upper", up)):
            if np.isnan(side).any():
                index = tuple(int(i) for i in np.argwhere(np.isnan(side))[0])
                raise ValueError(
                    f"bounds {name} is NaN at path {path or '<root>'}" + (f", index {index}" if index else "")
                    + " (use -inf or inf, or None, for no bound)"
                )
        bad = lo > up
        if bad.any():
            where = np.argwhere(bad)[0]
            index = tuple(int(i) for i in where)
            raise ValueError(
                f"bounds: lower > upper at path {path or '<root>'}"
                + (f", index {index}" if index else "")
                + f" ({float(lo[index])} > {float(up[index])})"
            )


def project(x, lower, upper):
    """Projects the flat vector ``x`` onto the box ``[lower, upper]`` (``None``: no box)."""
    return x if lower is None else jnp.clip(x, lower, upper)


def projected_gradient(x, g, lower, upper):
    """The projected gradient of L-BFGS-B (``projgr``): components that would leave the box are cut.

    Its infinity norm is the first-order optimality measure: zero exactly at a KKT point of the box.
    ``lower = upper = None`` is no box (the gradient itself).
    """
    if lower is None:
        return g
    return jnp.where(g < 0, jnp.maximum(x - upper, g), jnp.minimum(x - lower, g))


def max_step_in_box(x, d, lower, upper, largest):
    """Longest step ``t <= largest`` with ``x + t d`` inside the box (0 when ``d`` points outwards;
    ``largest`` when there is no box, ``lower = upper = None``)."""
    if lower is None:
        return jnp.asarray(largest, x.dtype)
    room = jnp.where(d < 0, lower - x, jnp.where(d > 0, upper - x, jnp.inf))
    ratio = jnp.where(d != 0, room / jnp.where(d != 0, d, 1), jnp.inf)
    ratio = jnp.where(jnp.isnan(ratio), jnp.inf, jnp.maximum(ratio, 0))
    return jnp.minimum(largest, jnp.min(ratio, initial=jnp.inf))
