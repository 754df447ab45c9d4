"""The hard-case catalogue (xgrad.testing.hard_suite): its exact derivatives are checked.

Each exact derivative is compared with an independent estimate: a complex step
(Im f(x + ih) / h with h far below any scale of f, exact to rounding) for the analytic
cases, a Richardson-extrapolated central difference at a step inside the smooth region for
kinks and noisy f, and, where no derivative exists, difference quotients that must fail to
converge. f must keep the dtype of its input on every backend of the matrix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xgrad.testing import HARD_CATEGORIES, HardCase, hard_suite

CASES = hard_suite(np)
IDS = [c.name for c in CASES]


def check_of(case: HardCase) -> str:
    """How a case's exact derivative is checked."""
    if case.category in ("kink", "noisy") or case.name.startswith("cbrt"):
        return "real"  # not complex-analytic (where, floor, abs, casts)
    if case.category == "removable":
        return "longdouble"  # a complex step cancels in the quotient as the formula does
    return "complex"


def with_check(kind: str) -> list[HardCase]:
    return [c for c in CASES if c.differentiable and check_of(c) == kind]


def test_catalogue_shape() -> None:
    assert len(CASES) >= 60
    assert len(set(IDS)) == len(IDS), "case names must be unique"
    for category in HARD_CATEGORIES:
        assert sum(c.category == category for c in CASES) >= 4, category
    for c in CASES:
        assert c.category in HARD_CATEGORIES, c.name
        assert isinstance(c.point, float), c.name
        assert (c.df is not None) == c.differentiable, c.name
        assert (c.reference() is not None) == c.differentiable, c.name


def complex_step(f, x: float, h: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.imag(f(np.asarray(complex(x, h))))) / h


@pytest.mark.parametrize("case", with_check("complex"), ids=lambda c: c.name)
def test_exact_derivative_against_complex_step(case: HardCase) -> None:
    x = case.point
    h = min(1e-20, 1e-8 * abs(x))
    step, rtol = complex_step(case.f, x, h), 1e-11
    if abs(step * h) < 1e-290:
        # Im f(x + ih) underflows (exp at -700): larger steps, Richardson-extrapolated
        # (error h^4 f^(5) / 480).
        step = (4 * complex_step(case.f, x, 5e-3) - complex_step(case.f, x, 1e-2)) / 3
        rtol = 1e-10
    exact = case.reference()
    assert math.isfinite(step), case.name
    assert abs(step - exact) <= rtol * abs(exact), (case.name, step, exact)


def richardson(f, x: float, h: float, dtype=np.float64, levels: int = 2) -> float:
    """Central differences at h, h/2, ... extrapolated (Richardson), computed in ``dtype``."""
    xd, hd = np.asarray(x, dtype=dtype), np.asarray(h, dtype=dtype)
    with np.errstate(all="ignore"):
        row = [(f(xd + hd / 2**k) - f(xd - hd / 2**k)) / (2 * hd / 2**k) for k in range(levels)]
    for j in range(1, levels):
        row = [(4**j * row[k + 1] - row[k]) / (4**j - 1) for k in range(len(row) - 1)]
    return float(row[0])


@pytest.mark.skipif(
    np.finfo(np.longdouble).eps > 1e-18, reason="long double is not extended precision here"
)
@pytest.mark.parametrize("case", with_check("longdouble"), ids=lambda c: c.name)
def test_exact_derivative_of_removable_singularities(case: HardCase) -> None:
    # f is entire (or analytic within |x| < 1) in its stable form, so a step of 1e-2 is
    # inside its smooth scale; extended precision and 3 Richardson levels bound the check
    # error by ~1e-16 (roundoff) + h^6 f^(7) (truncation).
    exact = case.reference()
    got = richardson(case.f, case.point, 1e-2, dtype=np.longdouble, levels=3)
    assert abs(got - exact) <= 1e-11 * abs(exact), (case.name, got, exact)


@pytest.mark.parametrize("case", with_check("real"), ids=lambda c: c.name)
def test_exact_derivative_of_kinks_and_noisy_f(case: HardCase) -> None:
    x = case.point
    # A step well inside the smooth side of a kink; large enough for the noise to average
    # out (noise / h, with 1e-6 relative noise or float32 rounding inside f).
    h = 2e-2 if case.category == "noisy" else 1e-3 * abs(x)
    rtol = 2e-4 if case.category == "noisy" else 1e-9
    exact = case.reference()
    got = richardson(case.f, x, h)
    assert abs(got - exact) <= rtol * max(abs(exact), 1.0), (case.name, got, exact)


@pytest.mark.parametrize("case", [c for c in CASES if not c.differentiable], ids=lambda c: c.name)
def test_no_derivative_where_none_is_claimed(case: HardCase) -> None:
    """One-sided difference quotients disagree, blow up or are not finite as h -> 0."""
    x, scale = case.point, max(abs(case.point), 1.0)
    with np.errstate(all="ignore"):
        fx = float(case.f(np.asarray(x)))
        quotients = []
        for k in (6, 9, 12):
            h = scale * 10.0**-k
            right = (float(case.f(np.asarray(x + h))) - fx) / h
            left = (fx - float(case.f(np.asarray(x - h)))) / h
            quotients.append((right, left))
    (r_prev, _), (r, left) = quotients[-2], quotients[-1]
    finite = all(math.isfinite(q) for pair in quotients for q in pair)
    converged = (
        finite
        and abs(r - left) <= 1e-3 * max(1.0, abs(r))
        and abs(r - r_prev) <= 1e-3 * max(1.0, abs(r))
    )
    assert not converged, (case.name, quotients)


def test_reference_in_float32() -> None:
    refs = {c.name: c.reference("float32") for c in CASES}
    assert refs["exp at 600"] is None  # exp(600) overflows float32
    assert refs["log at 1e-300"] is None  # the point rounds to 0
    assert refs["exp at -700"] == 0.0  # the derivative underflows
    assert refs["x^2 at 1e-150"] == 0.0  # x^2 at 0
    # At the point rounded to float32, not at the float64 point.
    x32 = float(np.float32(1 + 1e-7))
    assert refs["1/(x-1) at 1+1e-7"] == pytest.approx(-1 / (x32 - 1) ** 2, rel=1e-15)
    assert refs["cos at 3e4"] == pytest.approx(-math.sin(3e4), rel=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_f_keeps_dtype_and_values_on_every_backend(backend, dtype) -> None:
    reference = {c.name: c for c in CASES}
    for case in hard_suite(backend.xp):
        points = np.array([case.point, case.point])
        with np.errstate(all="ignore"):  # float32: 1e150 overflows, 1e-300 underflows
            x = backend.asarray(points, dtype=dtype)
            got = backend.to_numpy(case.f(x))
            want = reference[case.name].f(points.astype(dtype))
        assert got.dtype == np.dtype(dtype), (case.name, got.dtype)
        assert got.shape == (2,), case.name
        if dtype == "float64":
            # Libraries round sin of huge arguments and pow differently: a few ulps, and
            # the noisy cases differ by at most their noise.
            np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True, err_msg=case.name)


def load_benchmark():
    import importlib.util
    import sys
    from pathlib import Path

    name = "xgrad_bench_hard"
    if name not in sys.modules:
        folder = Path(__file__).resolve().parents[1] / "benchmarks"
        # As when it runs as a script: its folder first on the path (for benchmarks/_common).
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        path = folder / "bench_hard.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_benchmark_verdicts() -> None:
    bench = load_benchmark()

    def out(df: float, flagged: bool = False, error: float = math.nan):
        return bench.Outcome(df, flagged, "warn" if flagged else "", error, 2, 1e-6)

    assert bench.verdict(out(1.0 + 1e-9), 1.0, "float64") == "right"
    assert bench.verdict(out(1.0 + 1e-7), 1.0, "float64") == "wrong"
    assert bench.verdict(out(1.0 + 1e-3), 1.0, "float32") == "right"
    assert bench.verdict(out(1.0 + 1e-7, flagged=True), 1.0, "float64") == "flagged"
    # No derivative: any unflagged answer is wrong, even a "reasonable" 0.5 for relu at 0.
    assert bench.verdict(out(0.5), None, "float64") == "wrong"
    assert bench.verdict(out(math.nan, flagged=True), None, "float64") == "flagged"
    # A derivative of 0 is judged by the absolute error.
    assert bench.verdict(out(1e-9), 0.0, "float64") == "right"
    assert bench.verdict(out(1e-7), 0.0, "float64") == "wrong"
    assert bench.covered(out(1.1, error=0.2), 1.0)
    assert not bench.covered(out(1.1, error=0.05), 1.0)
    assert not bench.covered(out(1.1), 1.0)  # no estimate: not covered


def test_benchmark_flags_a_non_finite_xgrad_result() -> None:
    bench = load_benchmark()
    with np.errstate(all="ignore"):
        out = bench.xgrad_tool("central")(np.log, np.asarray(-1.0), 1)
    assert out.flagged, out
    assert out.evals > 0
