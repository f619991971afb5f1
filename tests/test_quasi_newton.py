"""L-BFGS and L-BFGS-B internals against dense references built from the same correction pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxsecond import quasi_newton as qn

N, M = 7, 4


def _pairs(count, seed=0):
    """Correction pairs from a random SPD quadratic (so s.y > 0), oldest first."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, N))
    hess = a @ a.T + N * np.eye(N)
    s = rng.normal(size=(count, N))
    return s, s @ hess


def _memory(s, y, inverse=False, forgotten=0):
    """The pairs pushed in order; after ``forgotten`` other pairs and a reset (L-BFGS-B's restart),
    which leave old pairs in the slots that are now empty."""
    init, push = (qn.init_inverse_memory, qn.push_inverse_pair) if inverse else (qn.init_memory, qn.push_pair)
    memory = init(jnp.zeros(N), M)
    old_s, old_y = _pairs(forgotten, seed=99)
    for si, yi in zip(old_s, old_y):
        memory = push(memory, jnp.asarray(si), jnp.asarray(yi))
    if forgotten:
        memory = qn.reset_memory(memory)
    for si, yi in zip(s, y):
        memory = push(memory, jnp.asarray(si), jnp.asarray(yi))
    return memory


def _dense_bfgs(s, y):
    """Direct BFGS update of B from B0 = theta I (theta = y.y/s.y of the newest pair)."""
    theta = y[-1] @ y[-1] / (s[-1] @ y[-1])
    b = theta * np.eye(N)
    for si, yi in zip(s, y):
        bs = b @ si
        b = b - np.outer(bs, bs) / (si @ bs) + np.outer(yi, yi) / (yi @ si)
    return b


# Partially filled, full and wrapped buffers, and two pairs over the old ones of a reset memory.
@pytest.mark.parametrize("count, forgotten", [(1, 0), (3, 0), (M, 0), (M + 3, 0), (2, M + 1)])
def test_compact_inverse_is_the_inverse_bfgs_matrix(count, forgotten):
    s, y = _pairs(count)
    kept = slice(max(0, count - M), count)
    memory = _memory(s, y, inverse=True, forgotten=forgotten)
    g = np.random.default_rng(1).normal(size=N)
    expected = np.linalg.solve(_dense_bfgs(s[kept], y[kept]), g)
    np.testing.assert_allclose(qn.inverse_hessian_times(memory, jnp.asarray(g)), expected, rtol=1e-9)


@pytest.mark.parametrize("count", [1, M, M + 2])
def test_compact_representation_is_the_bfgs_matrix(count):
    s, y = _pairs(count)
    kept = slice(max(0, count - M), count)
    memory = _memory(s, y)
    compact = qn._compact_representation(memory)
    w = np.concatenate([np.asarray(memory.y), float(compact.theta) * np.asarray(memory.s)])
    valid = np.asarray(compact.valid2)
    w = w * valid[:, None]
    b = float(compact.theta) * np.eye(N) - w.T @ np.asarray(compact.mmat) @ w
    np.testing.assert_allclose(b, _dense_bfgs(s[kept], y[kept]), rtol=1e-9, atol=1e-9)


def _reference_cauchy_point(b, x, g, lower, upper):
    """First local minimiser of q(p) = g.(p - x) + (p - x).B(p - x)/2 along P(x - t g), segment by segment."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_break = np.where(g < 0, (x - upper) / g, np.where(g > 0, (x - lower) / g, np.inf))
    points = np.unique(np.concatenate([[0.0], t_break[np.isfinite(t_break) & (t_break > 0)], [np.inf]]))
    for t0, t1 in zip(points[:-1], points[1:]):
        start = np.clip(x - t0 * g, lower, upper)
        d = np.where((t_break > t0), -g, 0.0)
        z = start - x
        slope = g @ d + z @ b @ d
        curv = d @ b @ d
        if slope >= 0:
            return start
        dt = -slope / curv if curv > 0 else np.inf
        if dt < t1 - t0:
            return start + dt * d
    return np.clip(x - points[-2] * g, lower, upper)


@pytest.mark.parametrize("seed", range(6))
def test_cauchy_point_is_first_minimiser_along_projected_path(seed):
    rng = np.random.default_rng(seed)
    s, y = _pairs(M + 1, seed)
    memory = _memory(s, y)
    b = _dense_bfgs(s[1:], y[1:])
    x = rng.uniform(-1, 1, N)
    lower, upper = x - rng.uniform(0, 0.5, N), x + rng.uniform(0, 0.5, N)
    lower[0], upper[1] = x[0], np.inf  # one variable on its bound, one side unbounded
    g = rng.normal(size=N) * 3
    compact = qn._compact_representation(memory)
    xcp, c, free = qn.cauchy_point(memory, compact, *map(jnp.asarray, (x, g, lower, upper)))
    expected = _reference_cauchy_point(b, x, g, lower, upper)
    np.testing.assert_allclose(xcp, expected, rtol=1e-9, atol=1e-12)
    w = np.concatenate([np.asarray(memory.y), float(compact.theta) * np.asarray(memory.s)])
    np.testing.assert_allclose(c, w @ (expected - x), rtol=1e-8, atol=1e-12)
    at_bound = (expected == lower) | (expected == upper)
    np.testing.assert_array_equal(np.asarray(free), ~at_bound)


def _sequential_cauchy_point(memory, compact, x, g, lower, upper):
    """The breakpoint loop of L-BFGS-B 3.0's ``cauchy`` (jaxsecond's implementation up to 5c9ddc3).

    Returns ``(xcp, c, free, nfixed)``, ``nfixed`` the number of breakpoints passed.
    """
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    fixed = lower == upper
    at_lower = x <= lower
    at_upper = x >= upper
    blocked = fixed | (at_lower & (g >= 0)) | (at_upper & (g <= 0))
    d = jnp.where(blocked | (g == 0), 0.0, -g)
    t = jnp.where((d < 0) & jnp.isfinite(lower), (x - lower) / jnp.where(d < 0, -d, 1), jnp.inf)
    t = jnp.where((d > 0) & jnp.isfinite(upper), (upper - x) / jnp.where(d > 0, d, 1), t)
    has_break = jnp.isfinite(t)
    # All moving variables have breakpoints: the path ends at the last one.
    bounded_path = jnp.all(has_break | (d == 0))
    nbreak = jnp.sum(has_break)
    # Sorting is the one O(n log n) step: skip it when the path meets no bound (unconstrained).
    order = lax.cond(nbreak > 0, jnp.argsort, lambda t: jnp.arange(t.shape[0]), t)

    mmat = compact.mmat
    p = qn._w_transpose_times(memory, compact, d)
    f1 = -(d @ d)
    f2 = -compact.theta * f1 - p @ (mmat @ p)
    f2_org = f2
    dtm0 = -f1 / f2

    wy_rows = memory.y.T  # (n, m) so that row b is the b-th component of each y
    ws_rows = memory.s.T

    def cond(state):
        k, _, _, _, _, _, _, done = state
        return (k < nbreak) & ~done

    def body(state):
        k, told, f1, f2, p, c, dtm, _ = state
        b = order[k]
        tj = t[b]
        dt = tj - told
        stop = dtm < dt
        db = d[b]
        zb = jnp.where(db > 0, upper[b], lower[b]) - x[b]
        wb = jnp.where(compact.valid2, jnp.concatenate([wy_rows[b], compact.theta * ws_rows[b]]), 0.0)
        c_new = c + dt * p
        mwb = mmat @ wb
        f1_new = f1 + dt * f2 + db * db - compact.theta * db * zb + db * (c_new @ mwb)
        f2_new = f2 - compact.theta * db * db + 2.0 * db * (p @ mwb) - db * db * (wb @ mwb)
        f2_new = jnp.maximum(eps * f2_org, f2_new)
        p_new = p - db * wb
        last = k + 1 == nbreak
        dtm_new = jnp.where(last & bounded_path, 0.0, -f1_new / f2_new)
        new = (k + 1, tj, f1_new, f2_new, p_new, c_new, dtm_new, stop)
        old = (k, told, f1, f2, p, c, dtm, stop)
        return jax.tree.map(lambda a, o: jnp.where(stop, o, a), new, old)

    zero = jnp.zeros((), dtype)
    init = (jnp.zeros((), nbreak.dtype), zero, f1, f2, p, jnp.zeros_like(p), dtm0, jnp.zeros((), bool))
    nfixed, told, _, _, p, c, dtm, _ = lax.while_loop(cond, body, init)
    dtm = jnp.maximum(dtm, 0.0)
    tsum = told + dtm
    c = c + dtm * p
    position = jnp.empty_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    hit = position < nfixed
    xcp = jnp.where(hit, jnp.where(d > 0, upper, lower), x + tsum * d)
    xcp = jnp.clip(xcp, lower, upper)
    free = ~(blocked | hit)
    return xcp, c, free, nfixed


_N_BIG, _WINDOW = 40, 4  # small window: the three stages of the search are all reached
_cauchy = jax.jit(qn.cauchy_point, static_argnames="window")
_sequential = jax.jit(_sequential_cauchy_point)


def _cauchy_case(case, seed):
    """A point, gradient and box of size ``_N_BIG`` for ``case`` (see the test's parameters)."""
    rng = np.random.default_rng(seed)
    n = _N_BIG
    x = rng.uniform(-1, 1, n)
    g = rng.normal(size=n)
    lower, upper = x - rng.uniform(0.05, 2, n), x + rng.uniform(0.05, 2, n)
    if case == "ties":  # groups of equal breakpoints, also at the Cauchy point's segment
        g = np.sign(g) * rng.choice([0.5, 1.0], n)
        lower, upper = x - 0.5, x + 0.5
    elif case == "one-sided":
        lower[::3], upper[1::3] = -np.inf, np.inf
        lower[2::6], upper[2::6] = -np.inf, np.inf
    elif case == "at-bounds":  # on a bound (blocked or leaving it), fixed, zero gradient
        lower[:8] = x[:8]
        upper[8:16] = x[8:16]
        lower[16:18] = upper[16:18] = x[16:18]
        g[18:24] = 0.0
    elif case == "tiny-curvature":  # only a slowly moving unbounded variable is left at the end
        lower, upper = x - 1e-3, x + 1e-3
        lower[0], upper[0] = -np.inf, np.inf
        g[0] = 1e-9
    elif case == "far":  # the Cauchy point is beyond most breakpoints
        g = g * 100
    return x, g, lower, upper


@pytest.mark.parametrize("case", ["random", "ties", "one-sided", "at-bounds", "tiny-curvature", "far"])
@pytest.mark.parametrize("count", [0, M + 2])
def test_cauchy_point_matches_the_sequential_algorithm(case, count):
    s, y = _pairs(count, seed=7)
    s = np.tile(s, (1, -(-_N_BIG // N)))[:, :_N_BIG]  # pairs of the bigger size
    y = np.tile(y, (1, -(-_N_BIG // N)))[:, :_N_BIG] + 0.1 * s
    memory = qn.init_memory(jnp.zeros(_N_BIG), M)
    for si, yi in zip(s, y):
        memory = qn.push_pair(memory, jnp.asarray(si), jnp.asarray(yi))
    compact = qn._compact_representation(memory)
    passed = set()
    for seed in range(4):
        args = [jnp.asarray(v) for v in _cauchy_case(case, seed)]
        xcp, c, free = _cauchy(memory, compact, *args, window=_WINDOW)
        xcp_ref, c_ref, free_ref, nfixed = _sequential(memory, compact, *args)
        # The sequential updates of slope and curvature lose about eps |d|^2 / |d_k|^2 (relative) once
        # most of the path is fixed ("far"); where only the variable with gradient 1e-9 still moves
        # ("tiny-curvature") the curvature is below L-BFGS-B's floor eps f2_0 and how far it moves
        # is rounding noise in either algorithm.
        atol = {"far": 1e-9, "tiny-curvature": 1e-8}.get(case, 1e-14)
        np.testing.assert_allclose(xcp, xcp_ref, rtol=1e-12, atol=atol)
        np.testing.assert_allclose(c, c_ref, rtol=1e-9, atol=max(atol, 1e-12) * 100)
        if case != "tiny-curvature":  # against the dense, segment-by-segment reference as well
            w = np.concatenate([np.asarray(memory.y), float(compact.theta) * np.asarray(memory.s)])
            w = w * np.asarray(compact.valid2)[:, None]
            b = float(compact.theta) * np.eye(_N_BIG) - w.T @ np.asarray(compact.mmat) @ w
            expected = _reference_cauchy_point(b, *map(np.asarray, args))
            np.testing.assert_allclose(xcp, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(free, free_ref)
        passed.add(min(int(nfixed), _WINDOW))
    if case == "far" and count:
        assert _WINDOW in passed  # the last stage, over all breakpoints, was needed
    if case == "random" and count:
        assert 0 in passed and len(passed - {0, _WINDOW}) > 0  # the first two stages


@pytest.mark.parametrize("count, forgotten", [(M, 0), (M + 2, 0), (2, M + 1)])
def test_subspace_step_is_the_reduced_newton_step(count, forgotten):
    rng = np.random.default_rng(3)
    s, y = _pairs(count, 3)
    memory = _memory(s, y, forgotten=forgotten)
    b = _dense_bfgs(s[-M:], y[-M:])
    x = rng.uniform(-1, 1, N)
    g = rng.normal(size=N)
    lower, upper = x - 1e3, x + 1e3  # wide box: the Newton point is inside
    lower[2] = x[2]  # ... except one variable held at its lower bound
    g[2] = abs(g[2])
    compact = qn._compact_representation(memory)
    args = [jnp.asarray(v) for v in (x, g, lower, upper)]
    xcp, c, free = qn.cauchy_point(memory, compact, *args)
    z, gram = qn.subspace_minimization(memory, compact, *args, xcp, c, free)
    w = np.concatenate([np.asarray(memory.y), np.asarray(memory.s)])
    both = np.outer(compact.valid2, compact.valid2)  # rows of empty slots are unspecified
    np.testing.assert_allclose(np.where(both, gram, 0), np.where(both, (w * np.asarray(free)) @ w.T, 0),
                               rtol=1e-12, atol=1e-12)
    f = np.asarray(free)
    rhs = -(g + b @ (np.asarray(xcp) - x))[f]
    expected = np.asarray(xcp).copy()
    expected[f] += np.linalg.solve(b[np.ix_(f, f)], rhs)
    np.testing.assert_allclose(z, expected, rtol=1e-8, atol=1e-10)
    assert not f[2] and z[2] == lower[2]


def test_memory_keeps_the_newest_pairs_in_a_circular_buffer():
    s, y = _pairs(M + 2)
    memory = _memory(s, y)
    assert int(memory.count) == M
    stored = {tuple(np.round(np.asarray(r), 12)) for r in memory.s}
    assert stored == {tuple(np.round(r, 12)) for r in s[2:]}
    np.testing.assert_allclose(memory.sy, np.asarray(memory.s) @ np.asarray(memory.y).T, rtol=1e-12)
    np.testing.assert_allclose(memory.theta, y[-1] @ y[-1] / (s[-1] @ y[-1]))
    assert int(qn.reset_memory(memory).count) == 0


def test_inverse_memory_matrices_are_those_of_the_stored_pairs():
    """R^-1, Y^T Y and D kept by shifting and bordering (age order) equal the matrices of the stored
    pairs computed afresh, through a wrapped buffer and after a reset."""
    for count, forgotten in ((M + 3, 2), (2, M + 1)):  # full and wrapped; partly filled after a reset
        s, y = _pairs(count)
        memory = _memory(s, y, inverse=True, forgotten=forgotten)
        kept = min(count, M)
        order = ((int(memory.next) + np.arange(M)) % M)[M - kept:]  # stored slots from the oldest
        S, Y = np.asarray(memory.w[order, 0]), np.asarray(memory.w[order, 1])
        np.testing.assert_allclose(S, s[count - kept:], rtol=1e-15)
        block = slice(M - kept, M)  # the matrices' stored block (age order, newest last)
        np.testing.assert_allclose(memory.rinv[block, block], np.linalg.inv(np.triu(S @ Y.T)), rtol=1e-10,
                                   atol=1e-14)
        np.testing.assert_allclose(memory.yy[block, block], Y @ Y.T, rtol=1e-12)
        np.testing.assert_allclose(memory.sy[block], np.sum(S * Y, axis=1), rtol=1e-12)
        np.testing.assert_allclose(memory.theta, y[-1] @ y[-1] / (s[-1] @ y[-1]), rtol=1e-12)


def test_inverse_memory_refuses_a_pair_whose_products_overflow():
    s, y = _pairs(2)
    memory = _memory(s[:1], y[:1], inverse=True)
    # s.y is finite and positive, y.y overflows: theta = y.y / s.y cannot be formed.
    after = qn.push_inverse_pair(memory, jnp.full(N, 1e-190), jnp.full(N, 1e200))
    for name in qn.InverseMemory._fields:
        np.testing.assert_array_equal(getattr(after, name), getattr(memory, name), err_msg=name)
    kept = qn.push_inverse_pair(memory, jnp.asarray(s[1]), jnp.asarray(y[1]))
    assert int(kept.count) == 2


@pytest.mark.parametrize("inverse", [False, True])
def test_a_pair_whose_curvature_overflows_is_not_stored(inverse):
    """s.y = inf with a finite y.y would give theta = y.y / s.y = 0 and an infinite H0 = I / theta:
    refused, as a pair whose y.y overflows is."""
    push = qn.push_inverse_pair if inverse else qn.push_pair
    s, y = _pairs(1)
    memory = _memory(s, y, inverse=inverse)
    after = push(memory, jnp.full(N, 1e300), jnp.full(N, 1e10))
    for name in type(memory)._fields:
        np.testing.assert_array_equal(getattr(after, name), getattr(memory, name), err_msg=name)


def test_branched_and_selected_loops_take_the_same_iterates(monkeypatch):
    """Below ``SELECT_BELOW`` elements the L-BFGS direction and push are computed on every trip and
    selected; above, taken by ``lax.cond``. Both forms must give the same solve (on a well-conditioned
    problem, where rounding differences between the two programs cannot change a decision)."""
    from jaxsecond import descent

    rng = np.random.default_rng(3)
    a = rng.normal(size=(20, 20))
    hess = jnp.asarray(a @ a.T / 20 + np.eye(20))
    b = jnp.asarray(rng.normal(size=20))

    def fun(x):
        return 0.5 * x @ hess @ x - b @ x + 0.25 * jnp.sum(x**4)

    x0 = jnp.ones(20, jnp.float64)
    options = descent.DescentOptions(
        gtol=jnp.asarray(1e-6, x0.dtype), ftol=jnp.asarray(0.0, x0.dtype), maxiter=jnp.int32(1000),
        maxfun=jnp.int32(2000), maxls=jnp.int32(20),
    )
    results = []
    for threshold in (2**30, 0):
        monkeypatch.setattr(descent, "SELECT_BELOW", threshold)
        solve = jax.jit(lambda x: descent.run_descent(jax.value_and_grad(fun), x, None, None, qn.lbfgs(M), options))
        results.append(solve(x0))
    selected, branched = results
    assert int(selected.status) == int(branched.status) == 0 and int(selected.nit) > M  # the buffer wrapped
    assert (int(selected.nit), int(selected.nfev)) == (int(branched.nit), int(branched.nfev))
    np.testing.assert_allclose(selected.x, branched.x, rtol=1e-10)


def test_unkept_pair_leaves_the_inverse_memory_unchanged(monkeypatch):
    from jaxsecond import descent

    s, y = _pairs(3)
    memory = _memory(s[:2], y[:2], inverse=True)
    for threshold in (2**30, 0):  # selected and branched
        monkeypatch.setattr(descent, "SELECT_BELOW", threshold)
        after = qn.push_inverse_pair(memory, jnp.asarray(s[2]), jnp.asarray(y[2]), jnp.asarray(False))
        for name in InverseFields:
            np.testing.assert_array_equal(getattr(after, name), getattr(memory, name), err_msg=name)


InverseFields = qn.InverseMemory._fields


def test_free_gram_follows_the_free_set_through_pushes_and_changes():
    """The Gram matrix over the free set, kept by updates, equals a recomputation after every step:
    pairs pushed (wrapping the buffer, one refused) while the free set changes by a few variables
    or more (the two gathered updates) or by many (recomputed), and two pairs pushed between updates."""
    rng = np.random.default_rng(5)
    n = 200  # gathered updates of at most 8 and n / 16 = 12 variables, recomputed above that
    memory = qn.init_memory(jnp.zeros(n), M)
    update = jax.jit(qn.update_free_gram, static_argnames="most")
    for step in range(3 * M):
        for _ in range(2 if step == 7 else 1):
            s = rng.normal(size=n)
            memory = qn.push_pair(memory, jnp.asarray(s), jnp.asarray(s * rng.uniform(1, 2, n)), step != 4)
        free = np.asarray(memory.free).copy()
        flip = rng.choice(n, size=(25, 3, 10)[step % 3], replace=False)
        free[flip] = ~free[flip]
        r = rng.normal(size=n)
        gram, w_r = update(memory, jnp.asarray(free), jnp.asarray(r), most=8)
        w = np.concatenate([np.asarray(memory.y), np.asarray(memory.s)])
        _, valid = qn._ranks(memory)
        valid2 = np.concatenate([valid, valid])
        both = valid2[:, None] & valid2[None, :]
        np.testing.assert_allclose(np.where(both, gram, 0), np.where(both, (w * free) @ w.T, 0),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(w_r, w @ r, rtol=1e-12, atol=1e-12)
        memory = memory._replace(free=jnp.asarray(free), free_gram=gram, stale=jnp.zeros(M, bool))
