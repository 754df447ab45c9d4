"""numerical_diff and numerical_gradient: book figures, analytic derivatives, every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xgrad
from xgrad import numerical_diff, numerical_gradient
from xgrad._evaluators import is_writeable
from xgrad.errors import StepSizeWarning
from xgrad.numdiff import DiffResult, InputIgnoredWarning
from xgrad.testing import assert_close

METHODS = ("central", "forward", "backward", "complex", "richardson")
# Worst relative error each method is allowed on exp at moderate points (float64).
METHOD_RTOL = {
    "central": 1e-10,
    "forward": 1e-6,
    "backward": 1e-6,
    "complex": 1e-14,
    "richardson": 1e-11,
}
GRAD_RTOL = {
    "central": 1e-8,
    "forward": 1e-6,
    "backward": 1e-6,
    "complex": 1e-14,
    "richardson": 1e-9,
}


def book_function_1(x):
    return 0.01 * x**2 + 0.1 * x


def host_bytes(backend, x) -> bytes:
    return backend.to_numpy(x).tobytes()


# -- numerical_diff ------------------------------------------------------------------------


def test_book_numerical_diff_bit_for_bit() -> None:
    assert numerical_diff(book_function_1, 5, h=1e-4) == 0.1999999999990898
    assert numerical_diff(book_function_1, 10, h=1e-4) == 0.2999999999986347
    x, h = 5.0, 1e-4
    expected = (book_function_1(x + h) - book_function_1(x - h)) / (2 * h)
    assert numerical_diff(book_function_1, x, h=h) == expected


def test_book_numerical_diff_on_backend(backend) -> None:
    x = backend.asarray(5.0)
    df = numerical_diff(book_function_1, x, h=1e-4)
    assert float(backend.to_numpy(df)) == pytest.approx(0.1999999999990898, rel=1e-15, abs=0)
    assert backend.owns(df)


def test_dezero_variable_square() -> None:
    dezero = pytest.importorskip("xgrad.dezero")
    x = dezero.Variable(np.array(2.0))
    assert float(numerical_diff(dezero.Square(), x, h=1e-4)) == 4.000000000004


def test_dezero_composite_matches_dezero_and_backprop() -> None:
    dezero = pytest.importorskip("xgrad.dezero")

    def f(v):
        return dezero.Square()(dezero.Exp()(dezero.Square()(v)))

    x = dezero.Variable(np.array(0.5))
    assert float(numerical_diff(f, x, h=1e-4)) == 3.2974426293330694
    exact = 4 * 0.5 * math.exp(2 * 0.25)
    assert float(numerical_diff(f, x)) == pytest.approx(exact, rel=1e-11)


def test_dezero_variable_on_backend(backend) -> None:
    dezero = pytest.importorskip("xgrad.dezero")
    x = dezero.Variable(backend.asarray([0.5, 2.0]))
    df = numerical_diff(dezero.Exp(), x)
    assert_close(df, np.exp([0.5, 2.0]), rtol=1e-10)


def test_scalar_returns_python_float() -> None:
    df = numerical_diff(math.sin, 1.0)
    assert type(df) is float
    assert df == pytest.approx(math.cos(1.0), rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_methods_match_exp(backend, method) -> None:
    xp = backend.xp
    points = np.array([-1.5, -0.3, 0.0, 0.7, 2.0])
    df = numerical_diff(xp.exp, backend.asarray(points), method=method)
    assert_close(df, np.exp(points), rtol=METHOD_RTOL[method])


@pytest.mark.parametrize("method", METHODS)
def test_methods_on_python_scalars(method) -> None:
    df = numerical_diff(lambda v: v**3 - 2 * v, 1.5, method=method)
    assert df == pytest.approx(3 * 1.5**2 - 2, rel=METHOD_RTOL[method])


@pytest.mark.parametrize("method", METHODS)
def test_full_output(backend, method) -> None:
    xp = backend.xp
    points = np.array([0.3, 1.1, 4.0])
    r = numerical_diff(xp.sin, backend.asarray(points), method=method, full_output=True)
    assert isinstance(r, DiffResult)
    assert r.method == method
    assert r.nfev >= 1
    actual = np.abs(backend.to_numpy(r.df) - np.cos(points))
    error = backend.to_numpy(r.error) * np.ones(3)
    # The estimate bounds the actual error (up to roundoff at the level of eps).
    assert np.all(actual <= error + 1e-15)
    assert np.all(error <= 1e-5)
    assert np.all(np.asarray(backend.to_numpy(r.step)) != 0)


def test_full_output_explicit_step() -> None:
    r = numerical_diff(math.exp, 1.0, h=1e-3, full_output=True)
    assert r.nfev == 4
    assert r.step == 1e-3
    assert abs(r.df - math.e) <= r.error
    assert r.error < 1e-5


def test_float32_first_class(backend) -> None:
    xp = backend.xp
    points = np.array([0.5, 1.0, 3.0], dtype=np.float32)
    x = backend.asarray(points, dtype="float32")
    df = numerical_diff(xp.exp, x)
    assert backend.dtype_name(df.dtype) == "float32"
    assert_close(df, np.exp(points.astype(np.float64)).astype(np.float32), rtol=2e-5)


def test_step_too_small_is_enlarged(backend) -> None:
    x = backend.asarray([1e6, 3.0], dtype="float32")
    with pytest.warns(StepSizeWarning, match="1 element"):
        df = numerical_diff(lambda v: v**2, x, h=1e-4)
    result = backend.to_numpy(df)
    assert result[0] == pytest.approx(2e6, rel=1e-5)
    assert result[1] == pytest.approx(6.0, rel=1e-2)  # float32 with h=1e-4: as given


def test_step_too_small_scalar() -> None:
    with pytest.warns(StepSizeWarning):
        df = numerical_diff(lambda v: v**2, 1e17, h=1.0)
    assert df == pytest.approx(2e17, rel=1e-10)


def test_domain_edge_log_sqrt(backend) -> None:
    xp = backend.xp
    points = np.array([1e-3, 2e-3, 5e-2, 1e-6])
    x = backend.asarray(points)
    assert_close(numerical_diff(xp.log, x), 1 / points, rtol=1e-10)
    assert_close(numerical_diff(xp.sqrt, x), 0.5 / np.sqrt(points), rtol=1e-10)


def test_python_math_domain_errors_are_handled() -> None:
    # math.log raises where np.log returns nan: a stencil crossing 0 must not leak it.
    assert numerical_diff(math.log, 1e-5) == pytest.approx(1e5, rel=1e-10)
    assert numerical_diff(math.sqrt, 1e-6) == pytest.approx(500.0, rel=1e-10)
    with pytest.raises(ValueError, match=r"not finite around x = -1\.0"):
        numerical_diff(math.log, -1.0)


def test_one_sided_fallback_at_domain_boundary(backend) -> None:
    xp = backend.xp

    def f(v):  # defined for v >= 0 only
        return xp.where(v >= 0, v**2 + v, xp.nan)

    df = numerical_diff(f, backend.asarray([0.0, 1.0]))
    assert_close(df, np.array([1.0, 3.0]), rtol=1e-8, atol=1e-8)
    assert numerical_diff(lambda v: v**2 + v if v >= 0 else math.nan, 0.0) == pytest.approx(
        1.0, rel=1e-8
    )


def test_not_finite_everywhere_names_element(backend) -> None:
    xp = backend.xp

    def f(v):
        return xp.where(v > 1.5, xp.nan, v)

    with pytest.raises(ValueError, match=r"x\[1\] = 2\.0"):
        numerical_diff(f, backend.asarray([1.0, 2.0]))


def test_not_finite_scalar() -> None:
    with pytest.raises(ValueError, match="not finite"):
        numerical_diff(lambda v: math.nan, 1.0)


def test_not_elementwise(backend) -> None:
    xp = backend.xp
    with pytest.raises(ValueError, match="elementwise"):
        numerical_diff(xp.sum, backend.asarray([1.0, 2.0]))


def test_complex_needs_complex_f(backend) -> None:
    xp = backend.xp
    with pytest.raises(TypeError, match="complex"):
        numerical_diff(xp.abs, backend.asarray([1.0, 2.0]), method="complex")
    with pytest.raises(TypeError, match="complex"):
        numerical_diff(math.exp, 1.0, method="complex")


def test_numerical_diff_does_not_touch_x(backend) -> None:
    xp = backend.xp
    x = backend.asarray([-0.0, 1e-300, 2.5])
    before = host_bytes(backend, x)
    numerical_diff(xp.sin, x)
    assert host_bytes(backend, x) == before


def test_integer_input_promoted(backend) -> None:
    df = numerical_diff(book_function_1, backend.asarray(np.array([5, 10])), h=1e-4)
    assert backend.dtype_name(df.dtype) == "float64"
    assert_close(df, np.array([0.1999999999990898, 0.2999999999986347]), rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "secant"}, ValueError, "method"),
        ({"h": -1e-3}, ValueError, "h: expected a positive"),
        ({"h": 0.0}, ValueError, "h: expected a positive"),
        ({"h": "small"}, TypeError, "h: expected"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        numerical_diff(math.sin, 1.0, **kwargs)
    with pytest.raises(error, match=match):
        numerical_gradient(lambda v: float(np.sum(v)), np.ones(2), **kwargs)


def test_f_not_callable() -> None:
    with pytest.raises(TypeError, match="f: expected a callable"):
        numerical_diff(3.0, 1.0)
    with pytest.raises(TypeError, match="f: expected a callable"):
        numerical_gradient(None, np.ones(2))


# -- numerical_gradient --------------------------------------------------------------------


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


@pytest.mark.parametrize(
    ("point", "expected"),
    [([3.0, 4.0], [6.0, 8.0]), ([0.0, 2.0], [0.0, 4.0]), ([3.0, 0.0], [6.0, 0.0])],
)
def test_book_gradients(backend, point, expected) -> None:
    grad = numerical_gradient(function_2, backend.asarray(point), h=1e-4)
    assert_close(grad, np.array(expected), rtol=1e-9, atol=1e-9)
    grad = numerical_gradient(function_2, backend.asarray(point))
    assert_close(grad, np.array(expected), rtol=1e-9, atol=1e-9)


def test_integer_array_not_garbage(backend) -> None:
    # The book's code returns [25000 35000] here.
    x = backend.asarray(np.array([3, 4]))
    grad = numerical_gradient(function_2, x)
    assert backend.dtype_name(grad.dtype) == "float64"
    assert_close(grad, np.array([6.0, 8.0]), rtol=1e-9)
    assert backend.to_numpy(x).tolist() == [3, 4]


@pytest.mark.parametrize("method", METHODS)
def test_gradient_methods(backend, method) -> None:
    xp = backend.xp
    host = np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.25]])
    grad = numerical_gradient(lambda v: xp.sum(xp.exp(v) * v), backend.asarray(host), method=method)
    assert_close(grad, np.exp(host) * (1 + host), rtol=GRAD_RTOL[method], atol=GRAD_RTOL[method])


def test_gradient_float32(backend) -> None:
    xp = backend.xp
    host = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    grad = numerical_gradient(lambda v: xp.sum(xp.sin(v)), backend.asarray(host, dtype="float32"))
    assert backend.dtype_name(grad.dtype) == "float32"
    assert_close(grad, np.cos(host.astype(np.float64)).astype(np.float32), rtol=1e-3, atol=1e-4)


def test_closure_idiom_like_the_book(backend) -> None:
    """``numerical_gradient(lambda W: net.loss(x, t), net.W)``: f ignores its argument."""
    xp = backend.xp
    weights = backend.asarray([[0.3, -0.2], [0.1, 0.4]])
    inputs = backend.asarray([1.0, 2.0])

    def loss():
        return xp.sum(xp.exp(inputs @ weights))

    host_w = backend.to_numpy(weights)
    z = np.array([1.0, 2.0]) @ host_w
    expected = np.outer([1.0, 2.0], np.exp(z))
    before = host_bytes(backend, weights)
    if is_writeable(weights):
        grad = numerical_gradient(lambda w: loss(), weights)
        assert_close(grad, expected, rtol=1e-8)
    else:  # immutable arrays: f must use its argument; the closure sees nothing
        with pytest.warns(InputIgnoredWarning, match="closure"):
            grad = numerical_gradient(lambda w: loss(), weights)
        assert_close(grad, np.zeros((2, 2)))
    assert host_bytes(backend, weights) == before


def test_restored_bit_for_bit(backend) -> None:
    xp = backend.xp
    host = np.array([-0.0, 5e-324, 0.1, -3.7, 1e300])
    x = backend.asarray(host)
    before = host_bytes(backend, x)
    numerical_gradient(lambda v: xp.sum(xp.sin(v)), x)
    assert host_bytes(backend, x) == before


def test_restored_when_f_raises(backend) -> None:
    xp = backend.xp
    x = backend.asarray([0.1, 0.2, 0.3, -0.0])
    before = host_bytes(backend, x)
    calls = []

    def f(v):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return xp.sum(v)

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    assert host_bytes(backend, x) == before


def test_dict_of_parameters(backend) -> None:
    xp = backend.xp
    params = {"W": backend.asarray([[1.0, 2.0], [3.0, 4.0]]), "b": backend.asarray([0.5, -1.0])}
    inputs = backend.asarray([1.0, -1.0])

    def loss(p):
        y = inputs @ p["W"] + p["b"]
        return xp.sum(y * y)

    grads = numerical_gradient(loss, params)
    y = np.array([1.0, -1.0]) @ np.array([[1.0, 2.0], [3.0, 4.0]]) + np.array([0.5, -1.0])
    assert set(grads) == {"W", "b"}
    assert_close(grads["W"], np.outer([1.0, -1.0], 2 * y), rtol=1e-8)
    assert_close(grads["b"], 2 * y, rtol=1e-8)


def test_batch_size(backend) -> None:
    xp = backend.xp
    host = np.arange(6.0).reshape(2, 3) / 4

    def batched(stack):
        assert stack.shape[1:] == (2, 3)
        return xp.sum(xp.exp(stack), axis=(1, 2))

    for k in (1, 4, 6, 100):
        grad = numerical_gradient(batched, backend.asarray(host), batch_size=k)
        assert_close(grad, np.exp(host), rtol=1e-8)


def test_batch_size_wrong_output(backend) -> None:
    with pytest.raises(ValueError, match="must return 2 values"):
        numerical_gradient(lambda s: s, backend.asarray([1.0, 2.0]), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        numerical_gradient(lambda s: s, backend.asarray([1.0, 2.0]), batch_size=0)


def test_non_scalar_f(backend) -> None:
    xp = backend.xp
    with pytest.raises(ValueError, match="scalar"):
        numerical_gradient(lambda v: v * 2.0, backend.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match="scalar"):
        numerical_gradient(lambda v: xp.sum(v, axis=0), backend.asarray([[1.0], [2.0]]))


def test_gradient_retries_non_finite(backend) -> None:
    xp = backend.xp

    def f(v):  # defined for v >= 0
        return xp.sum(xp.where(v >= 0, v**2 + v, xp.nan))

    grad = numerical_gradient(f, backend.asarray([0.0, 1.0]))
    assert_close(grad, np.array([1.0, 3.0]), rtol=1e-6, atol=1e-6)


def test_gradient_not_finite_names_element(backend) -> None:
    xp = backend.xp

    def f(v):  # not finite as soon as v[1, 0] moves
        return v[0, 0] + xp.where(v[1, 0] == 2.0, v[1, 0] * 0.0, xp.nan)

    with pytest.raises(ValueError, match=r"x\[1, 0\] = 2\.0"):
        numerical_gradient(f, backend.asarray([[1.0], [2.0]]))


def test_gradient_step_too_small(backend) -> None:
    x = backend.asarray([1e6, 1.0], dtype="float32")
    with pytest.warns(StepSizeWarning):
        grad = numerical_gradient(function_2, x, h=1e-4)
    assert backend.to_numpy(grad)[0] == pytest.approx(2e6, rel=1e-4)


def test_empty_array(backend) -> None:
    grad = numerical_gradient(lambda v: 0.0, backend.asarray(np.zeros((0, 3))))
    assert tuple(grad.shape) == (0, 3)


def test_immutable_numpy_array_is_not_written() -> None:
    x = np.array([1.0, 2.0])
    x.flags.writeable = False
    grad = numerical_gradient(lambda v: float(np.sum(v**2)), x)
    np.testing.assert_allclose(grad, [2.0, 4.0], rtol=1e-9)


def test_public_names() -> None:
    assert xgrad.numerical_diff is numerical_diff
    assert xgrad.numerical_gradient is numerical_gradient
    assert xgrad.DiffResult is DiffResult


# -- "richardson": one formula, in xgrad._policy ------------------------------------------


def test_richardson_with_explicit_h_is_one_extrapolation_of_central_quotients() -> None:
    """(4 D(h/2) - D(h)) / 3 with D the central quotient, for every function that has it."""
    x, h = np.array([0.3, 1.7]), 1e-2

    def quotient(step: float) -> np.ndarray:
        return (np.sin(x + step) - np.sin(x - step)) / (2 * step)

    expected = (4 * quotient(h / 2) - quotient(h)) / 3
    results = {
        "numerical_diff": numerical_diff(np.sin, x, h, method="richardson"),
        "numerical_gradient": numerical_gradient(
            lambda v: np.sum(np.sin(v)), x.copy(), h, method="richardson"
        ),
        "jacobian": np.diag(xgrad.jacobian(np.sin, x, h, method="richardson")),
    }
    for name, got in results.items():
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=name)
        # The h**2 term is gone: far closer to cos than the central quotient at h.
        assert np.max(np.abs(got - np.cos(x))) < 1e-3 * np.max(np.abs(quotient(h) - np.cos(x)))


def test_every_richardson_step_goes_through_policy_extrapolate(monkeypatch) -> None:
    from xgrad import _policy

    calls: list[float] = []
    real = _policy.extrapolate

    def spy(coarse, fine, ratio=4.0):
        calls.append(ratio)
        return real(coarse, fine, ratio)

    monkeypatch.setattr(_policy, "extrapolate", spy)
    x = np.array([0.3, 1.7])
    users = {
        "numerical_diff": lambda: numerical_diff(np.sin, x, 1e-2, method="richardson"),
        "numerical_gradient": lambda: numerical_gradient(
            lambda v: np.sum(np.sin(v)), x.copy(), 1e-2, method="richardson"
        ),
        "jacobian": lambda: xgrad.jacobian(np.sin, x, 1e-2, method="richardson"),
        "hessian": lambda: xgrad.hessian(lambda v: np.sum(np.sin(v)), x),
        "gradcheck": lambda: xgrad.gradcheck(
            lambda v: np.sum(np.sin(v)), x, grad=np.cos, method="richardson"
        ),
        "search": lambda: numerical_diff(np.sin, x, method="richardson"),
    }
    for name, use in users.items():
        calls.clear()
        use()
        assert calls, f"{name} did not extrapolate through xgrad._policy.extrapolate"
        # One step (ratio 4) for the explicit-h forms; the search's tableau extrapolates
        # with the squared ratios of the widths it took (about 4.4, 19, ... at its steps).
        if name != "search":
            assert 4.0 in calls, name
        else:
            assert all(np.all(np.asarray(r) > 4.0) for r in calls), calls
