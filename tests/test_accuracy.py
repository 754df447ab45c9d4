"""The accuracy bar of issue 3: smooth test functions, default method, every backend.

Median relative error <= 1e-10 (float64) and <= 1e-5 (float32), no NaN, no result off by
more than a loose bound (no silently wrong number); complex step <= 1e-14 in float64.
References are analytic, in float64, at the point actually used (rounded to the dtype).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xgrad import numerical_diff
from xgrad.testing import smooth_suite

# Median bound of the issue, and a bound on every single result (nothing silently wrong).
BOUNDS = {"float64": (1e-10, 1e-8), "float32": (1e-5, 2e-4)}


def relative_errors(backend, dtype, method="central"):
    xp = backend.xp
    errors = {}
    for name, f, df, point in smooth_suite(xp):
        x = backend.asarray(np.array(point), dtype=dtype)
        got = backend.to_numpy(numerical_diff(f, x, method=method))
        used = float(backend.to_numpy(x))
        exact = df(used)
        errors[name] = abs(float(got) - exact) / abs(exact)
    return errors


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_default_method_accuracy(backend, dtype) -> None:
    errors = relative_errors(backend, dtype)
    values = np.array(list(errors.values()))
    assert not np.any(np.isnan(values)), errors
    median_bound, worst_bound = BOUNDS[dtype]
    assert np.median(values) <= median_bound, errors
    assert np.max(values) <= worst_bound, errors


def test_complex_step_accuracy(backend) -> None:
    errors = relative_errors(backend, "float64", method="complex")
    assert np.median(list(errors.values())) <= 1e-14, errors
    assert max(errors.values()) <= 1e-13, errors


def test_richardson_accuracy(backend) -> None:
    errors = relative_errors(backend, "float64", method="richardson")
    assert np.median(list(errors.values())) <= 1e-12, errors
    assert max(errors.values()) <= 1e-9, errors


def test_python_scalar_path_accuracy() -> None:
    cases = [
        (math.exp, math.exp, 1.0),
        (math.sin, math.cos, 1.0),
        (math.log, lambda v: 1 / v, 1e-3),
        (math.sqrt, lambda v: 0.5 / math.sqrt(v), 1e-3),
        (lambda v: 1 / v, lambda v: -1 / v**2, 0.5),
        (lambda v: math.exp(v**2) ** 2, lambda v: 4 * v * math.exp(2 * v**2), 0.5),
        (math.tanh, lambda v: 1 - math.tanh(v) ** 2, 0.5),
        (lambda v: math.exp(50 * v), lambda v: 50 * math.exp(50 * v), 0.1),
        (lambda v: v**2, lambda v: 2 * v, 1e6),
        (math.exp, math.exp, 1e-8),  # step relative to max(|x|, 1), not |x|
        (math.cos, lambda v: -math.sin(v), 1e-3),
    ]
    errors = [abs(numerical_diff(f, x) - df(x)) / abs(df(x)) for f, df, x in cases]
    assert np.median(errors) <= 1e-10, errors
    assert max(errors) <= 1e-7, errors
