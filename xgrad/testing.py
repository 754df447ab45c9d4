"""Assertions for tests of array code on any backend (used by xgrad's own test suite)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from xgrad._arrays import to_numpy

__all__ = ["SuiteCase", "assert_close", "default_rtol", "smooth_suite"]

# Relative tolerances for results that should equal a float64 NumPy reference up to
# rounding: a few hundred ulps, since backends sum and fuse operations in other orders.
_RTOL = {"float64": 1e-12, "float32": 3e-6, "float16": 1e-2}


def default_rtol(dtype: Any) -> float:
    """Default relative tolerance for arrays of ``dtype`` (by name: float64, float32...)."""
    name = dtype if isinstance(dtype, str) else str(dtype).rsplit(".", 1)[-1]
    return _RTOL.get(name, 1e-12)


def assert_close(
    actual: Any,
    desired: Any,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    check_dtype: bool = True,
    check_shape: bool = True,
    err_msg: str = "",
) -> None:
    """Assert ``actual`` (array of any backend) is close to ``desired`` (NumPy reference).

    Both are converted to NumPy explicitly. ``rtol`` defaults to one chosen from the dtype
    of ``actual``. With ``check_dtype``, a float64 reference must be matched by a floating
    result of the dtype the caller asked for, so float32 results are not silently accepted
    where float64 was expected: pass ``check_dtype=False`` to compare values only.

    >>> assert_close(np.array([1.0, 2.0]), [1.0, 2.0 + 1e-14])
    """
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
