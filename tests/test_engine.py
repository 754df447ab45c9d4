"""The error-controlled engine: every default result is within its error, or it is flagged.

Cases come from the issue that asked for the engine (each was silently wrong before it),
from `xgrad.testing.hard_suite` on every backend row in both dtypes, and from outside that
suite, so that the rules are not tuned to the cases they are judged on.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import xgrad
from xgrad import (
    AccuracyError,
    AccuracyWarning,
    DiffStatus,
    NonFiniteError,
    hessian,
    jacobian,
    numerical_diff,
    numerical_gradient,
)
from xgrad.testing import hard_suite, smooth_suite

WRONG = {"float64": 1e-8, "float32": 1e-2}


def quietly(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        return call(*args, **kwargs)


# -- the issue's table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "x", "exact"),
    [
        (np.cos, 3e4, -math.sin(3e4)),
        (lambda v: np.sin(3 * v), 5e3, 3 * math.cos(1.5e4)),
        (np.exp, 600.0, math.exp(600.0)),
        (np.log, 1e6, 1e-6),
        (np.sqrt, 1e12, 0.5e-6),
        (lambda v: 1.0 / v, 1e-8, -1e16),
    ],
)
def test_issue_cases_are_right(f, x, exact) -> None:
    r = numerical_diff(f, np.asarray(x), full_output=True)
    assert bool(r.success)
    assert abs(float(r.df) - exact) <= 1e-10 * abs(exact)
    assert abs(float(r.df) - exact) <= float(r.error)
    # The Python-float path gives the same bits.
    assert quietly(numerical_diff, lambda v: float(f(np.float64(v))), x) == float(r.df)


def test_issue_gradient_case() -> None:
    g = numerical_gradient(lambda v: np.sum(np.sin(v)), np.array([2e4, 1.0]))
    np.testing.assert_allclose(g, np.cos([2e4, 1.0]), rtol=1e-10)


@pytest.mark.parametrize(
    ("f", "x"),
    [
        (lambda v: np.maximum(v, 0.0), 0.0),
        (np.abs, 0.0),
        (lambda v: np.where(v > 0, 1.0, 0.0), 0.0),
        (np.sqrt, 0.0),
        (np.cbrt, 0.0),
        (lambda v: 1.0 / v, 0.0),
        (lambda v: np.abs(v - 1e5), 1e5),
        (lambda v: np.floor(v), 2.0),
    ],
)
def test_no_derivative_is_never_success(f, x) -> None:
    r = numerical_diff(f, np.asarray(x), full_output=True)
    assert not bool(r.success)
    assert int(r.status) in (DiffStatus.NOT_DIFFERENTIABLE, DiffStatus.NOT_FINITE)
    with pytest.warns(AccuracyWarning, match="not differentiable|not finite"):
        numerical_diff(f, np.asarray(x))


def test_kink_at_relu_zero_is_flagged_with_its_status() -> None:
    r = numerical_diff(lambda v: max(v, 0.0), 0.0, full_output=True)
    assert r.status == DiffStatus.NOT_DIFFERENTIABLE and r.success is False


def test_f_in_lower_precision_is_flagged_and_df_keeps_x_dtype() -> None:
    x = np.array([0.5, 1.0, 2.0])
    r = numerical_diff(lambda v: np.sin(v.astype(np.float32)), x, full_output=True)
    assert r.df.dtype == np.float64
    assert not np.any(r.success)
    assert np.all(r.status == DiffStatus.NOISY)
    inside = numerical_diff(
        lambda v: np.sin(v.astype(np.float32)).astype(np.float64), x, full_output=True
    )
    wrong = np.abs(inside.df - np.cos(x)) > 1e-8
    assert not np.any(wrong & inside.success)


# -- the hard suite, every row, both dtypes ------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hard_suite_right_or_flagged(backend, dtype) -> None:
    if dtype == "float64" and not backend.supports_float64:
        pytest.skip(f"{backend.name} has no float64 here")
    xp = backend.xp
    silently_wrong = []
    for case in hard_suite(xp):
        with np.errstate(over="ignore"):
            point = np.asarray(case.point, dtype=dtype)
        if not np.isfinite(point):
            continue
        x = backend.asarray(point, dtype=dtype)
        try:
            r = numerical_diff(case.f, x, full_output=True)
        except NonFiniteError:
            continue
        if not bool(backend.to_numpy(r.success) if hasattr(r.success, "shape") else r.success):
            continue
        ref = case.reference(dtype)
        df = float(backend.to_numpy(r.df))
        scale = abs(ref) if ref else 1.0
        if ref is None or not abs(df - ref) <= WRONG[dtype] * scale:
            silently_wrong.append((case.name, df, ref))
    assert silently_wrong == []


def test_hard_suite_error_bars_cover_successes() -> None:
    covered = total = 0
    for dtype in ("float64", "float32"):
        for case in hard_suite(np):
            with np.errstate(over="ignore"):
                x = np.asarray(case.point, dtype=dtype)
            if not np.isfinite(x):
                continue
            try:
                r = numerical_diff(case.f, x, full_output=True)
            except NonFiniteError:
                continue
            ref = case.reference(dtype)
            if bool(r.success) and ref is not None:
                total += 1
                covered += abs(float(r.df) - ref) <= float(r.error)
    assert total > 100
    # Issue 10's target: 99 % (before the confirming level and float32's argument
    # rounding 108 of 111 were).
    assert covered >= 0.99 * total


def test_cases_outside_the_suite() -> None:
    cases = [
        (lambda v: np.sin(7e3 * v) + v, 0.25, lambda v: 7e3 * math.cos(1750.0) + 1.0),
        (lambda v: np.exp(-v) * 1e300, -5.0, lambda v: -math.exp(5.0) * 1e300),
        (lambda v: v**-3, 1e-3, lambda v: -3e12),
        (lambda v: np.log(v) ** 2, 1e200, lambda v: 2 * math.log(1e200) / 1e200),
        (lambda v: np.arctan(1e6 * (v - 1.0)), 1.0 + 3e-7, lambda v: 1e6 / (1 + 0.09)),
        (lambda v: np.tanh(v) * 1e-30, 0.3, lambda v: (1 - math.tanh(0.3) ** 2) * 1e-30),
    ]
    for f, x, df in cases:
        r = numerical_diff(f, np.asarray(x), full_output=True)
        exact = df(x)
        if bool(r.success):
            assert abs(float(r.df) - exact) <= 1e-8 * abs(exact), f(np.asarray(x))
    # Kinks elsewhere than 0, in a vector with smooth neighbours.
    x = np.array([1.0, 2.0, 3.0])
    r = numerical_diff(lambda v: np.abs(v - 2.0) + v**2, x, full_output=True)
    assert r.status.tolist() == [0, DiffStatus.NOT_DIFFERENTIABLE, 0]
    np.testing.assert_allclose(r.df[[0, 2]], [2 * 1.0 - 1.0, 2 * 3.0 + 1.0], rtol=1e-12)


@pytest.mark.parametrize(
    ("f", "x", "exact"),
    [
        # Cancellation in 1 + x: noise at steps relative to x, smooth at absolute ones.
        (lambda v: np.log(1.0 + v) / v, 1e-6, -0.5 + 2e-6 / 3 - 3e-12 / 4),
        (lambda v: (np.exp(v) - 1.0) / v, 1e-7, 0.5 + 1e-7 / 3 + 1e-14 / 8),
        (
            lambda v: (np.sqrt(1.0 + v) - 1.0) / v,
            1e-6,
            -1 / (2 * math.sqrt(1 + 1e-6) * (math.sqrt(1 + 1e-6) + 1) ** 2),
        ),
    ],
)
def test_cancellation_near_x_is_solved_at_absolute_steps(f, x, exact) -> None:
    # scipy's defaults solve the first to 1e-12; the engine flagged it as noisy before it
    # continued the wide tableau where the narrow one did not converge.
    r = numerical_diff(f, np.asarray([x]), full_output=True)
    assert r.status.tolist() == [DiffStatus.CONVERGED]
    assert abs(float(r.df[0]) - exact) <= min(1e-8 * abs(exact), float(r.error[0]))


# -- the smooth suite: accuracy and cost ---------------------------------------------------


def test_smooth_suite_accuracy_and_evaluations() -> None:
    errors, evaluations = [], []
    for _name, f, df, point in smooth_suite(np):
        calls = []

        def counted(v, f=f, calls=calls):
            calls.append(1)
            return float(f(np.float64(v)))

        value = numerical_diff(counted, point)
        errors.append(abs(value - float(df(point))) / abs(float(df(point))))
        evaluations.append(len(calls))
    assert np.median(errors) <= 1e-13
    assert max(errors) <= 1e-10
    assert np.mean(evaluations) <= 11.5


def test_smooth_suite_float32(backend) -> None:
    xp = backend.xp
    errors = []
    for _name, f, df, point in smooth_suite(xp):
        x = backend.asarray(np.float32(point), dtype="float32")
        value = float(backend.to_numpy(numerical_diff(f, x)))
        used = float(np.float32(point))
        errors.append(abs(value - float(df(used))) / abs(float(df(used))))
    # Issue 10's target; 1.9e-6 with float32's first step at 1/8 of the scale (4.7e-7 now).
    assert np.median(errors) <= 1e-6


def test_scalar_and_array_paths_agree_bit_for_bit() -> None:
    for _name, f, _df, point in smooth_suite(np):
        array = numerical_diff(f, np.array([point]))
        scalar = numerical_diff(lambda v, f=f: float(f(np.float64(v))), point)
        assert scalar == float(array[0])
    # Error and evaluations too, in the cases whose first stage needs f(x) for its noise
    # bar (T33 - T22 not far below the tolerance) and in one that does not.
    screened = 0
    for name, f, _df, point in smooth_suite(np):
        array = numerical_diff(f, np.array([point]), full_output=True)
        scalar = numerical_diff(lambda v, f=f: float(f(np.float64(v))), point, full_output=True)
        assert (scalar.error, scalar.nfev) == (float(array.error[0]), array.nfev), name
        screened += scalar.nfev == 9
    assert screened >= 1


# -- flags: warning, error, full output -----------------------------------------------------


def test_warning_names_element_and_points_at_caller() -> None:
    x = np.array([1.0, 0.0, 2.0])
    with pytest.warns(AccuracyWarning, match=r"x\[1\] = 0\.0.*estimate") as record:
        numerical_diff(np.abs, x)
    assert record[0].filename == __file__


def test_on_failure_raise_and_full_output() -> None:
    with pytest.raises(AccuracyError) as info:
        numerical_diff(np.abs, np.array([0.0]), on_failure="raise")
    assert isinstance(info.value, xgrad.XgradError)
    assert info.value.result.success.tolist() == [False]
    assert info.value.result.status.tolist() == [DiffStatus.NOT_DIFFERENTIABLE]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = numerical_diff(np.abs, np.array([0.0, 1.0]), full_output=True)
    assert r.success.tolist() == [False, True]


def test_tolerances_are_keywords_with_checks() -> None:
    r = numerical_diff(np.exp, np.array([1.0]), rtol=1e-3, full_output=True)
    assert r.nfev == 8 and bool(r.success[0])
    with pytest.raises(ValueError, match="rtol"):
        numerical_diff(np.exp, 1.0, rtol=-1.0)
    with pytest.raises(TypeError, match="atol"):
        numerical_diff(np.exp, 1.0, atol="small")
    with pytest.raises(ValueError, match="on_failure"):
        numerical_diff(np.exp, 1.0, on_failure="ignore")


def test_non_finite_error_carries_index_and_value() -> None:
    with pytest.raises(NonFiniteError) as info:
        numerical_diff(lambda v: np.where(v > 1.5, np.nan, v), np.array([1.0, 2.0]))
    assert info.value.index == (1,) and info.value.value == 2.0
    assert isinstance(info.value, ValueError)


def test_zero_derivatives_are_not_flagged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numerical_diff(lambda v: v * v, 0.0) == 0.0
        g = numerical_gradient(lambda v: v[0] ** 2, np.array([1.0, 5.0]))
    np.testing.assert_allclose(g, [2.0, 0.0], rtol=1e-12)
    # A zero only because the steps are too large (x below their resolution) is redone.
    assert numerical_diff(lambda v: v * v, 1e-150) == pytest.approx(2e-150, rel=1e-12)


def test_float16_is_refused_the_same_way() -> None:
    x = np.array([1.0, 2.0], dtype=np.float16)
    with pytest.raises(TypeError, match=r"x: expected float32 or float64.*float16"):
        numerical_diff(lambda v: v * v, x)
    with pytest.raises(TypeError, match=r"x: expected float32 or float64.*float16"):
        numerical_gradient(lambda v: float(np.sum(v)), x)


# -- gradients, Jacobians, Hessians ---------------------------------------------------------


def test_gradient_flags_kinks_per_element(backend) -> None:
    xp = backend.xp
    x = backend.asarray([0.0, 1.5, -2.0])
    r = numerical_gradient(lambda v: xp.sum(xp.abs(v)), x, full_output=True)
    assert backend.to_numpy(r.status).tolist()[0] == DiffStatus.NOT_DIFFERENTIABLE
    np.testing.assert_allclose(backend.to_numpy(r.df)[1:], [1.0, -1.0], rtol=1e-12)
    with pytest.warns(AccuracyWarning, match=r"numerical_gradient: not differentiable at x\[0\]"):
        numerical_gradient(lambda v: xp.sum(xp.abs(v)), x)


def test_jacobian_flags_and_full_output(backend) -> None:
    xp = backend.xp
    x = backend.asarray([0.0, 2.0])
    r = jacobian(lambda v: xp.abs(v) * v[1], x, full_output=True)
    status = backend.to_numpy(r.status)
    assert status[0, 0] == DiffStatus.NOT_DIFFERENTIABLE
    assert status[1, 1] == 0 and status[1, 0] == 0
    with pytest.warns(AccuracyWarning, match="jacobian"):
        jacobian(lambda v: xp.abs(v) * v[1], x)


def test_hessian_of_abs_is_flagged_not_16384() -> None:
    with pytest.warns(AccuracyWarning, match="hessian"):
        hessian(lambda v: np.sum(np.abs(v)), np.array([0.0, 1.0]))
    r = hessian(lambda v: np.sum(np.abs(v)), np.array([0.0, 1.0]), full_output=True)
    assert r.status[0, 0] != 0 and r.status[1, 1] == 0


def test_hessian_is_the_jacobian_of_the_gradient() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(6)
    a = rng.standard_normal((6, 6))

    def f(v):
        return np.sin(v) @ a @ np.cos(v) + np.sum(v**4)

    def grad(v):
        return numerical_gradient(f, np.array(v, copy=True))

    h = hessian(f, x)
    j = jacobian(grad, x, rtol=1e-4)
    np.testing.assert_allclose(h, j, rtol=1e-5, atol=1e-5 * np.max(np.abs(h)))
    np.testing.assert_allclose(h, h.T, rtol=0, atol=0)


def test_hessian_refuses_what_does_not_fit_before_computing() -> None:
    calls = []

    def f(v):
        calls.append(1)
        return 0.0

    with pytest.raises(MemoryError, match=r"x: a Hessian of 10,000,000 parameters"):
        hessian(f, np.zeros(10_000_000))
    assert calls == []


def test_gradient_descent_refuses_bad_lr_and_catches_by_type() -> None:
    with pytest.raises(ValueError, match="lr: expected a positive"):
        xgrad.gradient_descent(lambda v: float(np.sum(v**2)), np.ones(2), lr=-0.1)
    with pytest.raises(ValueError, match="lr: expected a positive"):
        xgrad.gradient_descent(lambda v: float(np.sum(v**2)), np.ones(2), lr=0.0)
    with pytest.raises(xgrad.DivergenceError) as info:
        xgrad.gradient_descent(lambda v: float(np.sum(np.log(v))), np.array([-1.0, 2.0]))
    assert isinstance(info.value.__cause__, NonFiniteError)


def test_step_size_warning_points_at_caller() -> None:
    with pytest.warns(xgrad.StepSizeWarning) as record:
        numerical_diff(lambda v: v**2, np.array([1e17]), h=1.0)
    assert record[0].filename == __file__
    with pytest.warns(xgrad.StepSizeWarning) as record:
        numerical_gradient(lambda v: float(np.sum(v**2)), np.array([1e17, 1.0]), h=1.0)
    assert record[0].filename == __file__


def test_jacobian_output_shape_that_varies_is_a_clear_error() -> None:
    def f(v):
        return v if v[0] == 1.0 else v[:1]

    with pytest.raises(xgrad.ArgumentError, match=r"f: returned shape \(1,\).*\(2,\) at x"):
        jacobian(f, np.array([1.0, 2.0]))


# -- aliasing: oscillating f at steps near multiples of its period ---------------------------


def test_cos_402x_at_0_3_is_not_a_false_zero() -> None:
    # At halving steps 2**-k / 8, 402 h was near a multiple of pi at every level: the four
    # quotients agreed on 0.116 (error 1e-14, converged) for -377.45.
    exact = -402.0 * math.sin(402.0 * 0.3)
    for x in (0.3, np.asarray(0.3)):
        r = numerical_diff(lambda v: np.cos(402.0 * v), x, full_output=True)
        assert float(r.status) == DiffStatus.CONVERGED
        assert abs(float(r.df) - exact) <= 1e-8 * abs(exact)
        assert abs(float(r.df) - exact) <= float(r.error)


# Answered (unflagged) and, of those, within their error bars, at least: float32 at x = 2
# (w x up to 6000, where float32 rounds w x by up to 2.4e-4 rad) answers less, honestly:
# 36 % since f's own argument rounding is in the bars (`xgrad._policy.argument_noise`;
# 55 % before).
GRID_FLOORS = {
    ("float64", 0.3): (0.95, 0.9),
    ("float64", 0.7): (0.95, 0.9),
    ("float64", 2.0): (0.95, 0.8),
    ("float32", 0.3): (0.9, 0.9),
    ("float32", 0.7): (0.85, 0.9),
    ("float32", 2.0): (0.35, 0.85),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("x0", [0.3, 0.7, 2.0])
def test_oscillatory_grid_is_never_silently_wrong(dtype: str, x0: float) -> None:
    # cos(w x) for w = 3, 10, ..., 2998: with halving steps 19 of these 1287 float64
    # answers (102 float32) were converged and wrong (w near 201 m aliased). Before the
    # confirming level float32's bars covered 72, 69 and 51 % of its answers at x = 0.3,
    # 0.7, 2 (96, 95 and 92 % now); before the steps without a common divisor float64
    # answered 87 %.
    w = np.arange(3.0, 3001.0, 7.0)
    wd = w.astype(dtype)
    x = np.full(w.shape, x0, dtype=dtype)
    r = numerical_diff(lambda v: np.cos(wd * v), x, full_output=True)
    exact = -w * np.sin(w * float(x[0]))
    unflagged = np.asarray(r.status) == DiffStatus.CONVERGED
    error = np.abs(np.asarray(r.df, dtype=float) - exact)
    wrong = unflagged & ~(error <= WRONG[dtype] * np.abs(exact))
    assert not wrong.any(), f"silently wrong at w = {w[wrong].astype(int).tolist()}"
    answered, covered = GRID_FLOORS[(dtype, x0)]
    assert np.count_nonzero(unflagged) >= answered * w.size
    inside = unflagged & (error <= np.asarray(r.error, dtype=float))
    assert np.count_nonzero(inside) >= covered * np.count_nonzero(unflagged)


@pytest.mark.parametrize(
    ("f", "exact", "x0"),
    [
        (lambda v: np.cos(v**2), lambda v: -2.0 * v * math.sin(v * v), 100.0),
        (lambda v: np.cos(402.0 * v), lambda v: -402.0 * math.sin(402.0 * v), 0.3),
    ],
    ids=["cos(x^2) at 100", "cos(402 x) at 0.3"],
)
def test_richardson_bars_hold_the_scatter_after_its_best(f, exact, x0) -> None:
    # richardson keeps the smallest error estimate of every level's entries: a chance
    # agreement. Its bars were 4.8 and 1.2 times below the true errors (6.3e-12, 4.0e-13).
    r = numerical_diff(f, np.asarray(x0), method="richardson", full_output=True)
    truth = exact(x0)
    assert float(r.status) == DiffStatus.CONVERGED
    assert abs(float(r.df) - truth) <= float(r.error) <= 1e-8 * abs(truth)


@pytest.mark.parametrize("x0", [2.0, 5.0])
def test_float32_oscillation_at_large_phase_is_flagged_not_wrong(backend, x0: float) -> None:
    # cos(w x) in float32 up to w x = 1e5: f rounds w x by up to 2**-24 of itself, so two
    # levels can agree by chance on a wrong slope. Before f's argument rounding was in the
    # bars, 19 (x = 2) and 40 (x = 5) answers were off by more than 1e-2, unflagged
    # (w = 10720.06, 1558, 3974.47, ...), and 77 % and 68 % of the answers were within
    # their bars.
    w = np.arange(3.0, 2e4, 3.11).astype(np.float32)
    wb = backend.asarray(w, dtype="float32")
    x = backend.asarray(np.full(w.shape, x0), dtype="float32")
    r = numerical_diff(lambda v: backend.xp.cos(wb * v), x, full_output=True)
    w64 = w.astype(float)
    exact = -w64 * np.sin(w64 * x0)
    answered = backend.to_numpy(r.success).astype(bool)
    error = np.abs(backend.to_numpy(r.df).astype(float) - exact)
    wrong = answered & ~(error <= 1e-2 * np.abs(exact))
    assert not wrong.any(), f"silently wrong at w = {w[wrong].tolist()[:8]}"
    inside = answered & (error <= backend.to_numpy(r.error).astype(float))
    assert np.count_nonzero(answered) >= 30
    assert np.count_nonzero(inside) >= 0.99 * np.count_nonzero(answered)


# (f of the namespace and a constant, exact f' on float64 NumPy values, point)
FLOAT32_BAR_CASES = {
    # Steps round to multiples of 1e4's spacing (9.8e-4): Neville's factors are those of
    # the widths taken (the bar was 2.7 times below the error).
    "tan at 1e4": (lambda xp, v: xp.tan(v), lambda v: 1.0 + np.tan(v) ** 2, 1e4),
    # float32 rounds 100 x and 1e4 x: levels agreed by chance, the next one did not.
    "sin(100 x) at 1": (lambda xp, v: xp.sin(100.0 * v), lambda v: 100 * np.cos(100 * v), 1.0),
    "sin(1e4 x) at 0.5": (lambda xp, v: xp.sin(1e4 * v), lambda v: 1e4 * np.cos(1e4 * v), 0.5),
}


@pytest.mark.parametrize("case", list(FLOAT32_BAR_CASES))
def test_float32_bars_cover_or_flag(backend, case) -> None:
    f, df, point = FLOAT32_BAR_CASES[case]
    xp = backend.xp
    x = backend.asarray(np.float32(point), dtype="float32")
    r = numerical_diff(lambda v: f(xp, v), x, full_output=True)
    exact = float(df(np.float64(np.float32(point))))
    if bool(backend.to_numpy(r.success)):
        error = abs(float(backend.to_numpy(r.df)) - exact)
        assert error <= float(backend.to_numpy(r.error)), (error, r)


@pytest.mark.parametrize("x0", [0.3, 0.7, 2.0])
def test_float32_argument_rounding_is_flagged_not_wrong(x0: float) -> None:
    # float32 rounds w x inside cos(w x): for w up to 1e4, f' is known no better than
    # |f''| eps |x|. Before that term, and the confirming level, 5, 23 and 9 of these 3215
    # answers were converged and off by more than 1e-2.
    w = np.arange(3.0, 1e4, 3.11).astype(np.float32)
    x = np.full(w.shape, x0, dtype=np.float32)
    r = numerical_diff(lambda v: np.cos(w * v), x, full_output=True)
    exact = -w.astype(float) * np.sin(w.astype(float) * float(x[0]))
    unflagged = np.asarray(r.status) == DiffStatus.CONVERGED
    off = np.abs(np.asarray(r.df, dtype=float) - exact) > WRONG["float32"] * np.abs(exact)
    assert not (unflagged & off).any(), w[unflagged & off].tolist()


def test_wide_scale_agreement_is_not_confirmed_twice(backend) -> None:
    # The first four levels' agreement is what first_stage accepts: a gradient's search
    # accepts it as well, with no confirming level (8 evaluations per element, not 10),
    # and f(x) once for the noise bar: T33 - T22 (1e-11) is not far below the tolerance.
    xp = backend.xp
    dtype = "float64" if backend.supports_float64 else "float32"
    x = backend.asarray(np.linspace(0.1, 2.0, 50), dtype=dtype)
    r = numerical_gradient(lambda v: xp.sum(xp.sin(v)), x, full_output=True)
    assert bool(np.all(backend.to_numpy(r.success))) and r.nfev == 9
    rtol = 1e-10 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(backend.to_numpy(r.df), np.cos(backend.to_numpy(x)), rtol=rtol)


def test_steps_with_a_common_divisor_alias_no_more(backend) -> None:
    # The old steps 1, 1/2, 1/4, 7/64 (times 1/8) are all multiples of 1/512: at
    # w = 2 pi 512 (1 + 1e-4) every level aliased, and 0.0054 passed as converged.
    if not backend.supports_float64:
        pytest.skip(f"{backend.name} has no float64 here")
    xp = backend.xp
    for w, x0 in ((3217.0, 0.3), (3217.02, 2.0), (10294.44, 5.0)):
        x = backend.asarray(x0, dtype="float64")
        r = numerical_diff(lambda v, w=w: xp.cos(w * v), x, full_output=True)
        exact = -w * math.sin(w * x0)
        assert float(backend.to_numpy(r.status)) == DiffStatus.CONVERGED
        assert abs(float(backend.to_numpy(r.df)) - exact) <= 1e-8 * abs(exact)


NOISE_CASES = {
    "exp at 1": (lambda xp, v: xp.exp(v), math.e, 1.0),
    "sin at 0.7": (lambda xp, v: xp.sin(v), math.cos(0.7), 0.7),
    "log at 3": (lambda xp, v: xp.log(v), 1.0 / 3.0, 3.0),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(NOISE_CASES))
def test_random_noise_in_f_is_flagged_not_wrong(backend, dtype: str, case: str) -> None:
    # f(v) = g(v) (1 + a N(0, 1)), drawn afresh per seed on the host. Before the noise
    # bars, levels agreed by chance: bench_noisy counted 112 of 600 float64 answers per
    # amplitude row off by up to 4.5e-7 (1e-10..1e-8), unflagged.
    if dtype == "float64" and not backend.supports_float64:
        pytest.skip(f"{backend.name} has no float64 here")
    g, exact, x0 = NOISE_CASES[case]
    xp = backend.xp
    amplitudes = (1e-10, 1e-9) if dtype == "float64" else (3e-4,)
    answered = covered = 0
    for amp in amplitudes:
        for seed in range(30):
            rng = np.random.default_rng(seed)

            def f(v, amp=amp, rng=rng):
                noise = rng.standard_normal(tuple(v.shape))
                return g(xp, v) * backend.asarray(1.0 + amp * noise, dtype=dtype)

            r = numerical_diff(f, backend.asarray(x0, dtype=dtype), full_output=True)
            if not bool(backend.to_numpy(r.success)):
                continue
            error = abs(float(backend.to_numpy(r.df)) - exact)
            assert error <= WRONG[dtype] * exact, (amp, seed, error)
            answered += 1
            covered += error <= float(backend.to_numpy(r.error))
    if dtype == "float64":
        # float32's few answers (1-5 of 200 seeds at 1e-4..3e-4) are within 1e-2 but their
        # bars cover about half of them (bench_noisy).
        assert covered >= 0.9 * answered
