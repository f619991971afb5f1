"""Limited-memory quasi-Newton search directions: L-BFGS and L-BFGS-B.

Both keep the last ``m`` correction pairs ``s_k = x_{k+1} - x_k``, ``y_k = g_{k+1} - g_k`` in a
circular buffer on the flattened parameter vector, ``(m, n)`` each for L-BFGS-B and one ``(m, 2, n)``
for L-BFGS (matrix-vector products on one buffer are what XLA runs fastest; the pytree is flattened
once, by the driver).

* L-BFGS: the inverse-Hessian product from the compact representation of ``H`` (Byrd, Nocedal,
  Schnabel 1994), the matrix of Nocedal's (1980) two-loop recursion.
* L-BFGS-B: the compact representation ``B = theta I - W M W^T`` (Byrd, Nocedal, Schnabel 1994), the
  generalized Cauchy point along the projected steepest-descent path and subspace minimisation over
  the free variables with the projection-and-backtrack step of L-BFGS-B 3.0 (Byrd, Lu, Nocedal, Zhu
  1995; Morales and Nocedal 2011), which is the algorithm scipy wraps. Written here because no
  maintained JAX library implements it (jaxopt's LBFGSB is a projected-gradient approximation and
  unmaintained; optax has no bound constraints).

L-BFGS-B's Gram matrices ``S^T Y`` and ``S^T S`` are updated incrementally (O(mn) per iteration) so
that only ``2m x 2m`` systems are ever factorised; L-BFGS keeps ``R^-1``, ``Y^T Y`` and ``D`` of its
compact inverse, updated the same way, and factorises nothing. So is the Gram matrix of
the subspace step over the free variables (as L-BFGS-B's ``formk``): by the pair that enters and the
variables whose free or fixed state changed, recomputed in full only when many changed while older
pairs are stored.
"""

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxsecond.bounds import max_step_in_box
from jaxsecond import descent as descent_lib
from jaxsecond.descent import DescentMethod, wolfe1_initial_step


class LimitedMemory(NamedTuple):
    """Correction pairs in a circular buffer. Slot ``k`` holds a pair when ``rank(k) >= m - count``."""

    s: Array  # (m, n)
    y: Array  # (m, n)
    sy: Array  # (m, m) s_i . y_j
    ss: Array  # (m, m) s_i . s_j
    theta: Array  # scaling of the initial matrix B0 = theta I (y.y / s.y of the newest pair)
    count: Array  # number of stored pairs
    next: Array  # slot the next pair goes to
    free: Array  # (n,) the free set ``free_gram`` is taken over (L-BFGS-B)
    free_gram: Array  # (2m, 2m) [Y; S] Z Z^T [Y; S]^T, Z the columns of ``free`` (L-BFGS-B)
    stale: Array  # (m,) slots stored since ``free_gram`` was updated (their rows in it are not set)


def init_memory(x, maxcor: int) -> LimitedMemory:
    n, dtype = x.shape[0], x.dtype
    zeros_mn = jnp.zeros((maxcor, n), dtype)
    zeros_mm = jnp.zeros((maxcor, maxcor), dtype)
    return LimitedMemory(
        s=zeros_mn, y=zeros_mn, sy=zeros_mm, ss=zeros_mm,
        theta=jnp.ones((), dtype), count=jnp.zeros((), jnp.int32), next=jnp.zeros((), jnp.int32),
        free=jnp.ones((n,), bool), free_gram=jnp.zeros((2 * maxcor, 2 * maxcor), dtype),
        stale=jnp.zeros((maxcor,), bool),
    )


def reset_memory(memory, forget=True):
    """Forgets every pair of a :class:`LimitedMemory` or :class:`InverseMemory` when ``forget``
    (L-BFGS-B's restart after a failed line search)."""
    return memory._replace(
        theta=jnp.where(forget, 1.0, memory.theta).astype(memory.theta.dtype),
        count=jnp.where(forget, 0, memory.count).astype(memory.count.dtype),
    )


def _usable_scale(theta) -> Array:
    """Whether a pair's ``theta = y.y / s.y`` can scale H0 = I / theta: a pair whose products overflow
    (``y.y``, or ``s.y`` making theta 0) is not stored. Pairs that pass the curvature test have
    ``s.y > 0`` and ``y != 0``, so no other pair is refused."""
    return jnp.isfinite(theta) & (theta > 0)


def push_pair(memory: LimitedMemory, s, y, keep=True) -> LimitedMemory:
    """Stores the pair ``(s, y)`` over the oldest one when ``keep``, and updates the Gram matrices.

    The write is a masked in-place row update (the row is rewritten with itself when ``keep`` is
    false), so it costs O(n) inside the solver loop instead of a copy of the whole buffer; the Gram
    rows ``S^T Y`` and ``S^T S`` (O(mn), one pass over the buffers) are computed only when the pair
    is kept (every trip under ``vmap``, where the conditional becomes a select). The pair's rows of
    the free Gram matrix are left to :func:`update_free_gram` (the slot is marked stale, the next
    free set is not known yet).
    """
    m = memory.s.shape[0]
    k = memory.next
    theta = (y @ y) / (s @ y)
    keep = keep & _usable_scale(theta)
    s = jnp.where(keep, s, memory.s[k])
    y = jnp.where(keep, y, memory.y[k])
    S = memory.s.at[k].set(s)
    Y = memory.y.at[k].set(y)
    sy, ss, stale = memory.sy, memory.ss, memory.stale
    zeros = (jnp.zeros((m,), S.dtype),) * 3
    Ys, Sy, Ss = lax.cond(keep, lambda: (Y @ s, S @ y, S @ s), lambda: zeros)
    sy = jnp.where(keep, sy.at[k, :].set(Ys).at[:, k].set(Sy), sy)
    ss = jnp.where(keep, ss.at[k, :].set(Ss).at[:, k].set(Ss), ss)
    stale = stale | (keep & (jnp.arange(m) == k))
    return memory._replace(
        s=S, y=Y, sy=sy, ss=ss,
        theta=jnp.where(keep, theta, memory.theta),
        count=jnp.where(keep, jnp.minimum(memory.count + 1, m), memory.count),
        next=jnp.where(keep, (k + 1) % m, k),
        stale=stale,
    )


def _age_order(next_slot, count, m):
    """Slots from the oldest (``order[j]`` holds the pair of age rank ``j``), each slot's rank, and
    which ranks hold a pair."""
    j = jnp.arange(m)
    return (next_slot + j) % m, (j - next_slot) % m, j >= m - count


def _ranks(memory: LimitedMemory):
    """Age rank of each slot (larger is newer) and the mask of slots holding a pair."""
    m = memory.s.shape[0]
    _, rank, _ = _age_order(memory.next, memory.count, m)
    return rank, rank >= m - memory.count


# ---------------------------------------------------------------------------------------------
# L-BFGS


class InverseMemory(NamedTuple):
    """L-BFGS's correction pairs and the small matrices of the compact form of ``H``.

    The pairs stay in a circular buffer (slot ``k`` is rewritten in place, no O(mn) shifting); the
    ``m x m`` matrices are kept in age order, oldest first and the newest pair last, so that ``R``
    is triangular as stored and a push is a shift by one row and column. Empty slots come first.
    ``R^-1`` and ``Y^T Y`` are zero between a stored pair and an empty slot; the empty slots' other
    entries are stale (finite in ``R^-1`` and ``Y^T Y``) and masked where used.
    """

    w: Array  # (m, 2, n) s and y of the pair in slot k at [k]: one buffer, one pass, one write
    rinv: Array  # (m, m) R^-1, R_ij = s_i . y_j for i <= j (upper triangular), age order
    yy: Array  # (m, m) y_i . y_j, age order
    sy: Array  # (m,) s_i . y_i (the diagonal D of R), age order
    theta: Array  # y.y / s.y of the newest pair (H0 = I / theta)
    count: Array  # number of stored pairs
    next: Array  # slot the next pair goes to


def init_inverse_memory(x, maxcor: int) -> InverseMemory:
    n, dtype = x.shape[0], x.dtype
    return InverseMemory(
        w=jnp.zeros((maxcor, 2, n), dtype), rinv=jnp.eye(maxcor, dtype=dtype),
        yy=jnp.zeros((maxcor, maxcor), dtype), sy=jnp.ones((maxcor,), dtype),
        theta=jnp.ones((), dtype), count=jnp.zeros((), jnp.int32), next=jnp.zeros((), jnp.int32),
    )


def push_inverse_pair(memory: InverseMemory, s, y, keep=True) -> InverseMemory:
    """Stores ``(s, y)`` over the oldest pair when ``keep`` and updates ``R^-1``, ``Y^T Y`` and ``D``.

    One pass over the buffer (``[S; Y] y``) gives the new column of ``R`` and row of ``Y^T Y``. ``R``
    gains that column and loses its first row and column (the oldest pair); the inverse of a
    triangular matrix's trailing block is the trailing block of its inverse, and
    ``[[R, r], [0, d]]^-1 = [[R^-1, -R^-1 r / d], [0, 1 / d]]``, so ``R^-1`` is updated with one
    ``m x m`` product (column-wise inversion, as stable as a triangular solve; Higham 2002, 14.2)
    and the direction needs no triangular solve: on a small problem the solver's calls into LAPACK
    cost more than the rest of the iteration.
    """
    m, _, n = memory.w.shape
    k = memory.next
    count = jnp.minimum(memory.count + 1, m)
    order, _, valid = _age_order((k + 1) % m, count, m)

    def update():
        # Products with the pairs already stored (the slot's old pair is replaced by the new one's).
        p = (memory.w.reshape(2 * m, n) @ y).reshape(m, 2).at[k].set(jnp.stack([s @ y, y @ y]))
        # Against the pairs in age order (the last: itself); zero against the empty slots, whose
        # stale pairs need not have finite products with this one.
        sy_new, yy_new = p[order, 0], jnp.where(valid, p[order, 1], 0.0)
        d = sy_new[-1]
        d = jnp.where(d != 0, d, 1.0)  # s.y = 0 only where the pair is not kept (selected, not branched)
        older = valid.at[-1].set(False)
        # Shifted by one, R^-1 keeps zeros between a stored pair and an empty slot (the entries
        # inverse_hessian_times relies on); the last row, the oldest pair's, becomes the new one's.
        rinv = jnp.roll(memory.rinv, -1, axis=(0, 1)).at[-1].set(0.0)
        column = jnp.where(older, -(rinv @ jnp.where(older, sy_new, 0.0)) / d, 0.0).at[-1].set(1.0 / d)
        yy = jnp.roll(memory.yy, -1, axis=(0, 1))
        yy = yy.at[-1, :].set(yy_new).at[:, -1].set(yy_new)
        sy = jnp.roll(memory.sy, -1).at[-1].set(d)
        theta = yy_new[-1] / d
        return rinv.at[:, -1].set(column), yy, sy, theta, _usable_scale(theta) & jnp.all(jnp.isfinite(column))

    old = (memory.rinv, memory.yy, memory.sy, memory.theta)
    if memory.w.size < descent_lib.SELECT_BELOW:  # a small update costs less than a conditional...
        *new, finite = update()  # ... and the select below is the only one it needs
    else:
        *new, finite = lax.cond(keep, update, lambda: (*old, jnp.ones((), bool)))
    # A pair whose products overflow is not stored (as in push_pair). The test also makes the
    # write below depend on the products, so that XLA writes the pair in place after they have read
    # the buffer (with no data dependence between the two, it copies the whole buffer every trip).
    keep = keep & finite
    rinv, yy, sy, theta = (jnp.where(keep, a, b) for a, b in zip(new, old))
    w = memory.w.at[k].set(jnp.where(keep, jnp.stack([s, y]), memory.w[k]))
    return InverseMemory(
        w=w, rinv=rinv, yy=yy, sy=sy, theta=theta,
        count=jnp.where(keep, count, memory.count), next=jnp.where(keep, (k + 1) % m, k),
    )


def inverse_hessian_times(memory: InverseMemory, g) -> Array:
    """Returns ``H g`` for the L-BFGS inverse-Hessian approximation ``H``, from its compact form.

    ``H = gamma I + [S Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]] [S Y]^T`` with
    ``gamma = s.y / y.y`` of the newest pair (``H0 = I / theta``, as in L-BFGS-B), ``R`` the upper
    triangle of ``S^T Y`` in the order the pairs were stored and ``D`` its diagonal (Byrd, Nocedal and
    Schnabel 1994, Theorem 2.2). The same matrix as the two-loop recursion (Nocedal & Wright,
    Algorithm 7.4) in two passes over the buffer and ``m x m`` products with the stored ``R^-1``,
    instead of ``2m`` dependent steps: a loop of small sequential steps is what costs most per
    iteration on small problems, whose buffers are read in no time.

    References:
      Byrd, Nocedal and Schnabel (1994), Representations of quasi-Newton matrices and their use in
      limited memory methods, Math. Programming 63.
    """
    m, _, n = memory.w.shape
    w = memory.w.reshape(2 * m, n)  # rows s_0, y_0, s_1, y_1, ... (a free reshape)
    order, rank, valid = _age_order(memory.next, memory.count, m)
    gamma = 1.0 / memory.theta
    p = (w @ g).reshape(m, 2)
    a = jnp.where(valid, p[order, 0], 0.0)
    b = jnp.where(valid, p[order, 1], 0.0)
    # The empty slots' rows and columns of R^-1 and Y^T Y are not masked (an m x m select each, most of
    # an iteration's work on a small problem): the vectors they multiply are zero there, the products'
    # empty entries are masked instead, and both matrices are zero between a stored pair and an empty
    # slot (push_inverse_pair), which gives the same values (finite stale entries times zero add zero).
    r_inv_a = jnp.where(valid, memory.rinv @ a, 0.0)
    middle = jnp.where(valid, memory.sy * r_inv_a + gamma * (memory.yy @ r_inv_a), 0.0)
    u = (middle - gamma * b) @ memory.rinv  # R^-T (...)
    coefficients = jnp.stack([u[rank], -gamma * r_inv_a[rank]], axis=1)  # back to slot order
    return gamma * g + coefficients.reshape(2 * m) @ w


def lbfgs_direction(memory: "InverseMemory", x, g, lower, upper) -> Array:
    """The L-BFGS search direction ``-H g`` (the box arguments are unused: L-BFGS is unconstrained)."""
    del x, lower, upper
    return -inverse_hessian_times(memory, g)


# ---------------------------------------------------------------------------------------------
# L-BFGS-B


class _Compact(NamedTuple):
    """Compact representation B = theta I - W M W^T with W = [Y^T, theta S^T] (rows of size n)."""

    theta: Array
    minv: Array  # (2m, 2m) the middle matrix's inverse [[-D, L^T], [L, theta S^T S]]
    mmat: Array  # (2m, 2m) its inverse M
    valid2: Array  # (2m,) slots holding a pair, repeated for the Y and S halves


def _linear_solve(a, b):
    """``jnp.linalg.solve`` in at least float32 (LAPACK has no float16 or bfloat16), in ``a``'s dtype."""
    wide = jnp.promote_types(a.dtype, jnp.float32)
    return jnp.linalg.solve(a.astype(wide), b.astype(wide)).astype(a.dtype)


def _compact_representation(memory: LimitedMemory) -> _Compact:
    rank, valid = _ranks(memory)
    both = valid[:, None] & valid[None, :]
    theta = memory.theta
    sy = jnp.where(both, memory.sy, 0.0)
    d = jnp.diag(jnp.diagonal(sy))
    lower_tri = jnp.where(rank[:, None] > rank[None, :], sy, 0.0)  # L_ij = s_i.y_j for i newer than j
    ss = jnp.where(both, memory.ss, 0.0)
    minv = jnp.block([[-d, lower_tri.T], [lower_tri, theta * ss]])
    valid2 = jnp.concatenate([valid, valid])
    # Empty slots get an identity block, decoupled from the rest (their rows of W are masked to 0).
    minv = jnp.where(valid2[:, None] & valid2[None, :], minv, jnp.eye(minv.shape[0], dtype=minv.dtype))
    mmat = _linear_solve(minv, jnp.eye(minv.shape[0], dtype=minv.dtype))
    return _Compact(theta=theta, minv=minv, mmat=mmat, valid2=valid2)


def _w_transpose_times(memory: LimitedMemory, compact: _Compact, v) -> Array:
    """W^T v = [Y v, theta S v] (2m,), zero in empty slots."""
    return jnp.where(compact.valid2, jnp.concatenate([memory.y @ v, compact.theta * (memory.s @ v)]), 0.0)


def _w_times(memory: LimitedMemory, compact: _Compact, p) -> Array:
    """W p = Y^T p_Y + theta S^T p_S (n,)."""
    m = memory.s.shape[0]
    p = jnp.where(compact.valid2, p, 0.0)
    return p[:m] @ memory.y + compact.theta * (p[m:] @ memory.s)


class _Path(NamedTuple):
    """The projected steepest-descent path ``x(t) = P(x - t g)`` of the generalized Cauchy point."""

    d: Array  # (n,) direction: -g on the variables that move, 0 on those blocked at a bound
    t: Array  # (n,) time at which each variable reaches its bound (inf: never)
    blocked: Array  # (n,) at a bound with the gradient pointing out of the box, or fixed
    nbreak: Array  # number of finite breakpoints
    bounded: Array  # every moving variable has a breakpoint: the path ends at the last one


def _projected_path(x, g, lower, upper) -> _Path:
    fixed = lower == upper
    blocked = fixed | ((x <= lower) & (g >= 0)) | ((x >= upper) & (g <= 0))
    d = jnp.where(blocked | (g == 0), 0.0, -g)
    t = jnp.where((d < 0) & jnp.isfinite(lower), (x - lower) / jnp.where(d < 0, -d, 1), jnp.inf)
    t = jnp.where((d > 0) & jnp.isfinite(upper), (upper - x) / jnp.where(d > 0, d, 1), t)
    has_break = jnp.isfinite(t)
    return _Path(d=d, t=t, blocked=blocked, nbreak=jnp.sum(has_break),
                 bounded=jnp.all(has_break | (d == 0)))


class _Window(NamedTuple):
    """The ``count`` smallest breakpoints in increasing order (ties by index), padded to a static size."""

    index: Array  # (L,) variables, sorted; entries from ``count`` on are padding
    count: Array  # number of valid entries
    t_next: Array  # the breakpoint after the window (inf: none)


class _Stop(NamedTuple):
    """Where the search along the path stopped, if it did within the window."""

    found: Array
    tsum: Array  # time of the Cauchy point along the path
    c: Array  # (2m,) W^T (xcp - x)
    hit: Array  # (n,) variables fixed at a bound before the Cauchy point


def _search_window(memory, compact, path: _Path, p0, window: _Window, x, lower, upper) -> _Stop:
    """Slope and curvature of the model on every segment of the window at once, and the first minimiser.

    The sequential algorithm (Byrd et al. 1995, Algorithm CP) updates the slope ``f1`` and the
    curvature ``f2`` of ``q(x(t))`` segment by segment with rank-one terms in the breakpoint's row
    ``w_b`` of ``W``. Their sums have closed forms in prefix sums over the sorted breakpoints: with
    ``p_k = W^T d_k = p_0 - sum_{j<k} d_j w_j`` (the direction with the first ``k`` breakpoints
    fixed), ``c_k = W^T (x(t_k) - x) = t_k p_k + sum_{j<k} z_j w_j`` and ``dd_k = |d_k|^2``,

        f1_k = -dd_k + theta t_k dd_k - c_k^T M p_k,    f2_k = theta dd_k - p_k^T M p_k,

    so one cumulative sum of the ``(4m, L)`` rows gives every segment (O(L m^2) work, no loop).
    ``f2`` keeps L-BFGS-B's floor ``eps * f2_0`` against cancellation. The minimiser lies in segment
    ``k`` when ``-f1_k / f2_k < t_{k+1} - t_k``; the search stops at the first such segment.
    """
    eps = jnp.finfo(path.d.dtype).eps
    size = window.index.shape[0]
    valid = jnp.arange(size) < window.count
    idx = window.index
    ts = jnp.where(valid, path.t[idx], 0.0)
    ds = jnp.where(valid, path.d[idx], 0.0)
    zs = jnp.where(valid, jnp.where(ds > 0, upper[idx], lower[idx]) - x[idx], 0.0)  # the step to the bound
    ws = jnp.where(compact.valid2[:, None],
                   jnp.concatenate([memory.y[:, idx], compact.theta * memory.s[:, idx]]), 0.0)
    # State k = 0..size: the segment that starts once the first k breakpoints are fixed.
    prefix = jnp.cumsum(jnp.concatenate([ds * ws, zs * ws, (ds * ds)[None]]), axis=1)
    prefix = jnp.concatenate([jnp.zeros((prefix.shape[0], 1), prefix.dtype), prefix], axis=1)
    m2 = p0.shape[0]
    t_start = jnp.concatenate([jnp.zeros((1,), ts.dtype), ts])
    p = p0[:, None] - prefix[:m2]
    c = t_start * p + prefix[m2:2 * m2]
    dd = path.d @ path.d - prefix[-1]
    mp = compact.mmat @ p
    f2 = compact.theta * dd - jnp.sum(p * mp, axis=0)
    f2 = f2.at[1:].set(jnp.maximum(eps * f2[0], f2[1:]))
    f1 = -dd + compact.theta * t_start * dd - jnp.sum(c * mp, axis=0)
    k = jnp.arange(size + 1)
    dtm = -f1 / f2
    # Past the last breakpoint of a path that ends there, the Cauchy point is that breakpoint.
    dtm = jnp.where((k == path.nbreak) & (k > 0) & path.bounded, 0.0, dtm)
    t_end = jnp.concatenate([ts, jnp.full((1,), jnp.inf, ts.dtype)])
    t_end = jnp.where(k == window.count, window.t_next, t_end)
    stop = (k <= window.count) & ((dtm < t_end - t_start) | (k == path.nbreak))
    kstar = jnp.argmax(stop)
    step = jnp.where(dtm[kstar] > 0, dtm[kstar], 0.0)  # also 0 for 0/0 when nothing moves
    hit = jnp.zeros(path.d.shape, bool).at[idx].set(jnp.arange(size) < kstar)
    return _Stop(found=jnp.any(stop), tsum=t_start[kstar] + step, c=c[:, kstar] + step * p[:, kstar],
                 hit=hit)


def _first_window(path: _Path) -> _Window:
    """Segment 0 alone: ends at the smallest breakpoint."""
    return _Window(index=jnp.zeros((0,), jnp.int32), count=jnp.zeros((), jnp.int32), t_next=jnp.min(path.t))


def _smallest_window(path: _Path, size: int) -> _Window:
    """The breakpoints below the ``size``-th smallest one, found by ``top_k`` on float32 copies.

    Rounding to float32 keeps the order (not strictly), so every breakpoint whose float32 value is
    below that of the ``size``-th smallest is selected and they form a prefix of the exact order;
    they are then sorted exactly. (``top_k`` of float32 is the fast selection on CPU and GPU alike.)
    """
    t32 = path.t.astype(jnp.float32)
    # The barrier keeps XLA from fusing top_k with its consumers, which turns it into a full sort.
    neg, index = lax.optimization_barrier(lax.top_k(-t32, size))
    cut = -neg[-1]
    inside = t32[index] < cut
    order = jnp.lexsort((index, jnp.where(inside, path.t[index], jnp.inf)))
    return _Window(index=index[order], count=jnp.sum(inside).astype(jnp.int32),
                   t_next=jnp.min(jnp.where(t32 >= cut, path.t, jnp.inf)))


def _full_window(path: _Path) -> _Window:
    index = jnp.argsort(path.t)  # stable: ties in index order, as the sequential algorithm
    return _Window(index=index.astype(jnp.int32), count=path.nbreak.astype(jnp.int32),
                   t_next=jnp.asarray(jnp.inf, path.t.dtype))


def cauchy_point(memory: LimitedMemory, compact: _Compact, x, g, lower, upper, *, window: int = 256):
    """Generalized Cauchy point of the quadratic model along the projected gradient path.

    Algorithm CP of Byrd, Lu, Nocedal & Zhu (1995), as L-BFGS-B 3.0's ``cauchy`` implements it, with
    the breakpoint loop replaced by prefix sums over the sorted breakpoints (``_search_window``):
    no loop over breakpoints, and the same point as the sequential algorithm to rounding. Like
    scipy's heap, it sorts only as far as needed: segment 0 first (one ``min``), then the
    ``window``, ``16 window``, ``256 window``, ... smallest breakpoints (below ``n``), and only if the
    Cauchy point lies beyond them all of them.
    With no pair stored the model is ``theta I``, separable, and the point is ``P(x - g / theta)``.

    Args:
      memory, compact: the correction pairs and their compact representation.
      x, g, lower, upper: flat point, gradient and box.
      window: how many of the smallest breakpoints the second stage examines (16 times more each
        further stage).

    Returns:
      ``(xcp, c, free)``: the Cauchy point, ``c = W^T (xcp - x)`` and the mask of variables that are
      free (not at a bound) at ``xcp``.

    References:
      Byrd, Lu, Nocedal and Zhu (1995), A limited memory algorithm for bound constrained
      optimization, SIAM J. Sci. Comput. 16(5), Algorithm CP.

    Example:
      >>> memory = init_memory(jnp.zeros(3), 5)
      >>> xcp, c, free = cauchy_point(memory, _compact_representation(memory), jnp.zeros(3),
      ...                             jnp.array([1.0, -2.0, 0.5]), jnp.zeros(3), jnp.ones(3))
      >>> xcp
      Array([0., 1., 0.], dtype=float32)
    """
    path = _projected_path(x, g, lower, upper)
    p0 = _w_transpose_times(memory, compact, path.d)

    def steepest_descent():
        hit = path.t <= 1.0 / compact.theta
        return _Stop(found=jnp.ones((), bool), tsum=1.0 / compact.theta, c=jnp.zeros_like(p0), hit=hit)

    def search(make_window, otherwise):
        return lambda: _search_or(_search_window(memory, compact, path, p0, make_window(), x, lower, upper),
                                  otherwise)

    stage = search(lambda: _full_window(path), None)
    sizes = [window * 16**i for i in range(8) if window * 16**i < x.shape[0]]
    for size in reversed(sizes):
        stage = search(functools.partial(_smallest_window, path, size), stage)
    first = search(lambda: _first_window(path), stage)
    stop = lax.cond(memory.count == 0, steepest_descent, first)
    xcp = jnp.where(stop.hit, jnp.where(path.d > 0, upper, lower), x + stop.tsum * path.d)
    return jnp.clip(xcp, lower, upper), stop.c, ~(path.blocked | stop.hit)


def _search_or(stop: _Stop, otherwise) -> _Stop:
    """``stop`` if the search found the Cauchy point, else the result of the next stage."""
    if otherwise is None:
        return stop
    return lax.cond(stop.found, lambda: stop, otherwise)


def subspace_minimization(memory: LimitedMemory, compact: _Compact, x, g, lower, upper, xcp, c, free):
    """Minimises the quadratic model over the variables free at the Cauchy point (direct primal method).

    The reduced Newton step solves ``(theta I - A M A^T) d = r`` on the free set, with ``A = Z^T W``,
    by the Sherman–Morrison–Woodbury identity, which needs only the ``2m x 2m`` system
    ``(M^{-1} - A^T A / theta) v = A^T r`` (``A^T A`` from :func:`update_free_gram`). The step from
    ``xcp`` is then projected onto the box; if that projection is not a descent direction from
    ``x``, it is instead truncated at the first bound (L-BFGS-B 3.0, Morales & Nocedal 2011).

    Returns:
      ``(z, free_gram)``: the new point and the Gram matrix of ``[Y; S]`` over ``free``.
    """
    theta = compact.theta
    m = memory.s.shape[0]
    # The reduced gradient is r = Z^T (r0 + W M c): its W^T Z product is W^T r0 + A^T A M c, and
    # the step r / theta + W v / theta^2 on the free set is r0 / theta + W (M c / theta + v / theta^2),
    # two passes over the buffers in all (the first also gives the newest pair's free Gram rows).
    r0 = jnp.where(free, -g - theta * (xcp - x), 0.0)
    with jax.named_scope("free_gram"):
        unscaled_gram, w0_r0 = update_free_gram(memory, free, r0)
    scale = jnp.concatenate([jnp.ones((m,), theta.dtype), jnp.full((m,), theta)])  # W = [Y; theta S]
    both = compact.valid2[:, None] & compact.valid2[None, :]
    gram = jnp.where(both, scale[:, None] * unscaled_gram * scale, 0.0)
    wtr0 = jnp.where(compact.valid2, scale * w0_r0, 0.0)
    mc = compact.mmat @ c
    v = _linear_solve(compact.minv - gram / theta, wtr0 + gram @ mc)
    dhat = jnp.where(free, r0 / theta + _w_times(memory, compact, mc / theta + v / theta**2), 0.0)

    projected = jnp.clip(xcp + dhat, lower, upper)
    clipped = jnp.any(projected != xcp + dhat)
    uphill = (projected - x) @ g > 0

    def truncated():
        return jnp.clip(xcp + max_step_in_box(xcp, dhat, lower, upper, 1.0) * dhat, lower, upper)

    return lax.cond(clipped & uphill, truncated, lambda: projected), unscaled_gram


def free_gram(memory: LimitedMemory, free) -> Array:
    """``[Y; S] Z Z^T [Y; S]^T``, the Gram matrix of the stored pairs over the variables ``free``."""
    w = jnp.concatenate([memory.y, memory.s])
    return jnp.where(free, w, 0.0) @ w.T


def update_free_gram(memory: LimitedMemory, free, r, most: Optional[int] = None):
    """:func:`free_gram` for the free set ``free``, updated from the memory's, and ``[Y; S] r``.

    ``memory.free_gram`` is the Gram matrix over ``memory.free`` for the slots not ``stale``. Its
    entries between those slots change by the variables that entered the free set (their outer
    products added) and those that left (subtracted), gathered into ``most`` (default 512) columns,
    or ``n / 16`` when more changed (L-BFGS-B's ``formk`` does the same); the newest pair's rows
    come from the pass over the buffers that also gives ``[Y; S] r``. When even more changed while older pairs are stored (rare: the
    active set forms in the first iteration, when only one pair is), or more than one pair is
    stale, the matrix is recomputed: a full ``(2m, n) x (n, 2m)`` product, which costs about ten
    passes over the buffers on a CPU.

    Returns:
      ``(gram, [Y; S] r)``; rows and columns of empty slots are unspecified.
    """
    m, n = memory.s.shape
    newest = (memory.next - 1) % m
    _, valid = _ranks(memory)
    # Four columns, not three: XLA's CPU dot runs (m, n) x (n, 4) at about the cost of a matrix-vector
    # product, and (n, 3) at twice that (measured, jax 0.10).
    v = jnp.stack([r, jnp.where(free, memory.y[newest], 0.0), jnp.where(free, memory.s[newest], 0.0),
                   jnp.zeros_like(r)], axis=1)
    p = jnp.concatenate([memory.y @ v, memory.s @ v])
    small = min(512, n) if most is None else most
    if small >= n:
        gram = free_gram(memory, free)
    else:
        sizes = sorted({small, max(small, n // 16)})  # sort no further than needed, as the Cauchy point
        changed = free != memory.free
        nchanged = jnp.sum(changed)
        older = valid & ~memory.stale
        others_stale = jnp.any(memory.stale & valid & (jnp.arange(m) != newest))

        def gathered(size):
            index = jnp.nonzero(changed, size=size, fill_value=0)[0]
            sign = jnp.where(jnp.arange(size) < nchanged, jnp.where(free[index], 1.0, -1.0), 0.0)
            w = jnp.concatenate([memory.y[:, index], memory.s[:, index]])
            return memory.free_gram + (w * sign.astype(w.dtype)) @ w.T

        # 0: nothing changed, or only the newest pair is stored (its rows are set below); then the
        # gathered updates by increasing size; last, the full recomputation.
        branches = [lambda: memory.free_gram, *(functools.partial(gathered, size) for size in sizes),
                    lambda: free_gram(memory, free)]
        stage = 1 + jnp.sum(nchanged > jnp.asarray(sizes))
        stage = jnp.where(jnp.any(older) & (nchanged > 0), stage, 0)
        index = jnp.where(others_stale, len(branches) - 1, stage)
        gram = lax.switch(index, branches)
    ry, rs = p[:, 1], p[:, 2]
    fresh = gram.at[newest, :].set(ry).at[:, newest].set(ry)
    fresh = fresh.at[m + newest, :].set(rs).at[:, m + newest].set(rs)
    return jnp.where(memory.stale[newest], fresh, gram), p[:, 0]


def lbfgsb_direction(memory: LimitedMemory, x, g, lower, upper):
    """The L-BFGS-B search direction: subspace minimiser from the generalized Cauchy point, minus ``x``.

    With no pair stored, the direction is the step to the Cauchy point of ``theta I`` (a projected
    steepest-descent step), as in L-BFGS-B. Returns ``(d, memory)``: the memory keeps the free set
    of the subspace step and its Gram matrix, which the next iteration updates.
    """
    compact = _compact_representation(memory)
    with jax.named_scope("cauchy_point"):
        xcp, c, free = cauchy_point(memory, compact, x, g, lower, upper)

    @jax.named_scope("subspace_minimization")
    def subspace():
        z, gram = subspace_minimization(memory, compact, x, g, lower, upper, xcp, c, free)
        return z, free, gram, jnp.zeros_like(memory.stale)

    z, free, gram, stale = lax.cond(
        (memory.count > 0) & jnp.any(free), subspace,
        lambda: (xcp, memory.free, memory.free_gram, memory.stale),
    )
    return z - x, memory._replace(free=free, free_gram=gram, stale=stale)


def _memory_is_empty(memory) -> Array:
    return memory.count == 0


def lbfgs(maxcor: int) -> DescentMethod:
    """L-BFGS with ``maxcor`` correction pairs, for :func:`jaxsecond.descent.run_descent`."""
    return DescentMethod(
        init_memory=functools.partial(init_inverse_memory, maxcor=maxcor),
        direction=lbfgs_direction,
        update_memory=push_inverse_pair,
        reset_memory=reset_memory,
        memory_is_empty=_memory_is_empty,
        direction_size=lambda memory: memory.w.size,
    )


def lbfgsb(maxcor: int) -> DescentMethod:
    """L-BFGS-B with ``maxcor`` correction pairs, for :func:`jaxsecond.descent.run_descent`."""
    return lbfgs(maxcor)._replace(
        init_memory=functools.partial(init_memory, maxcor=maxcor), direction=lbfgsb_direction,
        update_memory=push_pair, direction_updates=("free", "free_gram", "stale"), direction_size=None,
    )


# ---------------------------------------------------------------------------------------------
# BFGS (dense)


class DenseInverseHessian(NamedTuple):
    """The BFGS inverse-Hessian approximation ``H`` (n x n) and whether it holds any update."""

    h: Array
    updated: Array


def bfgs_update(memory: DenseInverseHessian, s, y, keep=True) -> DenseInverseHessian:
    """The BFGS update ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T``, ``rho = 1 / s.y``.

    Written as rank-two corrections (O(n^2), no n x n products), as Nocedal & Wright (6.17);
    applied only when ``keep`` (the rejected update is masked out, in place).
    """
    rho = 1.0 / (s @ y)
    hy = memory.h @ y
    yhy = y @ hy
    h = (
        memory.h
        - rho * (jnp.outer(hy, s) + jnp.outer(s, hy))
        + (rho * rho * yhy + rho) * jnp.outer(s, s)
    )
    return DenseInverseHessian(h=jnp.where(keep, h, memory.h), updated=memory.updated | keep)


def _bfgs_init(x) -> DenseInverseHessian:
    # scipy starts from H0 = I (its hess_inv0 default) and lets the first line search set the scale.
    return DenseInverseHessian(h=jnp.eye(x.shape[0], dtype=x.dtype), updated=jnp.zeros((), bool))


def _bfgs_reset(memory: DenseInverseHessian, forget=True) -> DenseInverseHessian:
    fresh = _bfgs_init(memory.h[0])
    return DenseInverseHessian(
        h=jnp.where(forget, fresh.h, memory.h), updated=jnp.where(forget, False, memory.updated)
    )


def bfgs() -> DescentMethod:
    """Dense BFGS (scipy's ``method="BFGS"``): ``d = -H g`` with a strong Wolfe search.

    The search constants and first trial step are those of scipy's ``line_search_wolfe1``
    (``c1 = 1e-4``, ``c2 = 0.9``, ``xtol = 1e-14``).

    References:
      Nocedal and Wright (2006), Numerical Optimization, 2nd ed., Algorithm 6.1.
    """
    return DescentMethod(
        init_memory=_bfgs_init,
        direction=lambda memory, x, g, lower, upper: -(memory.h @ g),
        update_memory=bfgs_update,
        reset_memory=_bfgs_reset,
        memory_is_empty=lambda memory: ~memory.updated,
        c1=1e-4,
        c2=0.9,
        xtol=1e-14,
        initial_step=wolfe1_initial_step(start_from_gradient_norm=True),
    )
