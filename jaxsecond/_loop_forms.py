"""Loop forms of the primitives that XLA:CPU cannot emit inside one kernel, for small operands.

A marked call (:mod:`jaxsecond._single_kernel`) is emitted by XLA's elemental IR emitter, which has
no matrix product or linear algebra: those run as library calls (Eigen, LAPACK), each a separate
thunk. For small operands the same results come from loops of the forms it does emit: each function
here takes a primitive's operands and parameters and computes its result with ``lax.while_loop``,
elementwise arithmetic, vector products (which XLA rewrites as reductions), dynamic slices and
one-index updates. They are used only in the one-kernel program on the CPU, where the primitive itself
cannot be; results agree with the library's up to rounding (the same operations in another order).
No JAX library provides them (XLA's own expanders run after the point where the one kernel is
decided), hence this module.

Only the forms that pay are here: a matrix product (a loop of matrix-vector products), a triangular
solve and a Cholesky factorisation (what Newton's method needs). LU, sort, top-k and scatters of
several indices were written too and dropped: L-BFGS-B, the method that needs them, ran no faster in
one kernel (about 26 us per iteration at n = 4 to 100, against 23-46 us as separate kernels; a 20 x 20
LU solve as a loop costs 12 us, through LAPACK 4 us) and compiled slower.

Every function raises :class:`Unsupported` for a form it does not cover (batch dimensions, complex
numbers); the call is then left to XLA as it is.
"""

import math

import jax.numpy as jnp
from jax import lax


class Unsupported(Exception):
    """A form the loops here do not cover."""


def _repeat(count, body, init):
    """``body(i, state)`` for ``i`` in ``range(count)``, as a while loop (a ``fori_loop`` with static
    bounds would become a ``scan``)."""
    def step(carry):
        i, state = carry
        return i + 1, body(i, state)

    return lax.while_loop(lambda carry: carry[0] < count, step, (jnp.int32(0), init))[1]


def _row(x, i, axis=0):
    return lax.dynamic_index_in_dim(x, i, axis, keepdims=False)


def _put(x, value, i, axis=0):
    return lax.dynamic_update_index_in_dim(x, value.astype(x.dtype), i, axis)


def dot_general(lhs, rhs, *, dimension_numbers, precision=None, preferred_element_type=None, out_aval,
                **_):
    """A matrix product as a loop of matrix-vector products: a row of the result per trip, or a column
    where there are fewer columns than rows (each trip then reads fewer elements)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_free = [d for d in range(lhs.ndim) if d not in lhs_contract and d not in lhs_batch]
    rhs_free = [d for d in range(rhs.ndim) if d not in rhs_contract and d not in rhs_batch]
    size = lambda x, dims: math.prod(x.shape[d] for d in dims)
    b, k = size(lhs, lhs_batch), size(lhs, lhs_contract)
    m, n = size(lhs, lhs_free), size(rhs, rhs_free)
    lhs = lax.transpose(lhs, (*lhs_batch, *lhs_free, *lhs_contract)).reshape(b, m, k)
    rhs = lax.transpose(rhs, (*rhs_batch, *rhs_contract, *rhs_free)).reshape(b, k, n)
    product = lambda x, y, x_contract, y_contract: lax.dot_general(
        x, y, ((x_contract, y_contract), ((0,), (0,))), precision=precision,
        preferred_element_type=preferred_element_type)
    out = jnp.zeros((b, m, n), out_aval.dtype)
    # Each trip is a matrix-vector product whose matrix is read along its rows (contiguous).
    if n <= m:  # a row of the result per trip: (n x k) times a row of lhs, reads b k n
        rhs_rows = lax.transpose(rhs, (0, 2, 1))
        out = _repeat(m, lambda i, out: _put(out, product(rhs_rows, _row(lhs, i, 1), (2,), (1,)), i, 1), out)
    else:  # a column per trip: (m x k) times a column of rhs, reads b m k
        out = _repeat(n, lambda j, out: _put(out, product(lhs, _row(rhs, j, 2), (2,), (1,)), j, 2), out)
    return out.reshape(out_aval.shape)


def triangular_solve(a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal, out_aval, **_):
    """Forward or back substitution, a row of the solution per trip (reads only ``a``'s triangle)."""
    del conjugate_a  # real operands only
    if a.ndim != 2 or jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        raise Unsupported("triangular_solve with batch dimensions or complex operands")
    if transpose_a:
        a, lower = a.T, not lower
    if not left_side:  # x a = b  <=>  a^T x^T = b^T
        a, lower, b = a.T, not lower, b.T
    m = a.shape[0]
    strict = jnp.tril(a, -1) if lower else jnp.triu(a, 1)
    diagonal = jnp.ones(m, a.dtype) if unit_diagonal else a[jnp.arange(m), jnp.arange(m)]

    def step(t, x):
        i = t if lower else m - 1 - t
        return _put(x, (_row(b, i) - _row(strict, i) @ x) / _row(diagonal, i), i)

    x = _repeat(m, step, jnp.zeros(b.shape, out_aval.dtype))
    return x if left_side else x.T


def cholesky(a, *, out_aval, **_):
    """The lower Cholesky factor, a column per trip; all NaN when ``a`` is not positive definite
    (as JAX returns LAPACK's ``potrf`` failure)."""
    if a.ndim != 2 or jnp.iscomplexobj(a):
        raise Unsupported("cholesky with batch dimensions or complex operands")
    m = a.shape[0]
    rows = jnp.arange(m)

    def step(j, state):
        factor, positive = state
        row = jnp.where(rows < j, _row(factor, j), 0)
        d = _row(_row(a, j), j) - row @ row
        positive = positive & (d > 0)
        diagonal = jnp.sqrt(jnp.where(d > 0, d, 1))
        column = (_row(a, j, 1) - factor @ row) / diagonal
        return _put(factor, jnp.where(rows > j, column, jnp.where(rows == j, diagonal, 0)), j, 1), positive

    factor, positive = _repeat(m, step, (jnp.zeros(a.shape, out_aval.dtype), jnp.bool_(True)))
    return jnp.where(positive, factor, jnp.nan)


def batched_scatter(operand, indices, updates, *, dimension_numbers, mode, out_aval, update_jaxpr=None,
                    add=False, **_):
    """``vmap`` of ``x.at[i].set(v)`` (or ``.add``) with a batched index: one select over the operand
    (XLA would scatter one window per batch element, which one kernel cannot emit)."""
    dn = dimension_numbers
    window = tuple(range(1, updates.ndim))
    axis = int(dn.scatter_dims_to_operand_dims[0]) if len(dn.scatter_dims_to_operand_dims) == 1 else None
    if (axis is None or indices.ndim != 2 or indices.shape[1] != 1
            or tuple(dn.inserted_window_dims) != (axis,)
            or tuple(dn.operand_batching_dims) != (0,) or tuple(dn.scatter_indices_batching_dims) != (0,)
            or tuple(dn.update_window_dims) != window
            or updates.shape[1:] != tuple(d for i, d in enumerate(operand.shape) if i not in (0, axis))):
        raise Unsupported("scatter other than a batch of one-index updates of whole windows")
    if update_jaxpr is not None and not add:  # x.at[i].apply(f): the update is f of the old value
        raise Unsupported("scatter that applies a function")
    index = indices[:, 0]
    if mode != lax.GatherScatterMode.FILL_OR_DROP:  # clipped (out-of-range indices of FILL_OR_DROP match nothing)
        index = jnp.clip(index, 0, operand.shape[axis] - 1)
    shape = [1] * operand.ndim
    shape[0] = operand.shape[0]
    hit = lax.broadcasted_iota(index.dtype, operand.shape, axis) == index.reshape(shape)
    update = jnp.expand_dims(updates, axis).astype(out_aval.dtype)
    return jnp.where(hit, operand + update if add else update, operand)
