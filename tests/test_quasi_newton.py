"""L-BFGS and L-BFGS-B internals against dense references built from the same correction pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsecond import quasi_newton as qn

N, M = 7, 4


def _pairs(count, seed=0):
    """Correction pairs from a random SPD quadratic (so s.y > 0), oldest first."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, N))
    hess = a @ a.T + N * np.eye(N)
    s = rng.normal(size=(count, N))
    return s, s @ hess


def _memory(s, y):
    memory = qn.init_memory(jnp.zeros(N), M)
    for si, yi in zip(s, y):
        memory = qn.push_pair(memory, jnp.asarray(si), jnp.asarray(yi))
    return memory


def _dense_bfgs(s, y):
    """Direct BFGS update of B from B0 = theta I (theta = y.y/s.y of the newest pair)."""
    theta = y[-1] @ y[-1] / (s[-1] @ y[-1])
    b = theta * np.eye(N)
    for si, yi in zip(s, y):
        bs = b @ si
        b = b - np.outer(bs, bs) / (si @ bs) + np.outer(yi, yi) / (yi @ si)
    return b


@pytest.mark.parametrize("count", [1, 3, M, M + 3])  # partially filled, full, and wrapped buffers
def test_two_loop_recursion_is_the_inverse_bfgs_matrix(count):
    s, y = _pairs(count)
    kept = slice(max(0, count - M), count)
    memory = _memory(s, y)
    g = np.random.default_rng(1).normal(size=N)
    expected = np.linalg.solve(_dense_bfgs(s[kept], y[kept]), g)
    np.testing.assert_allclose(qn.two_loop_recursion(memory, jnp.asarray(g)), expected, rtol=1e-9)


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


def test_subspace_step_is_the_reduced_newton_step():
    rng = np.random.default_rng(3)
    s, y = _pairs(M, 3)
    memory = _memory(s, y)
    b = _dense_bfgs(s, y)
    x = rng.uniform(-1, 1, N)
    g = rng.normal(size=N)
    lower, upper = x - 1e3, x + 1e3  # wide box: the Newton point is inside
    lower[2] = x[2]  # ... except one variable held at its lower bound
    g[2] = abs(g[2])
    compact = qn._compact_representation(memory)
    args = [jnp.asarray(v) for v in (x, g, lower, upper)]
    xcp, c, free = qn.cauchy_point(memory, compact, *args)
    z = qn.subspace_minimization(memory, compact, *args, xcp, c, free)
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
