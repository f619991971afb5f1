"""The solver loop compiled into one CPU kernel: when the call is marked, and that marked loops of
every allowed form (and of every primitive given a loop form) compile on this jax and compute what
the plain loop computes."""

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
    "scan": (lambda x: lax.fori_loop(0, 3, lambda i, v: v * 0.9 + 0.01 * i, x)  # static bounds: a scan
             + 1e-3 * jnp.sum(lax.scan(lambda c, v: (c + v, c * v), 0.0, x[:n])[1]), jnp.linspace(-1, 1, N)),
    "checkpoint": (lambda x: jax.checkpoint(lambda v: jnp.sin(v) * v + jnp.sum(v[:n]) * 1e-3)(x), jnp.linspace(-1, 1, N)),
    "integers": (lambda x: (x * 3 + 1) % 7, jnp.arange(N, dtype=jnp.int32)),
    "cumulative_sum": (lambda x: jnp.cumsum(x) / N, jnp.linspace(-1, 1, N)),  # a window reduction: any length
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
    # Products summing 4096 terms or more into an element: XLA hands them to YNNPACK like long reductions.
    ("thin_product", lambda x: x + 1e-9 * ((x[0] * jnp.ones((1, 4096))) @ jnp.ones((4096, 3)))[0, 0]),
    ("thin_product_transposed", lambda x: x + 1e-9 * ((x[0] * jnp.ones((3, 5000))) @ jnp.ones((5000, 1)))[0, 0]),
    ("one_row_times_a_vector", lambda x: x + 1e-9 * ((x[0] * jnp.ones((1, 5000))) @ jnp.ones(5000))[0]),
    ("scatter_two", lambda x: x.at[jnp.array([0, 2])].add(1.0)),
    ("callback", lambda x: (jax.debug.print("{}", x[0]), x)[1]),
    ("lu_solve", lambda x: jnp.linalg.solve(jnp.eye(2) + x[:4].reshape(2, 2) ** 2, x[:2]).sum() + x),
    ("batched_cholesky", lambda x: x + jnp.linalg.cholesky(jnp.eye(2) + x[:8].reshape(2, 2, 2) ** 2).sum()),
])
def test_loops_outside_the_allow_list_are_left_to_xla(name, step):
    size = {"too_large": N // 2 + 1, "reduction_too_long": n}.get(name, 8)
    x = jnp.linspace(-1, 1, size)
    assert not _marked(lambda x: _loop(step, x), x)
    jax.jit(lambda x: _loop(step, x))(x).block_until_ready()


def _spd(x, size):
    """A symmetric positive definite matrix made from ``x``."""
    a = x[:size * size].reshape(size, size)
    return a @ a.T + size * jnp.eye(size, dtype=x.dtype)


# Primitives outside the allow-list with a loop form (jaxsecond._loop_forms) in one kernel.
LOOP_FORM_STEPS = {
    "matrix_product": lambda x: x * 0.9 + 1e-3 * jnp.tile((x[:40].reshape(5, 8) @ x[:24].reshape(8, 3)).ravel(), 4),
    "matrix_product_transposed": lambda x: x * 0.9 + 1e-3 * (x[:60].reshape(6, 10).T @ x[:18].reshape(6, 3)).ravel()[:60].sum(),
    "batched_product": lambda x: x * 0.9 + 1e-3 * jnp.einsum("bij,bkj->bik", x[:24].reshape(2, 3, 4), x[:40].reshape(2, 5, 4)).sum(),
    "wide_product": lambda x: x * 0.9 + 1e-3 * jnp.sum(x[:8].reshape(2, 4) @ x[:60].reshape(4, 15)),
    "cholesky": lambda x: x * 0.9 + 1e-3 * jnp.linalg.cholesky(_spd(x, 6)).sum(),
    "cholesky_solve": lambda x: x * 0.5 + 1e-3 * jnp.tile(jax.scipy.linalg.cho_solve(
        jax.scipy.linalg.cho_factor(_spd(x, 6), lower=True), x[:6]), 10),
    "checkpointed_product": lambda x: x * 0.9 + 1e-3 * jax.checkpoint(lambda v: v[:40].reshape(5, 8) @ v[:24].reshape(8, 3))(x).sum(),
    "not_positive_definite": lambda x: x * 0.9 + jnp.where(jnp.isnan(jnp.linalg.cholesky(-_spd(x, 3))).all(), 1.0, -1.0),
}
TRIANGULAR = [dict(left_side=l, lower=lo, transpose_a=t, unit_diagonal=u)
              for l in (True, False) for lo in (True, False) for t in (True, False) for u in (True, False)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", sorted(LOOP_FORM_STEPS) + [f"triangular_{i}" for i in range(len(TRIANGULAR))])
def test_loop_forms_compile_marked_and_match_the_primitives(name, dtype):
    if name.startswith("triangular"):
        params = TRIANGULAR[int(name.split("_")[1])]
        def step(x):
            a = _spd(x, 5)
            b = x[:15].reshape(5, 3) if params["left_side"] else x[:15].reshape(3, 5)
            return x * 0.9 + 1e-3 * lax.linalg.triangular_solve(a, b, **params).sum()
    else:
        step = LOOP_FORM_STEPS[name]
    x = jnp.linspace(-1, 1, 60, dtype=dtype)
    assert _marked(lambda x: _loop(step, x), x)
    assert MARK in jax.jit(lambda x: _loop(step, x)).lower(x).compile().as_text()
    got = jax.jit(lambda x: _loop(step, x))(x)
    want = jax.jit(lambda x: _plain(step, x))(x)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


def test_under_vmap_the_batched_call_is_judged_on_its_batched_sizes(monkeypatch):
    x = jnp.linspace(-1, 1, 8)
    step = lambda x: x * 0.5 + jnp.sum(x)
    batched = jax.vmap(lambda x: _loop(step, x))
    xs = jnp.stack([x, 2 * x])
    assert _marked(lambda x: _loop(step, x), x) and _marked(batched, xs)
    assert MARK in jax.jit(batched).lower(xs).compile().as_text()
    np.testing.assert_allclose(batched(xs), jnp.stack([_plain(step, x), _plain(step, 2 * x)]), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(jax.vmap(lambda x: _loop(step, x)))(xs[None]), batched(xs)[None],
                               rtol=1e-12)
    monkeypatch.setattr(single_kernel, "SINGLE_KERNEL_BELOW", 0)
    assert not _marked(lambda x: _loop(step, 2 * x), x)


def test_a_batch_too_large_for_one_kernel_is_left_to_xla():
    """One problem fits, a batch of four does not (4 x 3000 reduced at once is beyond the limit);
    marked anyway, it failed to compile. Only some outputs batched."""
    def f(a, b):
        loop = lambda x: lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, s[1] * 0.5 + jnp.sum(s[1]) * 1e-3),
                                        (0, x))[1]
        return single_kernel.call(lambda a, b: (loop(a), b + 1), a, b)

    batched = jax.vmap(f, in_axes=(0, None))
    a, b = jnp.ones((4, 3000)), jnp.ones(3)
    assert _marked(f, a[0], b) and not _marked(batched, a, b)
    np.testing.assert_allclose(batched(a, b)[0], jnp.stack([f(a[0], b)[0]] * 4), rtol=1e-6)
    np.testing.assert_allclose(batched(a, b)[1], jnp.stack([b + 1] * 4))


def test_derivatives_through_the_call_are_the_plain_functions():
    step = lambda x: jnp.sin(x) * x
    f = lambda x: _loop(step, x)
    g = lambda x: _plain(step, x)

    x = jnp.linspace(0.1, 1.0, 5)
    assert _marked(f, x)
    np.testing.assert_allclose(jax.jacfwd(f)(x), jax.jacfwd(g)(x), rtol=1e-12)
    h = lambda x: jnp.sin(x) * x + jnp.sum(x**2)  # no loop: reverse mode
    assert _marked(lambda x: single_kernel.call(h, x), x)
    np.testing.assert_allclose(jax.grad(lambda x: single_kernel.call(h, x).sum())(x), jax.grad(lambda x: h(x).sum())(x),
                               rtol=1e-12)


def convex_quartic(x):
    """Strictly convex, unique minimum: a path that rounding moves still ends at the same point."""
    weights = 1.0 + jnp.arange(x.size)
    return jnp.sum(weights * (x - 0.5) ** 2) + 0.1 * jnp.sum(x**4) + 0.2 * jnp.sum(x[1:] * x[:-1])


@pytest.mark.parametrize("method", ["l-bfgs", "bfgs", "cg", "newton", "newton-cg", "trust-ncg", "curveball"])
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


def test_vmapped_small_solves_run_as_one_kernel_with_each_problems_results():
    """Under vmap the batched solve is judged on its batched sizes (L-BFGS's history slot, a batched
    index, is written by a select in one kernel)."""
    starts = jnp.stack([jnp.linspace(-2.0, 3.0, 10) * s for s in (1.0, 0.5, -1.0, 2.0)])
    solve = jax.vmap(lambda x0: js.minimize(convex_quartic, x0, method="l-bfgs"))
    assert _marked(solve, starts)
    assert MARK in jax.jit(solve).lower(starts).compile().as_text()
    batched = jax.jit(solve)(starts)
    for start, x, nit in zip(starts, batched.x, batched.nit):
        one = js.minimize(convex_quartic, start, method="l-bfgs")
        np.testing.assert_allclose(x, one.x, rtol=1e-6, atol=1e-6)
        assert abs(int(nit) - int(one.nit)) <= 1


def test_a_batched_loop_with_its_own_stop_and_a_loop_form():
    """vmap makes the loop's test a vector (each problem stops on its own); with a matrix product
    inside, the loop is rebuilt as jax lowers such a loop: run while any goes on, keep the stopped."""
    a = jnp.array([[0.9, 0.1], [0.0, 0.8]])

    def shrink(x):
        def step(s):
            return s[0] + 1, (a @ s[1].reshape(2, 3)).ravel()
        return lax.while_loop(lambda s: jnp.sum(s[1] ** 2) > 0.5, step, (0, x))

    xs = jnp.stack([jnp.linspace(-1, 1, 6) * s for s in (1.0, 2.0, 4.0)])
    batched = jax.vmap(lambda x: single_kernel.call(shrink, x))
    assert _marked(batched, xs)
    got = jax.jit(batched)(xs)
    for i, x in enumerate(xs):
        want = jax.jit(shrink)(x)
        assert int(got[0][i]) == int(want[0])
        np.testing.assert_allclose(got[1][i], want[1], rtol=1e-12)


def test_captured_traced_values_and_eager_calls():
    x = jnp.linspace(-1, 1, 8)
    loop = lambda x, c: lax.while_loop(lambda s: s[0] < 5, lambda s: (s[0] + 1, s[1] * 0.5 + jnp.sum(s[1] * c)),
                                       (0, x))[1]
    f = jax.jit(lambda x, c: single_kernel.call(lambda x: loop(x, c), x))  # c: a value of the enclosing trace
    assert _marked(f, x, 2 * x)
    np.testing.assert_allclose(f(x, 2 * x), loop(x, 2 * x), rtol=1e-12)
    with jax.disable_jit():  # evaluated as it is, unmarked
        np.testing.assert_allclose(single_kernel.call(lambda x: loop(x, 2 * x), x), loop(x, 2 * x), rtol=1e-12)


@pytest.mark.parametrize("method", ["l-bfgs", "newton"])
def test_an_array_the_enclosing_jit_closed_over(method):
    """A large array that an enclosing jit closed over reaches the marked call as a constant: XLA:CPU
    aborted the process emitting such a call (a failed check), until the operands went through an
    optimisation barrier."""
    rng = np.random.default_rng(0)
    X, y = jnp.asarray(rng.normal(size=(400, 9))), jnp.asarray(rng.normal(size=400) > 0, jnp.float64)
    loss = lambda w, X, y: jnp.mean(jnp.logaddexp(0.0, X @ w) - y * (X @ w)) + 0.5 * w @ w
    solve = jax.jit(lambda scale: js.minimize(loss, jnp.zeros(9) * scale, args=(X, y), method=method).x)
    assert MARK in solve.lower(1.0).compile().as_text()
    np.testing.assert_allclose(solve(1.0), js.minimize(loss, jnp.zeros(9), args=(X, y), method=method).x,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, fun, args", [
    ("unused", lambda x, y: y * 2, (jnp.linspace(0.1, 1, 5),) * 2),
    ("dead_code", lambda x, y: (jnp.sum(x), y * 2)[1], (jnp.linspace(0.1, 1, 5),) * 2),
    ("gradient_of_a_linear_function", lambda x, y: jax.grad(lambda v: jnp.sum(3.0 * v))(x) + y,
     (jnp.linspace(0.1, 1, 5),) * 2),
    ("times_zero", lambda x, y: y * 2 + x * 0, (jnp.arange(5), jnp.arange(5))),
    ("where_true", lambda x, y: jnp.where(True, y, x), (jnp.linspace(0.1, 1, 5), jnp.linspace(1, 2, 5))),
])
def test_inputs_that_nothing_reads_once_xla_simplifies(name, fun, args):
    """XLA:CPU fails a check (aborting the process) when emitting a marked call with a parameter
    nothing reads: the kernel keeps one element of every input as an extra result."""
    f = jax.jit(lambda *a: single_kernel.call(fun, *a))
    assert _marked(f, *args)
    np.testing.assert_allclose(f(*args), jax.jit(fun)(*args), rtol=1e-12)


def test_a_batched_update_that_applies_a_function_is_left_to_xla():
    """vmap of x.at[i].apply(f) with a batched index scatters f(x[i]), which the select form does not
    compute: not rewritten (it wrote zeros where cos(x[i]) belongs)."""
    g = jax.vmap(lambda x, i: single_kernel.call(lambda x, i: x.at[i].apply(jnp.cos), x, i))
    x, i = jnp.arange(12.0).reshape(3, 4), jnp.array([0, 1, 3])
    np.testing.assert_allclose(jax.jit(g)(x, i), jax.vmap(lambda x, i: x.at[i].apply(jnp.cos))(x, i))
