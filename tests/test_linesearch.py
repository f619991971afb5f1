"""The Moré–Thuente search against scipy's translation of MINPACK-2 ``dcsrch`` on the paper's tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize._dcsrch import DCSRCH

from jaxsecond import linesearch as ls


def _mt3(a, beta=0.01, l=39):
    # Moré & Thuente (1994), function 3: a convex piece plus an oscillation.
    phi0 = jnp.where(a <= 1 - beta, 1 - a, jnp.where(a >= 1 + beta, a - 1, (a - 1) ** 2 / (2 * beta) + beta / 2))
    return phi0 + 2 * (1 - beta) / (l * jnp.pi) * jnp.sin(l * jnp.pi * a / 2)


def _yanai(b1, b2):
    gamma = lambda b: jnp.sqrt(1 + b**2) - b
    return lambda a: gamma(b1) * jnp.sqrt((1 - a) ** 2 + b2**2) + gamma(b2) * jnp.sqrt(a**2 + b1**2)


# (phi, ftol, gtol) of the six functions in Moré & Thuente (1994), Section 5.
PROBLEMS = {
    "mt1": (lambda a: -a / (a**2 + 2.0), 1e-3, 0.1),
    "mt2": (lambda a: (a + 0.004) ** 5 - 2 * (a + 0.004) ** 4, 0.1, 0.1),
    "mt3": (_mt3, 0.1, 0.1),
    "mt4": (_yanai(0.001, 0.001), 1e-3, 1e-3),
    "mt5": (_yanai(0.01, 0.001), 1e-3, 1e-3),
    "mt6": (_yanai(0.001, 0.01), 1e-3, 1e-3),
}


def _run_ours(phi, stp0, ftol, gtol, stpmax, maxiter=30):
    dphi = jax.grad(phi)
    state = ls.line_search_init(phi(0.0), dphi(0.0), stp0, stpmax)
    trials = []
    for _ in range(maxiter):
        trials.append(float(state.stp))
        state = ls.line_search_step(state, phi(state.stp), dphi(state.stp), ftol, gtol, 0.1)
        if int(state.task) != ls.SEARCHING:
            break
    return trials, int(state.task), float(state.stp)


def _run_scipy(phi, stp0, ftol, gtol, stpmax):
    trials = []
    f = lambda a: (trials.append(float(a)), float(phi(a)))[1]
    search = DCSRCH(f, lambda a: float(jax.grad(phi)(a)), ftol, gtol, 0.1, 0.0, stpmax)
    stp, _, _, task = search(stp0, float(phi(0.0)), float(jax.grad(phi)(0.0)))
    return trials, task


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("stp0", [1e-3, 1e-1, 1e1, 1e3])
def test_trial_steps_match_minpack(name, stp0):
    phi, ftol, gtol = PROBLEMS[name]
    ours, task, stp = _run_ours(phi, stp0, ftol, gtol, stpmax=1e10)
    theirs, their_task = _run_scipy(phi, stp0, ftol, gtol, stpmax=1e10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    assert (task == ls.CONVERGED) == their_task.startswith(b"CONV")
    if task == ls.CONVERGED:  # the strong Wolfe conditions really hold at the accepted step
        dphi = jax.grad(phi)
        assert phi(stp) <= phi(0.0) + ftol * stp * dphi(0.0)
        assert abs(dphi(stp)) <= gtol * abs(dphi(0.0))


def test_ascent_direction_is_an_error():
    assert int(ls.line_search_init(1.0, 0.5, 1.0, 10.0).task) == ls.ERROR
    assert int(ls.line_search_init(1.0, jnp.nan, 1.0, 10.0).task) == ls.ERROR
    assert int(ls.line_search_init(1.0, -1.0, 1.0, 0.0).task) == ls.ERROR


def test_stpmax_caps_every_trial():
    phi = lambda a: -a  # decreasing forever: the search must stop at stpmax with a warning
    trials, task, stp = _run_ours(phi, 1.0, 1e-3, 0.9, stpmax=50.0)
    assert max(trials) <= 50.0
    assert task == ls.WARNING and stp == 50.0


def test_non_finite_trial_backtracks():
    phi = lambda a: jnp.where(a < 0.3, (a - 0.2) ** 2, jnp.nan)  # undefined beyond 0.3
    trials, task, stp = _run_ours(phi, 1.0, 1e-3, 0.9, stpmax=1e10)
    assert task == ls.CONVERGED and stp < 0.3
    assert trials[1] == 0.5 and trials[2] == 0.25  # halved towards the best point, then capped


def test_packed_record_reads_writes_and_selects_its_fields():
    from jaxsecond._packed import packed_record

    Record = packed_record("Record", value=None, count=jnp.int32, flag=bool)
    r = Record.pack(jnp.float32, value=1.5, count=3, flag=True)
    assert r.values.shape == (3,) and r.values.dtype == jnp.float32
    assert float(r.value) == 1.5 and int(r.count) == 3 and r.count.dtype == jnp.int32 and bool(r.flag)
    r2 = r._replace(count=r.count + 1, flag=False)
    assert int(r2.count) == 4 and not bool(r2.flag) and float(r2.value) == 1.5
    assert int(Record.where(jnp.asarray(False), r, r2).count) == 4
    # one leaf, batched by vmap along a leading axis
    batched = jax.vmap(lambda v: Record.pack(jnp.float32, value=v, count=0, flag=v > 1))(jnp.arange(3.0))
    assert jax.tree.leaves(batched)[0].shape == (3, 3)
    np.testing.assert_array_equal(batched.flag, [False, False, True])
    with pytest.raises(TypeError, match="needs exactly the fields"):
        Record.pack(jnp.float32, value=1.0)
