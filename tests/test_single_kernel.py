"""The solver loop compiled into one CPU kernel: when the call is marked, and that marked loops of
every allowed form compile on this jax and compute what the plain loop computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxsecond as js
from jaxsecond import _single_kernel as single_kernel

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the mark is for XLA:CPU")

MARK = "xla_cpu_small_call"


def _marked(fun, *args) -> bool:
    """Whether we marked the call (XLA's own pass marks some tiny loops itself, so the optimised
    program is checked separately, where the mark is expected)."""
    return MARK in jax.jit(fun).lower(*args).as_text()


def _loop(step, init, trips=5):
    """``trips`` applications of ``step`` through the loop under test."""
    loop = lambda state: lax.while_loop(lambda s: s[0] < trips, lambda s: (s[0] + 1, step(s[1])), state)
    return single_kernel.call(loop, (0, init))[1]


def _plain(step, init, trips=5):
    return lax.fori_loop(0, trips, lambda i, x: step(x), init)


n = single_kernel.SINGLE_KERNEL_BELOW - 1  # the longest reduction admitted
N = 16 * single_kernel.SINGLE_KERNEL_BELOW - 1  # the largest array admitted
# Each step uses one of the forms the allow-list admits, at the largest size it admits.
ALLOWED_STEPS = {
    "elementwise": (lambda x: jnp.tanh(x) * 0.5 + jnp.where(x > 0, x, 0.1 * x) ** 2, jnp.linspace(-1, 1, N)),
    "reduction": (lambda x: x - 1e-3 * jnp.sum(x * x) * x + jnp.max(x) * 1e-3, jnp.linspace(-1, 1, n)),
    "row_reduction": (lambda x: x - 1e-3 * jnp.repeat(jnp.sum(x.reshape(3, -1), axis=1), n // 3), jnp.linspace(-1, 1, n)),
    "vector_dot": (lambda x: x * (1 - 1e-4 * (x @ x)), jnp.linspace(-1, 1, n)),
    "matrix_vector": (lambda x: x - 1e-6 * jnp.tile(x.reshape(15, -1).T @ (x.reshape(15, -1) @ x[:N // 15]), 15),
                      jnp.linspace(-1, 1, N)),
    "scatter_one": (lambda x: x.at[jnp.argmax(x[:n])].set(0.0).at[-1].add(1.0), jnp.linspace(-1, 1, N)),
    "gather_slices": (lambda x: jnp.concatenate([x[1:], x[:1]]) + x[jnp.array([3, 1, 2])].sum(), jnp.linspace(-1, 1, N)),
    "cond": (lambda x: lax.cond(x[0] > 0, lambda: x * 0.5, lambda: x + 1.0), jnp.linspace(-1, 1, N)),
    "inner_while": (lambda x: lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 0.9), (0, x))[1],
                    jnp.linspace(-1, 1, N)),
    "integers": (lambda x: (x * 3 + 1) % 7, jnp.arange(N, dtype=jnp.int32)),
    "cumulative_sum": (lambda x: jnp.cumsum(x) / n, jnp.linspace(-1, 1, n)),
    "gradient_of_stacked": (lambda x: x - 0.01 * jax.grad(lambda v: jnp.sum(jnp.stack([v[0] * v[1], v[1]]) ** 2))(x),
                            jnp.linspace(-1, 1, N)),  # grad transposes stack into unstack
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", sorted(ALLOWED_STEPS))
def test_allowed_forms_compile_marked_and_match_the_plain_loop(name, dtype):
    step, x = ALLOWED_STEPS[name]
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(dtype)
    assert _marked(lambda x: _loop(step, x), x)
    assert MARK in jax.jit(lambda x: _loop(step, x)).lower(x).compile().as_text()  # XLA kept it
    got = jax.jit(lambda x: _loop(step, x))(x)
    want = jax.jit(lambda x: _plain(step, x))(x)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12  # one kernel may sum in another order
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("name, step", [
    ("too_large", lambda x: jnp.concatenate([x, x])[::2] * 2.0),
    ("reduction_too_long", lambda x: x - 1e-3 * jnp.sum(jnp.concatenate([x, x[:1]]))),
    ("sort", lambda x: jnp.sort(x)),
    ("matrix_product", lambda x: jnp.tile((x.reshape(2, 4) @ x.reshape(4, 2)).ravel(), 2)),
    ("scatter_two", lambda x: x.at[jnp.array([0, 2])].add(1.0)),
    ("callback", lambda x: (jax.debug.print("{}", x[0]), x)[1]),
    ("linear_algebra", lambda x: jnp.linalg.solve(jnp.eye(2) + x[:4].reshape(2, 2) ** 2, x[:2]).sum() + x),
])
def test_loops_outside_the_allow_list_are_left_to_xla(name, step):
    x = jnp.linspace(-1, 1, {"too_large": N // 2 + 1, "reduction_too_long": n}.get(name, 8))
    assert not _marked(lambda x: _loop(step, x), x)
    jax.jit(lambda x: _loop(step, x))(x).block_until_ready()


def test_the_mark_is_dropped_under_vmap_and_can_be_switched_off(monkeypatch):
    x = jnp.linspace(-1, 1, 8)
    step = lambda x: x * 0.5 + jnp.sum(x)
    assert _marked(lambda x: _loop(step, x), x)
    batched = jax.vmap(lambda x: _loop(step, x))
    assert not _marked(batched, jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(batched(jnp.stack([x, 2 * x])), jnp.stack([_plain(step, x), _plain(step, 2 * x)]),
                               rtol=1e-6)
    monkeypatch.setattr(single_kernel, "SINGLE_KERNEL_BELOW", 0)
    assert not _marked(lambda x: _loop(step, 2 * x), x)


def test_the_mark_is_dropped_under_vmap_when_only_some_outputs_are_batched():
    """A batched call with an unbatched output: marked, it failed to compile (a batch of 4 x 3000
    reduced at once is beyond the limit checked on one problem)."""
    def f(a, b):
        loop = lambda x: lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, s[1] * 0.5 + jnp.sum(s[1]) * 1e-3),
                                        (0, x))[1]
        return single_kernel.call(lambda a, b: (loop(a), b + 1), a, b)

    batched = jax.vmap(f, in_axes=(0, None))
    a, b = jnp.ones((4, 3000)), jnp.ones(3)
    assert _marked(f, a[0], b) and not _marked(batched, a, b)
    np.testing.assert_allclose(batched(a, b)[0], jnp.stack([f(a[0], b)[0]] * 4), rtol=1e-6)


def convex_quartic(x):
    """Strictly convex, unique minimum: a path that rounding moves still ends at the same point."""
    weights = 1.0 + jnp.arange(x.size)
    return jnp.sum(weights * (x - 0.5) ** 2) + 0.1 * jnp.sum(x**4) + 0.2 * jnp.sum(x[1:] * x[:-1])


@pytest.mark.parametrize("method", ["l-bfgs", "bfgs", "cg", "newton-cg", "trust-ncg", "curveball"])
def test_small_solves_run_as_one_kernel_with_the_plain_loops_results(method, monkeypatch):
    x0 = jnp.linspace(-2.0, 3.0, 10)

    def solve(x0):
        return js.minimize(convex_quartic, x0, method=method)

    assert _marked(solve, x0)
    marked = jax.jit(solve)(x0)
    monkeypatch.setattr(single_kernel, "SINGLE_KERNEL_BELOW", 0)
    jax.clear_caches()  # solve's inner jitted functions were traced with the mark

    def solve_plain(x0):  # a new function, so nothing traced above is reused
        return js.minimize(convex_quartic, x0, method=method)

    assert not _marked(solve_plain, x0)
    plain = jax.jit(solve_plain)(x0)
    assert bool(marked.success) and bool(plain.success)
    np.testing.assert_allclose(marked.x, plain.x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(marked.fun, plain.fun, rtol=1e-12)
    assert abs(int(marked.nit) - int(plain.nit)) <= 1
