"""Assertions for tests of array code on any backend (used by xgrad's own test suite)."""

from __future__ import annotations

from typing import Any

import numpy as np

from xgrad._arrays import to_numpy

__all__ = ["assert_close", "default_rtol"]

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
