"""Assertions for tests of array code on any backend (xgrad's own suite and its users')."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from xgrad._arrays import to_numpy
from xgrad.backends import Backend
from xgrad.backends._registry import backend_of

__all__ = [
    "HARD_CATEGORIES",
    "HardCase",
    "SuiteCase",
    "assert_close",
    "default_rtol",
    "expect_backend",
    "hard_suite",
    "smooth_suite",
]

# Relative tolerances for results that should equal a float64 NumPy reference up to
# rounding: a few hundred ulps, since backends sum and fuse operations in other orders.
_RTOL = {"float64": 1e-12, "float32": 3e-6, "float16": 1e-2}


def default_rtol(dtype: Any) -> float:
    """Default relative tolerance for arrays of ``dtype`` (by name: float64, float32...)."""
    name = dtype if isinstance(dtype, str) else str(dtype).rsplit(".", 1)[-1]
    return _RTOL.get(name, 1e-12)


_expected: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "xgrad_expected_backend", default=None
)


@contextlib.contextmanager
def expect_backend(backend: Backend | None) -> Iterator[Backend | None]:
    """Inside the block, `assert_close` requires arrays of ``backend`` (library and device).

    The pytest plugin's ``backend`` fixture sets it for each matrix row; None turns the
    check off. SciPy's ``default_xp`` in other words: a function that falls back to NumPy
    returns a NumPy array, which then fails on every non-NumPy row.
    """
    token = _expected.set(backend)
    try:
        yield backend
    finally:
        _expected.reset(token)


def _check_namespace(actual: Any, expected: Backend, err_msg: str) -> None:
    if isinstance(actual, bool | int | float | complex) and not isinstance(actual, np.generic):
        return  # a Python number belongs to no namespace: nothing to check
    owner = backend_of(actual, strict=False)
    if owner != expected:
        found = owner.spec if owner is not None else "not an array of any backend"
        raise AssertionError(
            f"namespace: expected an array of {expected.spec}, found"
            f" {type(actual).__module__}.{type(actual).__qualname__} ({found}). {err_msg}"
        )


def assert_close(
    actual: Any,
    desired: Any,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    check_dtype: bool = True,
    check_shape: bool = True,
    check_namespace: bool = True,
    err_msg: str = "",
) -> None:
    """Assert ``actual`` (array of any backend) is close to ``desired`` (NumPy reference).

    Both are converted to NumPy explicitly. ``rtol`` defaults to one chosen from the dtype
    of ``actual``. With ``check_dtype``, a float64 reference must be matched by a floating
    result of the dtype the caller asked for, so float32 results are not silently accepted
    where float64 was expected: pass ``check_dtype=False`` to compare values only.

    With ``check_namespace``, inside a backend-matrix test (the pytest plugin's ``backend``
    fixture, or `expect_backend`) ``actual`` must be an array of the row's library and
    device (a Python number passes: it has none); a NumPy array on a torch row fails.

    >>> assert_close(np.array([1.0, 2.0]), [1.0, 2.0 + 1e-14])
    """
    expected = _expected.get()
    if check_namespace and expected is not None:
        _check_namespace(actual, expected, err_msg)
    a = to_numpy(actual)
    d = np.asarray(to_numpy(desired))
    reference_is_float_array = isinstance(desired, np.ndarray) and d.dtype.kind == "f"
    if check_dtype and reference_is_float_array and a.dtype.kind == "f":
        assert a.dtype == d.dtype, f"dtype: expected {d.dtype}, found {a.dtype}. {err_msg}"
    if check_shape:
        assert a.shape == d.shape, f"shape: expected {d.shape}, found {a.shape}. {err_msg}"
    if rtol is None:
        rtol = default_rtol(a.dtype.name)
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=err_msg)


SuiteCase = tuple[str, Callable[[Any], Any], Callable[[Any], Any], float]


def smooth_suite(xp: ModuleType) -> list[SuiteCase]:
    """Smooth functions for judging a derivative: ``(name, f, exact f', point)``.

    ``f`` works on arrays of the namespace ``xp``; the exact derivative works on float64
    NumPy values. The points are chosen to be hard: log and sqrt near their domain edge,
    a steep exponential, and x**2 at 1e6 (where float32 steps vanish).

    >>> name, f, df, point = smooth_suite(np)[2]
    >>> name, float(df(point))
    ('log at 1e-3', 1000.0)
    """

    def sigmoid(v: Any) -> Any:
        return 1.0 / (1.0 + xp.exp(-v))

    def np_sigmoid(v: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-v))

    return [
        ("exp", xp.exp, np.exp, 1.0),
        ("sin", xp.sin, np.cos, 1.0),
        ("log at 1e-3", xp.log, lambda v: 1 / v, 1e-3),
        ("sqrt at 1e-3", xp.sqrt, lambda v: 0.5 / np.sqrt(v), 1e-3),
        ("1/x", lambda v: 1.0 / v, lambda v: -1 / v**2, 0.5),
        ("(e^{x^2})^2", lambda v: xp.exp(v**2) ** 2, lambda v: 4 * v * np.exp(2 * v**2), 0.5),
        ("tanh", xp.tanh, lambda v: 1 - np.tanh(v) ** 2, 0.5),
        ("sigmoid", sigmoid, lambda v: np_sigmoid(v) * (1 - np_sigmoid(v)), 0.5),
        ("exp(50x) at 0.1", lambda v: xp.exp(50.0 * v), lambda v: 50 * np.exp(50 * v), 0.1),
        ("x^2 at 1e6", lambda v: v**2, lambda v: 2 * v, 1e6),
        ("cos at 3", xp.cos, lambda v: -np.sin(v), 3.0),
    ]


# --- hard cases ---------------------------------------------------------------------------

HARD_CATEGORIES = (
    "oscillatory",
    "high frequency",
    "magnitude",
    "domain edge",
    "removable",
    "polynomial",
    "narrow peak",
    "noisy",
    "kink",
    "pole",
)


class HardCase(NamedTuple):
    """One hard case of `hard_suite`.

    Attributes
    ----------
    name : str
        What f is and where, e.g. ``"cos at 3e4"``.
    category : str
        One of `HARD_CATEGORIES`.
    f : callable
        Elementwise f on arrays of the suite's namespace; keeps the dtype of its input
        (float32 stays float32).
    df : callable or None
        The exact derivative on float64 NumPy values, None where no derivative exists.
    point : float
        Where to differentiate.
    differentiable : bool
        Whether f has a (finite) derivative at ``point``.
    """

    name: str
    category: str
    f: Callable[[Any], Any]
    df: Callable[[Any], Any] | None
    point: float
    differentiable: bool

    def reference(self, dtype: Any = "float64") -> float | None:
        """The exact derivative at ``point`` rounded to ``dtype``, or None if there is none.

        None also where the point or the derivative is not finite in ``dtype`` (float32:
        exp at 600 overflows, log at 1e-300 becomes log at 0): there, any unflagged answer
        is wrong. A derivative that underflows in ``dtype`` is 0.
        """
        if self.df is None or not self.differentiable:
            return None
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
        with np.errstate(all="ignore"):
            used = float(np.asarray(self.point, dtype=name))
            if not math.isfinite(used):
                return None
            exact = float(self.df(np.float64(used)))
        info = np.finfo(name)
        if not math.isfinite(exact) or abs(exact) > float(info.max):
            return None
        if float(np.asarray(exact, dtype=name)) == 0.0:
            # Underflows to 0: f is then 0 too near the point (exp at -700 in float32), and
            # 0 is the derivative of the function a tool can see.
            return 0.0
        return exact


def _series(coefficients: list[float], x: Any, first_power: int) -> Any:
    """sum_k c_k x^(first_power + 2k), for the exact derivatives of removable singularities."""
    total = 0.0
    for k, c in enumerate(coefficients):
        total = total + c * x ** (first_power + 2 * k)
    return total


def hard_suite(xp: ModuleType) -> list[HardCase]:
    """Hard cases for judging a derivative and its error estimate: a list of `HardCase`.

    The categories of `HARD_CATEGORIES`: oscillatory f at large |x|, high frequencies, huge
    and tiny magnitudes (exp near overflow, log near underflow), domain edges, removable
    singularities (computed in their stable forms), polynomials at large |x|, narrow peaks,
    noisy f (a deterministic hash-like noise of relative size 1e-10 or 1e-6, and f computed
    in float32 whatever the dtype of x), kinks and jumps, poles and infinite derivatives.
    Where no derivative exists (relu at 0, sqrt at 0) ``df`` is None and a tool should
    flag its answer. Constants are Python floats, so float32 inputs stay float32.
    `HardCase.reference` gives the exact value in a dtype (None: any answer is wrong).

    >>> cases = hard_suite(np)
    >>> case = next(c for c in cases if c.name == "cos at 3e4")
    >>> case.category, round(case.reference("float64"), 6)
    ('oscillatory', 0.802665)
    >>> relu = next(c for c in cases if c.name == "relu at 0")
    >>> relu.differentiable, relu.reference("float64")
    (False, None)
    """

    def zeros(v: Any) -> Any:
        return xp.zeros_like(v)

    def in_float32(g: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def f(v: Any) -> Any:
            return xp.astype(g(xp.astype(v, xp.float32)), v.dtype)

        return f

    def noisy(g: Callable[[Any], Any], amplitude: float, point: float) -> Callable[[Any], Any]:
        # sin(k v) with k v ~ 2**50 changes by ~0.25 rad per float64 ulp of v, and the hash
        # of it (the fractional part of a large multiple) by a random amount: noise on
        # every scale of step, yet deterministic.
        k = 2.0**50 / abs(point)

        def f(v: Any) -> Any:
            s = xp.sin(k * v) * 43758.5453
            return g(v) * (1.0 + amplitude * (s - xp.floor(s) - 0.5))

        return f

    def cbrt(v: Any) -> Any:
        return xp.sign(v) * xp.abs(v) ** (1.0 / 3.0)

    # Exact derivatives of the removable singularities, from their Taylor series (the
    # closed forms cancel catastrophically at small x).
    def d_sinc(v: Any) -> Any:  # sin(x)/x = sum (-1)^k x^2k / (2k+1)!
        c = [(-1) ** k * 2 * k / math.factorial(2 * k + 1) for k in range(1, 9)]
        return _series(c, v, 1)

    def d_expm1_x(v: Any) -> Any:  # (e^x - 1)/x = sum x^n / (n+1)!
        return sum(n * v ** (n - 1) / math.factorial(n + 1) for n in range(1, 16))

    def d_one_minus_cos(v: Any) -> Any:  # (1 - cos x)/x^2 = sum (-1)^(k+1) x^(2k-2)/(2k)!
        c = [(-1) ** (k + 1) * (2 * k - 2) / math.factorial(2 * k) for k in range(2, 10)]
        return _series(c, v, 1)

    def d_log1p_x(v: Any) -> Any:  # log(1+x)/x = sum (-1)^n x^n / (n+1)
        return sum((-1) ** n * n * v ** (n - 1) / (n + 1) for n in range(1, 30))

    def d_tanh_x(v: Any) -> Any:  # tanh(x)/x = 1 - x^2/3 + 2x^4/15 - 17x^6/315 + 62x^8/2835
        return -2 * v / 3 + 8 * v**3 / 15 - 102 * v**5 / 315 + 496 * v**7 / 2835

    def stable_one_minus_cos(v: Any) -> Any:
        s = xp.sin(0.5 * v) / (0.5 * v)
        return 0.5 * s * s

    def gauss(v: Any) -> Any:
        return xp.exp(-0.5 * (v / 1e-6) ** 2)

    def hc(name: str, category: str, f: Any, df: Any, point: float) -> HardCase:
        return HardCase(name, category, f, df, point, df is not None)

    cases = [
        # Oscillatory at large |x|: steps scaled by |x| see several periods.
        hc("cos at 3e4", "oscillatory", xp.cos, lambda v: -np.sin(v), 3e4),
        hc(
            "sin(3x) at 5e3",
            "oscillatory",
            lambda v: xp.sin(3.0 * v),
            lambda v: 3 * np.cos(3 * v),
            5e3,
        ),
        hc("sin at 1e6", "oscillatory", xp.sin, np.cos, 1e6),
        hc("cos at -2e4", "oscillatory", xp.cos, lambda v: -np.sin(v), -2e4),
        hc("sin at 1e10", "oscillatory", xp.sin, np.cos, 1e10),
        hc(
            "x sin(x) at 1e4",
            "oscillatory",
            lambda v: v * xp.sin(v),
            lambda v: np.sin(v) + v * np.cos(v),
            1e4,
        ),
        hc(
            "cos(x^2) at 100",
            "oscillatory",
            lambda v: xp.cos(v * v),
            lambda v: -2 * v * np.sin(v * v),
            100.0,
        ),
        hc(
            "sin(x)^2 at 1e5", "oscillatory", lambda v: xp.sin(v) ** 2, lambda v: np.sin(2 * v), 1e5
        ),
        hc("tan at 1e4", "oscillatory", xp.tan, lambda v: 1 + np.tan(v) ** 2, 1e4),
        # High frequency at moderate x: the function's scale is far below max(|x|, 1).
        hc(
            "sin(100x) at 1",
            "high frequency",
            lambda v: xp.sin(100.0 * v),
            lambda v: 100 * np.cos(100 * v),
            1.0,
        ),
        hc(
            "sin(1e4 x) at 0.5",
            "high frequency",
            lambda v: xp.sin(1e4 * v),
            lambda v: 1e4 * np.cos(1e4 * v),
            0.5,
        ),
        # w * 2**-6 = 2 pi: every step of a halving search aliases (was 0.116, converged).
        hc(
            "cos(402 x) at 0.3",
            "high frequency",
            lambda v: xp.cos(402.0 * v),
            lambda v: -402 * np.sin(402 * v),
            0.3,
        ),
        hc(
            "cos(1e3 x) at 0.3",
            "high frequency",
            lambda v: xp.cos(1e3 * v),
            lambda v: -1e3 * np.sin(1e3 * v),
            0.3,
        ),
        hc(
            "sin(1e6 x) at 1e-3",
            "high frequency",
            lambda v: xp.sin(1e6 * v),
            lambda v: 1e6 * np.cos(1e6 * v),
            1e-3,
        ),
        hc(
            "sin(50x) cos(x) at 2",
            "high frequency",
            lambda v: xp.sin(50.0 * v) * xp.cos(v),
            lambda v: 50 * np.cos(50 * v) * np.cos(v) - np.sin(50 * v) * np.sin(v),
            2.0,
        ),
        hc(
            "exp(sin(200x)) at 0.1",
            "high frequency",
            lambda v: xp.exp(xp.sin(200.0 * v)),
            lambda v: 200 * np.cos(200 * v) * np.exp(np.sin(200 * v)),
            0.1,
        ),
        hc(
            "sin(1e8 x) at 1e-2",
            "high frequency",
            lambda v: xp.sin(1e8 * v),
            lambda v: 1e8 * np.cos(1e8 * v),
            1e-2,
        ),
        # Huge and tiny magnitudes: near overflow and underflow, steps must be relative.
        hc("exp at 600", "magnitude", xp.exp, np.exp, 600.0),
        hc("exp at 700", "magnitude", xp.exp, np.exp, 700.0),
        hc("exp at 709", "magnitude", xp.exp, np.exp, 709.0),
        hc("exp at -700", "magnitude", xp.exp, np.exp, -700.0),
        hc("log at 1e-300", "magnitude", xp.log, lambda v: 1 / v, 1e-300),
        hc("sqrt at 1e-300", "magnitude", xp.sqrt, lambda v: 0.5 / np.sqrt(v), 1e-300),
        hc("x^2 at 1e150", "magnitude", lambda v: v * v, lambda v: 2 * v, 1e150),
        hc("x^2 at 1e-150", "magnitude", lambda v: v * v, lambda v: 2 * v, 1e-150),
        hc("1/x at 1e150", "magnitude", lambda v: 1.0 / v, lambda v: -1 / v / v, 1e150),
        hc("log at 1e6", "magnitude", xp.log, lambda v: 1 / v, 1e6),
        hc("log at 1e20", "magnitude", xp.log, lambda v: 1 / v, 1e20),
        hc("sqrt at 1e12", "magnitude", xp.sqrt, lambda v: 0.5 / np.sqrt(v), 1e12),
        hc(
            "sin(1e-8 x) at 3e8",
            "magnitude",
            lambda v: xp.sin(1e-8 * v),
            lambda v: 1e-8 * np.cos(1e-8 * v),
            3e8,
        ),
        # Domain edges: a stencil of absolute width crosses the edge.
        hc("log at 1e-10", "domain edge", xp.log, lambda v: 1 / v, 1e-10),
        hc("log at 1e-2", "domain edge", xp.log, lambda v: 1 / v, 1e-2),
        hc("sqrt at 1e-12", "domain edge", xp.sqrt, lambda v: 0.5 / np.sqrt(v), 1e-12),
        hc(
            "arcsin at 1-1e-10",
            "domain edge",
            xp.asin,
            lambda v: 1 / np.sqrt((1 - v) * (1 + v)),
            1 - 1e-10,
        ),
        hc(
            "arccos at -1+1e-8",
            "domain edge",
            xp.acos,
            lambda v: -1 / np.sqrt((1 - v) * (1 + v)),
            -1 + 1e-8,
        ),
        hc("log1p at -1+1e-9", "domain edge", xp.log1p, lambda v: 1 / (1 + v), -1 + 1e-9),
        hc(
            "sqrt(1-x) at 1-1e-12",
            "domain edge",
            lambda v: xp.sqrt(1.0 - v),
            lambda v: -0.5 / np.sqrt(1 - v),
            1 - 1e-12,
        ),
        hc(
            "x log(x) at 1e-8",
            "domain edge",
            lambda v: v * xp.log(v),
            lambda v: np.log(v) + 1,
            1e-8,
        ),
        hc(
            "arccosh at 1+1e-9",
            "domain edge",
            xp.acosh,
            lambda v: 1 / np.sqrt((v - 1) * (v + 1)),
            1 + 1e-9,
        ),
        # Removable singularities, f in its stable form; derivatives from the series.
        hc("sin(x)/x at 1e-3", "removable", lambda v: xp.sin(v) / v, d_sinc, 1e-3),
        hc("sin(x)/x at 1e-5", "removable", lambda v: xp.sin(v) / v, d_sinc, 1e-5),
        hc("(exp(x)-1)/x at 1e-8", "removable", lambda v: xp.expm1(v) / v, d_expm1_x, 1e-8),
        hc("(exp(x)-1)/x at -1e-3", "removable", lambda v: xp.expm1(v) / v, d_expm1_x, -1e-3),
        hc("(1-cos x)/x^2 at 1e-4", "removable", stable_one_minus_cos, d_one_minus_cos, 1e-4),
        hc("log(1+x)/x at 1e-6", "removable", lambda v: xp.log1p(v) / v, d_log1p_x, 1e-6),
        hc("tanh(x)/x at 1e-5", "removable", lambda v: xp.tanh(v) / v, d_tanh_x, 1e-5),
        # Polynomials at large |x|: large f, the truncation error needs relative steps.
        hc("x^3 at 1e5", "polynomial", lambda v: v**3, lambda v: 3 * v**2, 1e5),
        hc("x^5 at -1e3", "polynomial", lambda v: v**5, lambda v: 5 * v**4, -1e3),
        hc("x^2 at -3e7", "polynomial", lambda v: v * v, lambda v: 2 * v, -3e7),
        hc("x^4 - 3x at 2e4", "polynomial", lambda v: v**4 - 3.0 * v, lambda v: 4 * v**3 - 3, 2e4),
        hc("x^3 + x at 1e100", "polynomial", lambda v: v**3 + v, lambda v: 3 * v**2 + 1, 1e100),
        hc("x^7 at 50", "polynomial", lambda v: v**7, lambda v: 7 * v**6, 50.0),
        hc(
            "1e-3 x^2 + x at 1e6",
            "polynomial",
            lambda v: 1e-3 * v * v + v,
            lambda v: 2e-3 * v + 1,
            1e6,
        ),
        # Narrow peaks: f varies on a scale much smaller than 1.
        hc(
            "1/(1+1e6 x^2) at 1e-3",
            "narrow peak",
            lambda v: 1.0 / (1.0 + 1e6 * v * v),
            lambda v: -2e6 * v / (1 + 1e6 * v * v) ** 2,
            1e-3,
        ),
        hc(
            "1/(1+1e10 x^2) at 3e-5",
            "narrow peak",
            lambda v: 1.0 / (1.0 + 1e10 * v * v),
            lambda v: -2e10 * v / (1 + 1e10 * v * v) ** 2,
            3e-5,
        ),
        hc(
            "exp(-1e4 x^2) at 1e-2",
            "narrow peak",
            lambda v: xp.exp(-1e4 * v * v),
            lambda v: -2e4 * v * np.exp(-1e4 * v * v),
            1e-2,
        ),
        hc(
            "exp(-1e8 x^2) at 1e-4",
            "narrow peak",
            lambda v: xp.exp(-1e8 * v * v),
            lambda v: -2e8 * v * np.exp(-1e8 * v * v),
            1e-4,
        ),
        hc(
            "exp(-x^2/2e-12) at 1e-6",
            "narrow peak",
            gauss,
            lambda v: -v / 1e-12 * np.exp(-0.5 * (v / 1e-6) ** 2),
            1e-6,
        ),
        hc(
            "1e-3/((x-0.5)^2+1e-6) at 0.501",
            "narrow peak",
            lambda v: 1e-3 / ((v - 0.5) ** 2 + 1e-6),
            lambda v: -2e-3 * (v - 0.5) / ((v - 0.5) ** 2 + 1e-6) ** 2,
            0.501,
        ),
        hc(
            "tanh(1e4 x) at 1e-4",
            "narrow peak",
            lambda v: xp.tanh(1e4 * v),
            lambda v: 1e4 * (1 - np.tanh(1e4 * v) ** 2),
            1e-4,
        ),
        # Noisy f: the derivative meant is that of f without the noise.
        hc("sin + 1e-10 noise at 1", "noisy", noisy(xp.sin, 1e-10, 1.0), np.cos, 1.0),
        hc("exp + 1e-10 noise at 0.5", "noisy", noisy(xp.exp, 1e-10, 0.5), np.exp, 0.5),
        hc(
            "x^2 + 1e-10 noise at 3",
            "noisy",
            noisy(lambda v: v * v, 1e-10, 3.0),
            lambda v: 2 * v,
            3.0,
        ),
        hc("cos + 1e-13 noise at 2", "noisy", noisy(xp.cos, 1e-13, 2.0), lambda v: -np.sin(v), 2.0),
        hc("sin + 1e-6 noise at 1", "noisy", noisy(xp.sin, 1e-6, 1.0), np.cos, 1.0),
        hc("sin in float32 at 1", "noisy", in_float32(xp.sin), np.cos, 1.0),
        hc("exp in float32 at 2", "noisy", in_float32(xp.exp), np.exp, 2.0),
        hc("log in float32 at 3", "noisy", in_float32(xp.log), lambda v: 1 / v, 3.0),
        # Kinks and jumps; the first four have no derivative.
        hc("relu at 0", "kink", lambda v: xp.where(v > 0.0, v, zeros(v)), None, 0.0),
        hc("abs at 0", "kink", xp.abs, None, 0.0),
        hc("max(x, 0) at 0", "kink", lambda v: xp.maximum(v, zeros(v)), None, 0.0),
        hc("step at 0", "kink", lambda v: xp.where(v >= 0.0, xp.ones_like(v), zeros(v)), None, 0.0),
        hc("floor at 2", "kink", xp.floor, None, 2.0),
        hc("sign at 0", "kink", xp.sign, None, 0.0),
        hc("min(x, 1-x) at 0.5", "kink", lambda v: xp.minimum(v, 1.0 - v), None, 0.5),
        hc("abs(x-1e5) at 1e5", "kink", lambda v: xp.abs(v - 1e5), None, 1e5),
        # ... and near kinks, where a derivative exists but wide stencils straddle the kink.
        hc("abs at 1e-12", "kink", xp.abs, lambda v: np.sign(v), 1e-12),
        hc(
            "relu at 1e-9",
            "kink",
            lambda v: xp.where(v > 0.0, v, zeros(v)),
            lambda v: np.ones_like(v),
            1e-9,
        ),
        hc(
            "step at 1e-10",
            "kink",
            lambda v: xp.where(v >= 0.0, xp.ones_like(v), zeros(v)),
            lambda v: np.zeros_like(v),
            1e-10,
        ),
        hc("floor at 0.5", "kink", xp.floor, lambda v: np.zeros_like(v), 0.5),
        # Poles and infinite derivatives.
        hc("sqrt at 0", "pole", xp.sqrt, None, 0.0),
        hc("cbrt at 0", "pole", cbrt, None, 0.0),
        hc("sqrt(|x|) at 0", "pole", lambda v: xp.sqrt(xp.abs(v)), None, 0.0),
        hc("1/x at 0", "pole", lambda v: 1.0 / v, None, 0.0),
        hc("1/x at 1e-8", "pole", lambda v: 1.0 / v, lambda v: -1 / v / v, 1e-8),
        hc("1/x^2 at 1e-5", "pole", lambda v: 1.0 / (v * v), lambda v: -2 / v**3, 1e-5),
        hc(
            "1/(x-1) at 1+1e-7",
            "pole",
            lambda v: 1.0 / (v - 1.0),
            lambda v: -1 / (v - 1) ** 2,
            1 + 1e-7,
        ),
        hc("tan at 1.5707963", "pole", xp.tan, lambda v: 1 / np.cos(v) ** 2, 1.5707963),
        hc("cbrt at 1e-9", "pole", cbrt, lambda v: np.abs(v) ** (-2 / 3) / 3, 1e-9),
    ]
    return cases
