"""Test problems for smooth minimisation, written in ``jax.numpy`` over flat 1-D arrays.

The unconstrained set is the Moré–Garbow–Hillstrom collection: each objective is a sum of
squares ``f(x) = sum_i f_i(x)^2`` of the residuals given in the paper, with the paper's standard
starting point and its reported minimum value. The bound-constrained set holds Hock–Schittkowski
box problems and a quadratic whose minimiser over the box is known in closed form. Two factories
build data-driven problems (L2-regularised logistic regression, non-negative least squares) from
arrays the caller supplies, so that loading data sets is never a dependency of this module.

Every objective takes ``x`` of any floating dtype and computes in that dtype, so the same problem
serves float32 and float64 tests. Starting points and solutions are NumPy float64 arrays; cast them
with ``jnp.asarray(p.x0, dtype)``.

References:
  J. J. Moré, B. S. Garbow, K. E. Hillstrom (1981). Testing unconstrained optimization software.
  ACM Transactions on Mathematical Software 7(1), 17-41.

  W. Hock, K. Schittkowski (1981). Test Examples for Nonlinear Programming Codes. Lecture Notes in
  Economics and Mathematical Systems 187, Springer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

_MGH = "Moré, Garbow, Hillstrom (1981), problem {}"
_HS = "Hock, Schittkowski (1981), problem {}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A minimisation test problem over a flat 1-D array.

    Attributes:
      name: short unique name, e.g. ``"rosenbrock"`` or ``"watson_n9"``.
      fun: ``fun(x) -> scalar`` written in ``jax.numpy``; ``x`` is a 1-D floating array of length
        ``n`` and the value has ``x``'s dtype.
      x0: the standard starting point (NumPy float64).
      fstar: the known (global) minimum value, or ``None`` when it is not known.
      xstar: a minimiser in closed form, or ``None`` when none is known in closed form.
      fx0: the value at ``x0`` published or derived by hand from the definition, or ``None``.
      local_fstars: values at other known local minima (reaching one is not solving the problem).
      lower: lower bounds (NumPy float64, ``-inf`` for none) or ``None`` for an unconstrained problem.
      upper: upper bounds, as ``lower``.
      source: where the definition, ``x0`` and ``fstar`` come from.
    """

    name: str
    fun: Callable
    x0: np.ndarray
    fstar: float | None
    xstar: np.ndarray | None = None
    fx0: float | None = None
    local_fstars: tuple = ()
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    source: str = ""

    @property
    def n(self) -> int:
        """Number of variables."""
        return int(self.x0.shape[0])

    @property
    def bounded(self) -> bool:
        """Whether the problem has bounds."""
        return self.lower is not None


def reached_minimum(problem: Problem, f, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether a value ``f`` solves ``problem``.

    The test is relative when the minimum is non-zero, ``f - fstar <= rtol |fstar|`` (published
    minima carry about six digits), and scaled by the starting value when it is zero,
    ``f <= atol min(1, f(x0))``, so that a zero-residual problem whose whole range is tiny is not
    solved by standing still.

    Args:
      problem: a problem with a known ``fstar``.
      f: the value reached.
      rtol: tolerance relative to ``|fstar|`` when ``fstar != 0``.
      atol: tolerance for ``fstar == 0`` and ``f(x0) >= 1``.

    Returns:
      ``True`` when ``f`` is within tolerance of ``fstar``.

    Example:
      >>> p = rosenbrock()
      >>> reached_minimum(p, 1e-12), reached_minimum(p, 1e-3)
      (True, False)
    """
    if problem.fstar is None:
        raise ValueError(f"problem {problem.name!r} has no known fstar")
    f = float(f)
    if problem.fstar != 0.0:
        return bool(f - problem.fstar <= rtol * abs(problem.fstar))
    f0 = problem.fx0 if problem.fx0 is not None else float(problem.fun(jnp.asarray(problem.x0)))
    return bool(f <= atol * min(1.0, f0))


def _data(values, x):
    """Constant data in ``x``'s dtype, so float32 inputs are not promoted to float64."""
    return jnp.asarray(values, dtype=x.dtype)


def _sum_of_squares(residuals: Callable) -> Callable:
    def fun(x):
        r = residuals(x)
        return jnp.sum(r * r)

    return fun


def _grid(n):
    """MGH's grid ``t_i = i h``, ``h = 1/(n+1)``, i = 1..n, and ``h``."""
    h = 1.0 / (n + 1)
    return np.arange(1, n + 1) * h, h


def _check_n(name, n, minimum, multiple=1):
    if not isinstance(n, int) or n < minimum or n % multiple:
        raise ValueError(
            f"n for {name} must be an int >= {minimum}"
            + (f" and a multiple of {multiple}" if multiple > 1 else "")
            + f", got {n!r}")


# --------------------------------------------------------------------------------------------
# Moré–Garbow–Hillstrom, fixed dimension (problems 1-19)


def rosenbrock() -> Problem:
    """MGH 1, Rosenbrock: ``f1 = 10 (x2 - x1^2)``, ``f2 = 1 - x1``; minimum 0 at (1, 1).

    Example:
      >>> p = rosenbrock(); float(p.fun(jnp.asarray(p.x0)))
      24.2
    """
    return Problem(
        "rosenbrock",
        _sum_of_squares(lambda x: jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])),
        np.array([-1.2, 1.0]), 0.0, np.ones(2), fx0=24.2, source=_MGH.format(1))


def freudenstein_roth() -> Problem:
    """MGH 2, Freudenstein and Roth; minimum 0 at (5, 4), a local minimum 48.9842 nearby."""

    def residuals(x):
        return jnp.stack([
            -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
            -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
        ])

    return Problem("freudenstein_roth", _sum_of_squares(residuals), np.array([0.5, -2.0]), 0.0,
                   np.array([5.0, 4.0]), fx0=400.5, local_fstars=(48.9842,),
                   source=_MGH.format(2))


def powell_badly_scaled() -> Problem:
    """MGH 3, Powell badly scaled; minimum 0 at about (1.098e-5, 9.106)."""

    def residuals(x):
        return jnp.stack([1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])

    return Problem("powell_badly_scaled", _sum_of_squares(residuals), np.array([0.0, 1.0]), 0.0,
                   fx0=1.0 + (math.exp(-1.0) - 0.0001) ** 2, source=_MGH.format(3))


def brown_badly_scaled() -> Problem:
    """MGH 4, Brown badly scaled; minimum 0 at (1e6, 2e-6)."""

    def residuals(x):
        return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])

    return Problem("brown_badly_scaled", _sum_of_squares(residuals), np.array([1.0, 1.0]), 0.0,
                   np.array([1e6, 2e-6]), fx0=(1.0 - 1e6) ** 2 + (1.0 - 2e-6) ** 2 + 1.0,
                   source=_MGH.format(4))


def beale() -> Problem:
    """MGH 5, Beale: ``f_i = y_i - x1 (1 - x2^i)``, y = (1.5, 2.25, 2.625); minimum 0 at (3, 0.5)."""

    def residuals(x):
        i = np.arange(1, 4)
        return _data([1.5, 2.25, 2.625], x) - x[0] * (1.0 - x[1] ** i)

    return Problem("beale", _sum_of_squares(residuals), np.array([1.0, 1.0]), 0.0,
                   np.array([3.0, 0.5]), fx0=14.203125, source=_MGH.format(5))


def jennrich_sampson(m: int = 10) -> Problem:
    """MGH 6, Jennrich and Sampson: ``f_i = 2 + 2i - (exp(i x1) + exp(i x2))``; 124.362 for m = 10."""
    if m != 10:
        raise ValueError(f"m for jennrich_sampson: only the published m=10 is provided, got {m!r}")

    def residuals(x):
        i = np.arange(1, m + 1)
        return _data(2.0 + 2.0 * i, x) - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))

    return Problem("jennrich_sampson", _sum_of_squares(residuals), np.array([0.3, 0.4]), 124.362,
                   source=_MGH.format(6))


def helical_valley() -> Problem:
    """MGH 7, helical valley; minimum 0 at (1, 0, 0).

    ``theta`` follows the paper: ``arctan(x2/x1)/(2 pi)``, plus 1/2 when ``x1 < 0``.
    """

    def residuals(x):
        theta = jnp.arctan(x[1] / x[0]) / (2.0 * jnp.pi) + jnp.where(x[0] < 0, 0.5, 0.0)
        return jnp.stack([
            10.0 * (x[2] - 10.0 * theta),
            10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0),
            x[2],
        ])

    return Problem("helical_valley", _sum_of_squares(residuals), np.array([-1.0, 0.0, 0.0]), 0.0,
                   np.array([1.0, 0.0, 0.0]), fx0=2500.0, source=_MGH.format(7))


_BARD_Y = [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10,
           4.39]


def bard() -> Problem:
    """MGH 8, Bard: ``f_i = y_i - (x1 + u_i / (v_i x2 + w_i x3))``; minimum 8.21487e-3."""
    u = np.arange(1.0, 16.0)
    v = 16.0 - u
    w = np.minimum(u, v)

    def residuals(x):
        return _data(_BARD_Y, x) - (x[0] + _data(u, x) / (_data(v, x) * x[1] + _data(w, x) * x[2]))

    return Problem("bard", _sum_of_squares(residuals), np.ones(3), 8.21487e-3,
                   local_fstars=(17.4286,), source=_MGH.format(8))


_GAUSSIAN_Y = [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989, 0.3521, 0.2420,
               0.1295, 0.0540, 0.0175, 0.0044, 0.0009]


def gaussian() -> Problem:
    """MGH 9, Gaussian: ``f_i = x1 exp(-x2 (t_i - x3)^2 / 2) - y_i``, t_i = (8 - i)/2; 1.12793e-8."""
    t = (8.0 - np.arange(1, 16)) / 2.0

    def residuals(x):
        return x[0] * jnp.exp(-x[1] * (_data(t, x) - x[2]) ** 2 / 2.0) - _data(_GAUSSIAN_Y, x)

    return Problem("gaussian", _sum_of_squares(residuals), np.array([0.4, 1.0, 0.0]), 1.12793e-8,
                   source=_MGH.format(9))


_MEYER_Y = [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0, 8261.0,
            7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]


def meyer() -> Problem:
    """MGH 10, Meyer: ``f_i = x1 exp(x2 / (t_i + x3)) - y_i``, t_i = 45 + 5i; minimum 87.9458."""
    t = 45.0 + 5.0 * np.arange(1, 17)

    def residuals(x):
        return x[0] * jnp.exp(x[1] / (_data(t, x) + x[2])) - _data(_MEYER_Y, x)

    return Problem("meyer", _sum_of_squares(residuals), np.array([0.02, 4000.0, 250.0]), 87.9458,
                   source=_MGH.format(10))


def gulf(m: int = 99) -> Problem:
    """MGH 11, Gulf research and development; minimum 0 at (50, 25, 1.5).

    ``f_i = exp(-|y_i - x2|^x3 / x1) - t_i``, ``t_i = i/100``, ``y_i = 25 + (-50 ln t_i)^(2/3)``.
    The paper's "y_i m i x_2" is a misprint for ``y_i - x_2``.
    """
    if not isinstance(m, int) or not 3 <= m <= 100:
        raise ValueError(f"m for gulf must be an int in [3, 100], got {m!r}")
    t = np.arange(1, m + 1) / 100.0
    y = 25.0 + (-50.0 * np.log(t)) ** (2.0 / 3.0)

    def residuals(x):
        return jnp.exp(-jnp.abs(_data(y, x) - x[1]) ** x[2] / x[0]) - _data(t, x)

    return Problem("gulf", _sum_of_squares(residuals), np.array([5.0, 2.5, 0.15]), 0.0,
                   np.array([50.0, 25.0, 1.5]), source=_MGH.format(11))


def box_3d(m: int = 10) -> Problem:
    """MGH 12, box three-dimensional; minimum 0 at (1, 10, 1) (and elsewhere)."""
    if not isinstance(m, int) or m < 3:
        raise ValueError(f"m for box_3d must be an int >= 3, got {m!r}")
    t = 0.1 * np.arange(1, m + 1)

    def residuals(x):
        tt = _data(t, x)
        return jnp.exp(-tt * x[0]) - jnp.exp(-tt * x[1]) - x[2] * _data(np.exp(-t) - np.exp(-10.0 * t), x)

    return Problem("box_3d", _sum_of_squares(residuals), np.array([0.0, 10.0, 20.0]), 0.0,
                   np.array([1.0, 10.0, 1.0]), source=_MGH.format(12))


def powell_singular() -> Problem:
    """MGH 13, Powell singular; minimum 0 at the origin, where the Hessian is singular."""
    return extended_powell(4, _name="powell_singular", _source=_MGH.format(13))


def wood() -> Problem:
    """MGH 14, Wood; minimum 0 at (1, 1, 1, 1)."""

    def residuals(x):
        return jnp.stack([
            10.0 * (x[1] - x[0] ** 2), 1.0 - x[0],
            math.sqrt(90.0) * (x[3] - x[2] ** 2), 1.0 - x[2],
            math.sqrt(10.0) * (x[1] + x[3] - 2.0), (x[1] - x[3]) / math.sqrt(10.0),
        ])

    return Problem("wood", _sum_of_squares(residuals), np.array([-3.0, -1.0, -3.0, -1.0]), 0.0,
                   np.ones(4), fx0=19192.0, source=_MGH.format(14))


_KOWALIK_Y = [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235,
              0.0246]
_KOWALIK_U = [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]


def kowalik_osborne() -> Problem:
    """MGH 15, Kowalik and Osborne: ``f_i = y_i - x1 (u_i^2 + u_i x2)/(u_i^2 + u_i x3 + x4)``.

    Minimum 3.07505e-4; a second one, 1.02734e-3, lies at infinity.
    """

    def residuals(x):
        u = _data(_KOWALIK_U, x)
        return _data(_KOWALIK_Y, x) - x[0] * (u * u + u * x[1]) / (u * u + u * x[2] + x[3])

    return Problem("kowalik_osborne", _sum_of_squares(residuals),
                   np.array([0.25, 0.39, 0.415, 0.39]), 3.07505e-4, local_fstars=(1.02734e-3,),
                   source=_MGH.format(15))


def brown_dennis(m: int = 20) -> Problem:
    """MGH 16, Brown and Dennis, m = 20; minimum 85822.2."""
    if m != 20:
        raise ValueError(f"m for brown_dennis: only the published m=20 is provided, got {m!r}")
    t = np.arange(1, m + 1) / 5.0

    def residuals(x):
        tt = _data(t, x)
        return ((x[0] + tt * x[1] - jnp.exp(tt)) ** 2
                + (x[2] + x[3] * jnp.sin(tt) - jnp.cos(tt)) ** 2)

    return Problem("brown_dennis", _sum_of_squares(residuals), np.array([25.0, 5.0, -5.0, -1.0]),
                   85822.2, source=_MGH.format(16))


def osborne1() -> Problem:
    """MGH 17, Osborne 1: ``f_i = y_i - (x1 + x2 exp(-t_i x4) + x3 exp(-t_i x5))``; 5.46489e-5."""
    y = [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751, 0.718,
         0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490, 0.478, 0.467,
         0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
    t = 10.0 * np.arange(33)

    def residuals(x):
        tt = _data(t, x)
        return _data(y, x) - (x[0] + x[1] * jnp.exp(-tt * x[3]) + x[2] * jnp.exp(-tt * x[4]))

    return Problem("osborne1", _sum_of_squares(residuals),
                   np.array([0.5, 1.5, -1.0, 0.01, 0.02]), 5.46489e-5, source=_MGH.format(17))


def biggs_exp6(m: int = 13) -> Problem:
    """MGH 18, Biggs EXP6, m = 13; minimum 0 at (1, 10, 1, 5, 4, 3), a local minimum 5.65565e-3."""
    if m != 13:
        raise ValueError(f"m for biggs_exp6: only the published m=13 is provided, got {m!r}")
    t = 0.1 * np.arange(1, m + 1)
    y = np.exp(-t) - 5.0 * np.exp(-10.0 * t) + 3.0 * np.exp(-4.0 * t)

    def residuals(x):
        tt = _data(t, x)
        return (x[2] * jnp.exp(-tt * x[0]) - x[3] * jnp.exp(-tt * x[1])
                + x[5] * jnp.exp(-tt * x[4]) - _data(y, x))

    return Problem("biggs_exp6", _sum_of_squares(residuals), np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0]),
                   0.0, np.array([1.0, 10.0, 1.0, 5.0, 4.0, 3.0]), local_fstars=(5.65565e-3,),
                   source=_MGH.format(18))


_OSBORNE2_Y = [
    1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608,
    0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661,
    0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428,
    0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559,
    0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]


def osborne2() -> Problem:
    """MGH 19, Osborne 2 (four-peak exponential fit, n = 11, m = 65); minimum 4.01377e-2."""
    t_grid = np.arange(65) / 10.0

    def residuals(x):
        t = _data(t_grid, x)
        model = (x[0] * jnp.exp(-t * x[4])
                 + x[1] * jnp.exp(-(t - x[8]) ** 2 * x[5])
                 + x[2] * jnp.exp(-(t - x[9]) ** 2 * x[6])
                 + x[3] * jnp.exp(-(t - x[10]) ** 2 * x[7]))
        return _data(_OSBORNE2_Y, x) - model

    x0 = np.array([1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5])
    return Problem("osborne2", _sum_of_squares(residuals), x0, 4.01377e-2, source=_MGH.format(19))


# --------------------------------------------------------------------------------------------
# Moré–Garbow–Hillstrom, variable dimension (problems 20-32)

_WATSON_FSTAR = {6: 2.28767e-3, 9: 1.39976e-6, 12: 4.72238e-10}


def watson(n: int = 9) -> Problem:
    """MGH 20, Watson (m = 31); minimum 2.28767e-3 (n=6), 1.39976e-6 (n=9), 4.72238e-10 (n=12)."""
    _check_n("watson", n, 2)
    if n > 31:
        raise ValueError(f"n for watson must be <= 31, got {n!r}")
    t = np.arange(1, 30) / 29.0
    j = np.arange(n)
    # d/dt of the polynomial sum_j x_j t^(j-1), and the polynomial itself, at the 29 points.
    dpow = np.where(j > 0, j * t[:, None] ** np.maximum(j - 1, 0), 0.0)
    pow_ = t[:, None] ** j

    def residuals(x):
        r = _data(dpow, x) @ x - (_data(pow_, x) @ x) ** 2 - 1.0
        return jnp.concatenate([r, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])

    return Problem(f"watson_n{n}", _sum_of_squares(residuals), np.zeros(n), _WATSON_FSTAR.get(n),
                   fx0=30.0, source=_MGH.format(20))


def extended_rosenbrock(n: int = 10) -> Problem:
    """MGH 21, extended Rosenbrock (n/2 independent Rosenbrock pairs); minimum 0 at ones.

    Example:
      >>> p = extended_rosenbrock(10); float(p.fun(jnp.asarray(p.x0)))
      121.0
    """
    _check_n("extended_rosenbrock", n, 2, 2)

    def residuals(x):
        odd, even = x[0::2], x[1::2]
        return jnp.concatenate([10.0 * (even - odd ** 2), 1.0 - odd])

    return Problem(f"extended_rosenbrock_n{n}", _sum_of_squares(residuals),
                   np.tile([-1.2, 1.0], n // 2), 0.0, np.ones(n), fx0=12.1 * n,
                   source=_MGH.format(21))


def chained_rosenbrock(n: int = 10) -> Problem:
    """Chained (generalised) Rosenbrock ``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``.

    This is ``scipy.optimize.rosen``; minimum 0 at ones. Start (-1.2, 1, -1.2, 1, ...).
    """
    _check_n("chained_rosenbrock", n, 2)

    def fun(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x0 = np.resize(np.array([-1.2, 1.0]), n)
    return Problem(f"chained_rosenbrock_n{n}", fun, x0, 0.0, np.ones(n),
                   source="Rosenbrock (1960); the chained form of scipy.optimize.rosen")


def extended_powell(n: int = 12, *, _name=None, _source=None) -> Problem:
    """MGH 22, extended Powell singular (n/4 Powell singular blocks); minimum 0 at the origin."""
    _check_n("extended_powell", n, 4, 4)

    def residuals(x):
        a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
        return jnp.concatenate([
            a + 10.0 * b, math.sqrt(5.0) * (c - d), (b - 2.0 * c) ** 2,
            math.sqrt(10.0) * (a - d) ** 2])

    return Problem(_name or f"extended_powell_n{n}", _sum_of_squares(residuals),
                   np.tile([3.0, -1.0, 0.0, 1.0], n // 4), 0.0, np.zeros(n), fx0=215.0 * n / 4,
                   source=_source or _MGH.format(22))


_PENALTY1_FSTAR = {4: 2.24997e-5, 10: 7.08765e-5}


def penalty1(n: int = 10) -> Problem:
    """MGH 23, penalty function I; minimum 2.24997e-5 (n=4), 7.08765e-5 (n=10)."""
    _check_n("penalty1", n, 1)
    a = 1e-5
    x0 = np.arange(1.0, n + 1)

    def residuals(x):
        return jnp.concatenate([math.sqrt(a) * (x - 1.0), jnp.sum(x * x, keepdims=True) - 0.25])

    fx0 = a * float(np.sum((x0 - 1.0) ** 2)) + (float(np.sum(x0 ** 2)) - 0.25) ** 2
    return Problem(f"penalty1_n{n}", _sum_of_squares(residuals), x0, _PENALTY1_FSTAR.get(n),
                   fx0=fx0, source=_MGH.format(23))


_PENALTY2_FSTAR = {4: 9.37629e-6, 10: 2.93660e-4}


def penalty2(n: int = 10) -> Problem:
    """MGH 24, penalty function II (m = 2n); minimum 9.37629e-6 (n=4), 2.93660e-4 (n=10)."""
    _check_n("penalty2", n, 2)
    a = 1e-5
    i = np.arange(2, n + 1)
    y = np.exp(i / 10.0) + np.exp((i - 1) / 10.0)
    weights = np.arange(n, 0, -1.0)

    def residuals(x):
        return jnp.concatenate([
            x[:1] - 0.2,
            math.sqrt(a) * (jnp.exp(x[1:] / 10.0) + jnp.exp(x[:-1] / 10.0) - _data(y, x)),
            math.sqrt(a) * (jnp.exp(x[1:] / 10.0) - math.exp(-0.1)),
            jnp.sum(_data(weights, x) * x * x, keepdims=True) - 1.0,
        ])

    return Problem(f"penalty2_n{n}", _sum_of_squares(residuals), np.full(n, 0.5),
                   _PENALTY2_FSTAR.get(n), source=_MGH.format(24))


def variably_dimensioned(n: int = 10) -> Problem:
    """MGH 25, variably dimensioned; minimum 0 at ones, start ``x_j = 1 - j/n``."""
    _check_n("variably_dimensioned", n, 1)
    j = np.arange(1.0, n + 1)

    def residuals(x):
        s = jnp.sum(_data(j, x) * (x - 1.0), keepdims=True)
        return jnp.concatenate([x - 1.0, s, s * s])

    s0 = -float(np.sum(j * j)) / n
    fx0 = float(np.sum((j / n) ** 2)) + s0 ** 2 + s0 ** 4
    return Problem(f"variably_dimensioned_n{n}", _sum_of_squares(residuals), 1.0 - j / n, 0.0,
                   np.ones(n), fx0=fx0, source=_MGH.format(25))


def trigonometric(n: int = 10) -> Problem:
    """MGH 26, trigonometric: ``f_i = n - sum_j cos x_j + i (1 - cos x_i) - sin x_i``; minimum 0.

    For n = 10 a local minimum 2.79506e-5 attracts many solvers from the standard start.
    """
    _check_n("trigonometric", n, 1)
    i = np.arange(1.0, n + 1)

    def residuals(x):
        return n - jnp.sum(jnp.cos(x)) + _data(i, x) * (1.0 - jnp.cos(x)) - jnp.sin(x)

    return Problem(f"trigonometric_n{n}", _sum_of_squares(residuals), np.full(n, 1.0 / n), 0.0,
                   np.zeros(n), local_fstars=(2.79506e-5,) if n == 10 else (),
                   source=_MGH.format(26))


def brown_almost_linear(n: int = 10) -> Problem:
    """MGH 27, Brown almost-linear; minimum 0 at ones, a local minimum 1 at (0, ..., 0, n+1)."""
    _check_n("brown_almost_linear", n, 2)

    def residuals(x):
        return jnp.concatenate([x[:-1] + jnp.sum(x) - (n + 1.0), jnp.prod(x, keepdims=True) - 1.0])

    return Problem(f"brown_almost_linear_n{n}", _sum_of_squares(residuals), np.full(n, 0.5), 0.0,
                   np.ones(n), local_fstars=(1.0,), source=_MGH.format(27))


def discrete_boundary_value(n: int = 10) -> Problem:
    """MGH 28, discrete boundary value; minimum 0 (x* has no closed form)."""
    _check_n("discrete_boundary_value", n, 1)
    t, h = _grid(n)

    def residuals(x):
        padded = jnp.pad(x, 1)
        return (2.0 * x - padded[:-2] - padded[2:]
                + h ** 3 * (x + _data(t, x) + 1.0) ** 3 / 2.0)

    return Problem(f"discrete_boundary_value_n{n}", _sum_of_squares(residuals), t * (t - 1.0), 0.0,
                   source=_MGH.format(28))


def discrete_integral_equation(n: int = 10) -> Problem:
    """MGH 29, discrete integral equation; minimum 0 (x* has no closed form)."""
    _check_n("discrete_integral_equation", n, 1)
    t, h = _grid(n)

    def residuals(x):
        tt = _data(t, x)
        g = (x + tt + 1.0) ** 3
        left = jnp.cumsum(tt * g)  # sum_{j <= i} t_j g_j
        right_all = jnp.cumsum(((1.0 - tt) * g)[::-1])[::-1]  # sum_{j >= i} (1 - t_j) g_j
        right = jnp.concatenate([right_all[1:], jnp.zeros((1,), x.dtype)])  # sum over j > i
        return x + h * ((1.0 - tt) * left + tt * right) / 2.0

    return Problem(f"discrete_integral_equation_n{n}", _sum_of_squares(residuals), t * (t - 1.0),
                   0.0, source=_MGH.format(29))


def broyden_tridiagonal(n: int = 10) -> Problem:
    """MGH 30, Broyden tridiagonal: ``f_i = (3 - 2 x_i) x_i - x_{i-1} - 2 x_{i+1} + 1``; minimum 0."""
    _check_n("broyden_tridiagonal", n, 2)

    def residuals(x):
        padded = jnp.pad(x, 1)
        return (3.0 - 2.0 * x) * x - padded[:-2] - 2.0 * padded[2:] + 1.0

    return Problem(f"broyden_tridiagonal_n{n}", _sum_of_squares(residuals), np.full(n, -1.0), 0.0,
                   fx0=n + 11.0, source=_MGH.format(30))


def broyden_banded(n: int = 10) -> Problem:
    """MGH 31, Broyden banded (lower bandwidth 5, upper 1); minimum 0."""
    _check_n("broyden_banded", n, 2)
    i, j = np.indices((n, n))
    band = ((j != i) & (j >= i - 5) & (j <= i + 1)).astype(np.float64)

    def residuals(x):
        return x * (2.0 + 5.0 * x * x) + 1.0 - _data(band, x) @ (x * (1.0 + x))

    return Problem(f"broyden_banded_n{n}", _sum_of_squares(residuals), np.full(n, -1.0), 0.0,
                   fx0=36.0 * n, source=_MGH.format(31))


def linear_full_rank(n: int = 10, m: int = 20) -> Problem:
    """MGH 32, linear function of full rank; minimum ``m - n`` at ``x = -1``."""
    _check_n("linear_full_rank", n, 1)
    if not isinstance(m, int) or m < n:
        raise ValueError(f"m for linear_full_rank must be an int >= n={n}, got {m!r}")

    def residuals(x):
        s = 2.0 / m * jnp.sum(x)
        return jnp.concatenate([x - s - 1.0, jnp.full((m - n,), -1.0, x.dtype) - s])

    fx0 = n * (2.0 * n / m) ** 2 + (m - n) * (2.0 * n / m + 1.0) ** 2
    return Problem(f"linear_full_rank_n{n}", _sum_of_squares(residuals), np.ones(n),
                   float(m - n), -np.ones(n), fx0=fx0, source=_MGH.format(32))


def mgh_problems() -> tuple[Problem, ...]:
    """The standard unconstrained set: MGH 1-32 at the paper's usual sizes, plus chained Rosenbrock.

    Returns:
      A tuple of problems, fixed-dimension ones first.

    Example:
      >>> names = [p.name for p in mgh_problems()]
      >>> "wood" in names and "watson_n9" in names
      True
    """
    return (
        rosenbrock(), freudenstein_roth(), powell_badly_scaled(), brown_badly_scaled(), beale(),
        jennrich_sampson(), helical_valley(), bard(), gaussian(), meyer(), gulf(), box_3d(),
        powell_singular(), wood(), kowalik_osborne(), brown_dennis(), osborne1(), biggs_exp6(),
        osborne2(), watson(6), watson(9), extended_rosenbrock(10), extended_rosenbrock(100),
        chained_rosenbrock(10), extended_powell(12), penalty1(4), penalty1(10), penalty2(4),
        penalty2(10), variably_dimensioned(10), trigonometric(10), brown_almost_linear(10),
        discrete_boundary_value(10), discrete_integral_equation(10), broyden_tridiagonal(10),
        broyden_banded(10), linear_full_rank(10, 20),
    )


# --------------------------------------------------------------------------------------------
# Bound-constrained problems


def _box(lower, upper):
    return np.asarray(lower, np.float64), np.asarray(upper, np.float64)


def hs2() -> Problem:
    """HS 2: Rosenbrock with ``x2 >= 1.5`` (active).

    With x2 = 1.5, stationarity in x1 is the cubic ``400 x^3 - 598 x - 2 = 0``: its largest root
    gives the minimum f* = 0.0504261879 at x1* = 1.2243707487, its smallest a local minimum
    4.9412293 at x1 = -1.2214. The book prints 0.04941229 for f*, a known erratum.
    """
    lower, upper = _box([-np.inf, 1.5], [np.inf, np.inf])
    roots = _depressed_cubic_roots(-598.0 / 400.0, -2.0 / 400.0)
    rosen = lambda x1: 100.0 * (1.5 - x1 ** 2) ** 2 + (1.0 - x1) ** 2
    return Problem("hs2", rosenbrock().fun, np.array([-2.0, 1.0]), rosen(roots[0]),
                   np.array([roots[0], 1.5]), local_fstars=(rosen(roots[2]),), lower=lower,
                   upper=upper, source=_HS.format(2))


def _depressed_cubic_roots(p, q):
    """The three real roots of ``x^3 + p x + q = 0`` (p < 0, three real roots), largest first."""
    r = 2.0 * math.sqrt(-p / 3.0)
    phi = math.acos(3.0 * q / (p * r))
    return sorted((r * math.cos((phi - 2.0 * math.pi * k) / 3.0) for k in range(3)), reverse=True)


def hs3() -> Problem:
    """HS 3: ``x2 + 1e-5 (x2 - x1)^2`` with ``x2 >= 0`` (active); minimum 0 at the origin."""
    lower, upper = _box([-np.inf, 0.0], [np.inf, np.inf])
    return Problem("hs3", lambda x: x[1] + 1e-5 * (x[1] - x[0]) ** 2, np.array([10.0, 1.0]), 0.0,
                   np.zeros(2), fx0=1.0 + 1e-5 * 81.0, lower=lower, upper=upper,
                   source=_HS.format(3))


def hs4() -> Problem:
    """HS 4: ``(x1 + 1)^3 / 3 + x2`` with ``x1 >= 1``, ``x2 >= 0`` (both active); 8/3 at (1, 0)."""
    lower, upper = _box([1.0, 0.0], [np.inf, np.inf])
    return Problem("hs4", lambda x: (x[0] + 1.0) ** 3 / 3.0 + x[1], np.array([1.125, 0.125]),
                   8.0 / 3.0, np.array([1.0, 0.0]), fx0=2.125 ** 3 / 3.0 + 0.125,
                   lower=lower, upper=upper, source=_HS.format(4))


def hs5() -> Problem:
    """HS 5: ``sin(x1 + x2) + (x1 - x2)^2 - 1.5 x1 + 2.5 x2 + 1`` on [-1.5, 4] x [-3, 3].

    Interior minimum ``-sqrt(3)/2 - pi/3`` at ``(1/2 - pi/3, -1/2 - pi/3)``.
    """
    lower, upper = _box([-1.5, -3.0], [4.0, 3.0])
    return Problem(
        "hs5",
        lambda x: jnp.sin(x[0] + x[1]) + (x[0] - x[1]) ** 2 - 1.5 * x[0] + 2.5 * x[1] + 1.0,
        np.array([0.0, 0.0]), -math.sqrt(3.0) / 2.0 - math.pi / 3.0,
        np.array([0.5 - math.pi / 3.0, -0.5 - math.pi / 3.0]), fx0=1.0, lower=lower, upper=upper,
        source=_HS.format(5))


def hs25() -> Problem:
    """HS 25: the Gulf problem (m = 99) on [0.1, 100] x [0, 25.6] x [0, 5]; 0 at (50, 25, 1.5)."""
    lower, upper = _box([0.1, 0.0, 0.0], [100.0, 25.6, 5.0])
    return Problem("hs25", gulf(99).fun, np.array([100.0, 12.5, 3.0]), 0.0,
                   np.array([50.0, 25.0, 1.5]), lower=lower, upper=upper, source=_HS.format(25))


def hs38() -> Problem:
    """HS 38: the Wood function on [-10, 10]^4; minimum 0 at ones."""
    lower, upper = _box(np.full(4, -10.0), np.full(4, 10.0))
    return Problem("hs38", wood().fun, np.array([-3.0, -1.0, -3.0, -1.0]), 0.0, np.ones(4),
                   fx0=19192.0, lower=lower, upper=upper, source=_HS.format(38))


def hs45() -> Problem:
    """HS 45: ``2 - x1 x2 x3 x4 x5 / 120`` on ``0 <= x_i <= i``; minimum 1 at the upper corner."""
    lower, upper = _box(np.zeros(5), np.arange(1.0, 6.0))
    return Problem("hs45", lambda x: 2.0 - jnp.prod(x) / 120.0, np.full(5, 2.0), 1.0,
                   np.arange(1.0, 6.0), fx0=2.0 - 32.0 / 120.0, lower=lower, upper=upper,
                   source=_HS.format(45))


def hs110() -> Problem:
    """HS 110: ``sum_i [ln(x_i - 2)^2 + ln(10 - x_i)^2] - (prod_i x_i)^0.2`` on [2.001, 9.999]^10.

    Interior minimum -45.77846971 (as published) at ``x_i = t``, where t = 9.3502658 (the book
    prints 9.35025655; f is flat there) solves the symmetric stationarity equation
    ``2 ln(t-2)/(t-2) - 2 ln(10-t)/(10-t) - 0.2 t = 0``; x* and f* are computed from that equation
    by bisection.
    """
    lower, upper = _box(np.full(10, 2.001), np.full(10, 9.999))

    def fun(x):
        return (jnp.sum(jnp.log(x - 2.0) ** 2 + jnp.log(10.0 - x) ** 2)
                - jnp.exp(0.2 * jnp.sum(jnp.log(x))))

    def stationarity(t):
        return 2.0 * math.log(t - 2.0) / (t - 2.0) - 2.0 * math.log(10.0 - t) / (10.0 - t) - 0.2 * t

    a, b = 9.0, 9.9  # stationarity(a) < 0 < stationarity(b)
    for _ in range(100):
        a, b = (a, (a + b) / 2) if stationarity((a + b) / 2) > 0 else ((a + b) / 2, b)
    t = (a + b) / 2
    fstar = 10.0 * (math.log(t - 2.0) ** 2 + math.log(10.0 - t) ** 2) - t * t
    return Problem("hs110", fun, np.full(10, 9.0), fstar, np.full(10, t), lower=lower, upper=upper,
                   source=_HS.format(110))


def clipped_quadratic(n: int = 20) -> Problem:
    """``0.5 sum_i d_i (x_i - c_i)^2`` on [-1, 1]^n with d from 1 to 1e3; x* = clip(c, -1, 1).

    ``c`` alternates between points outside the box (active bounds) and inside it.
    """
    _check_n("clipped_quadratic", n, 1)
    d = np.logspace(0.0, 3.0, n)
    c = np.where(np.arange(n) % 3 == 0, 0.5, 2.0) * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    xstar = np.clip(c, -1.0, 1.0)
    lower, upper = _box(np.full(n, -1.0), np.full(n, 1.0))

    def fun(x):
        return 0.5 * jnp.sum(_data(d, x) * (x - _data(c, x)) ** 2)

    return Problem(f"clipped_quadratic_n{n}", fun, np.zeros(n),
                   float(0.5 * np.sum(d * (xstar - c) ** 2)), xstar,
                   fx0=float(0.5 * np.sum(d * c * c)), lower=lower, upper=upper,
                   source="quadratic with diagonal Hessian; minimiser over a box in closed form")


def bounded_problems() -> tuple[Problem, ...]:
    """The bound-constrained set: HS box problems and a clipped quadratic.

    Returns:
      A tuple of problems with ``lower``/``upper`` set.
    """
    return (hs2(), hs3(), hs4(), hs5(), hs25(), hs38(), hs45(), hs110(), clipped_quadratic(20))


# --------------------------------------------------------------------------------------------
# Data-driven problems (the caller supplies the data)


def logistic_regression(features, labels, l2: float = 1.0, name: str = "logistic_regression"
                        ) -> Problem:
    """L2-regularised logistic regression with an unpenalised intercept.

    ``f(w, b) = mean_i log(1 + exp(-s_i (x_i . w + b))) + l2/2 |w|^2`` with ``s_i = 2 y_i - 1``.
    The variables are ``concat([w, [b]])`` (length ``d + 1``), starting at zero. ``fstar`` is
    ``None``: compare against another solver.

    Args:
      features: ``(m, d)`` array of features (standardise them for a well-scaled problem).
      labels: ``(m,)`` array of 0/1 labels.
      l2: non-negative regularisation strength.
      name: the problem's name.

    Returns:
      A ``Problem``.

    Example:
      >>> from sklearn.datasets import load_breast_cancer  # doctest: +SKIP
      >>> X, y = load_breast_cancer(return_X_y=True)        # doctest: +SKIP
      >>> p = logistic_regression((X - X.mean(0)) / X.std(0), y, l2=1e-2)  # doctest: +SKIP
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D (samples, features) array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    signs = 2.0 * labels.astype(np.float64) - 1.0

    def fun(x):
        margins = _data(signs, x) * (_data(features, x) @ x[:-1] + x[-1])
        return jnp.mean(jnp.logaddexp(0.0, -margins)) + 0.5 * l2 * jnp.sum(x[:-1] ** 2)

    return Problem(name, fun, np.zeros(features.shape[1] + 1), None, fx0=math.log(2.0),
                   source="L2-regularised logistic regression")


def nonnegative_least_squares(matrix, rhs, name: str = "nonnegative_least_squares") -> Problem:
    """Non-negative least squares ``min 0.5 |A x - b|^2`` subject to ``x >= 0``, from x0 = 0.

    ``fstar`` is ``None``: ``scipy.optimize.nnls(A, b)`` gives the reference (f* = rnorm^2 / 2).

    Args:
      matrix: ``(m, n)`` array ``A``.
      rhs: ``(m,)`` array ``b``.
      name: the problem's name.

    Returns:
      A ``Problem`` with ``lower = 0`` and ``upper = inf``.
    """
    matrix = np.asarray(matrix, np.float64)
    rhs = np.asarray(rhs, np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    if rhs.shape != (matrix.shape[0],):
        raise ValueError(f"rhs must have shape ({matrix.shape[0]},), got {rhs.shape}")
    n = matrix.shape[1]

    def fun(x):
        r = _data(matrix, x) @ x - _data(rhs, x)
        return 0.5 * jnp.sum(r * r)

    return Problem(name, fun, np.zeros(n), None, fx0=0.5 * float(rhs @ rhs),
                   lower=np.zeros(n), upper=np.full(n, np.inf),
                   source="non-negative least squares")
