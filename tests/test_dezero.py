"""DeZero's core: Variable, Function, the elementwise functions and backward, on every backend."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest

import xgrad
from xgrad import dezero as dz
from xgrad._arrays import to_numpy
from xgrad.dezero import Exp, Square, Variable
from xgrad.testing import assert_close

X0 = 0.5
# d/dx (e^{x^2})^2 = d/dx e^{2x^2} = 4x e^{2x^2}
COMPOSITE_SLOPE = 4 * X0 * math.exp(2 * X0**2)


def _var(backend, values, dtype="float64"):  # type: ignore[no-untyped-def]
    return Variable(backend.asarray(np.asarray(values, dtype=dtype)))


def _same_device(a, b) -> bool:  # type: ignore[no-untyped-def]
    from array_api_compat import device

    return device(a) == device(b)


# -- the numbers ------------------------------------------------------------------


def test_composite_backward_is_analytic(backend: xgrad.Backend) -> None:
    assert pytest.approx(3.297442541400256, rel=1e-15) == COMPOSITE_SLOPE
    A, B, C = Square(), Exp(), Square()
    x = _var(backend, X0)
    y = C(B(A(x)))
    y.backward()
    assert y.creator is C
    assert_close(x.grad, np.asarray(COMPOSITE_SLOPE))
    assert _same_device(x.grad, x.data)


def _as_float(r) -> float:  # type: ignore[no-untyped-def]
    return float(to_numpy(r.data if isinstance(r, Variable) else r))


def test_numerical_diff_matches_dezero_numbers() -> None:
    numdiff = pytest.importorskip("xgrad.numdiff")
    d = numdiff.numerical_diff(Square(), Variable(2.0), h=1e-4)
    assert _as_float(d) == pytest.approx(4.000000000004, rel=1e-15, abs=0)

    def f(x):  # type: ignore[no-untyped-def]
        return Square()(Exp()(Square()(x)))

    d = numdiff.numerical_diff(f, Variable(0.5), h=1e-4)
    assert _as_float(d) == pytest.approx(3.2974426293330694, rel=1e-15, abs=0)
    # The two ways of differentiating agree to the step's truncation error O(h^2).
    assert _as_float(d) == pytest.approx(COMPOSITE_SLOPE, rel=1e-7)


def test_numerical_diff_agrees_with_backward(backend: xgrad.Backend) -> None:
    numdiff = pytest.importorskip("xgrad.numdiff")

    def f(x):  # type: ignore[no-untyped-def]
        return dz.square(dz.exp(dz.square(x)))

    x = _var(backend, X0)
    f(x).backward()
    d = numdiff.numerical_diff(f, x, h=1e-4)
    assert _as_float(d) == pytest.approx(float(to_numpy(x.grad)), rel=1e-7)


# -- every function against its analytic derivative ---------------------------------------

X_POS = np.array([0.3, 0.9, 1.7, 2.5])  # in every function's domain (log, pow 0.5)
UNARY = {
    # name: (Variable -> Variable, numpy value, numpy derivative)
    "square": (dz.square, lambda x: x**2, lambda x: 2 * x),
    "Square": (lambda v: dz.Square()(v), lambda x: x**2, lambda x: 2 * x),
    "exp": (dz.exp, np.exp, np.exp),
    "neg": (dz.neg, lambda x: -x, lambda x: -np.ones_like(x)),
    "sin": (dz.sin, np.sin, np.cos),
    "cos": (dz.cos, np.cos, lambda x: -np.sin(x)),
    "tanh": (dz.tanh, np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    "log": (dz.log, np.log, lambda x: 1 / x),
    "pow3": (lambda v: dz.pow(v, 3), lambda x: x**3, lambda x: 3 * x**2),
    "pow0.5": (lambda v: v**0.5, np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    "pow-2": (lambda v: v**-2, lambda x: x**-2.0, lambda x: -2 * x**-3.0),
    "rpow": (lambda v: 2.0**v, lambda x: 2.0**x, lambda x: 2.0**x * math.log(2.0)),
    "unary-": (lambda v: -v, lambda x: -x, lambda x: -np.ones_like(x)),
    "scalar+v": (lambda v: 3.0 + v, lambda x: 3.0 + x, np.ones_like),
    "v+scalar": (lambda v: v + 3, lambda x: x + 3, np.ones_like),
    "scalar-v": (lambda v: 3.0 - v, lambda x: 3.0 - x, lambda x: -np.ones_like(x)),
    "v-scalar": (lambda v: v - 3.0, lambda x: x - 3.0, np.ones_like),
    "scalar*v": (lambda v: 3.0 * v, lambda x: 3.0 * x, lambda x: np.full_like(x, 3.0)),
    "v*scalar": (lambda v: v * 3, lambda x: x * 3, lambda x: np.full_like(x, 3.0)),
    "scalar/v": (lambda v: 3.0 / v, lambda x: 3.0 / x, lambda x: -3.0 / x**2),
    "v/scalar": (lambda v: v / 4.0, lambda x: x / 4.0, lambda x: np.full_like(x, 0.25)),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_backward_is_analytic(backend: xgrad.Backend, name: str) -> None:
    fn, f, df = UNARY[name]
    x = _var(backend, X_POS)
    y = fn(x)
    assert isinstance(y, Variable)
    assert_close(y.data, f(X_POS))
    y.backward()
    assert_close(x.grad, df(X_POS))
    assert _same_device(x.grad, x.data)


def _sub_slopes(a, b):  # type: ignore[no-untyped-def]
    return np.ones_like(a), -np.ones_like(b)


BINARY = {
    "add": (dz.add, lambda a, b: a + b, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    "sub": (dz.sub, lambda a, b: a - b, _sub_slopes),
    "mul": (dz.mul, lambda a, b: a * b, lambda a, b: (b, a)),
    "div": (dz.div, lambda a, b: a / b, lambda a, b: (1 / b, -a / b**2)),
    "a+b": (lambda a, b: a + b, lambda a, b: a + b, lambda a, b: (np.ones_like(a),) * 2),
    "a*b": (lambda a, b: a * b, lambda a, b: a * b, lambda a, b: (b, a)),
    "a/b": (lambda a, b: a / b, lambda a, b: a / b, lambda a, b: (1 / b, -a / b**2)),
    "a-b": (lambda a, b: a - b, lambda a, b: a - b, _sub_slopes),
}
B_VALUES = np.array([-1.3, 0.7, 2.0, -0.4])


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_backward_is_analytic(backend: xgrad.Backend, name: str) -> None:
    fn, f, df = BINARY[name]
    a, b = _var(backend, X_POS), _var(backend, B_VALUES)
    y = fn(a, b)
    assert_close(y.data, f(X_POS, B_VALUES))
    y.backward()
    ga, gb = df(X_POS, B_VALUES)
    assert_close(a.grad, ga)
    assert_close(b.grad, gb)


def test_gradcheck_against_host_central_differences(backend: xgrad.Backend) -> None:
    # A composite of every function; the reference is a central difference in NumPy on the
    # host, independent of xgrad.
    def f_var(x):  # type: ignore[no-untyped-def]
        return dz.tanh(dz.sin(x) * x**2 + dz.exp(-x) / (1 + x**2)) + dz.log(x) * dz.cos(x) - x**0.5

    def f_np(x):  # type: ignore[no-untyped-def]
        return np.tanh(np.sin(x) * x**2 + np.exp(-x) / (1 + x**2)) + np.log(x) * np.cos(x) - x**0.5

    x = _var(backend, X_POS)
    y = f_var(x)
    assert_close(y.data, f_np(X_POS))
    y.backward()
    h = 1e-5
    reference = (f_np(X_POS + h) - f_np(X_POS - h)) / (2 * h)
    assert_close(x.grad, reference, rtol=1e-8)


# -- graph semantics (DeZero steps 14-18) ----------------------------------------------


def test_reused_variable_accumulates(backend: xgrad.Backend) -> None:
    x = _var(backend, 3.0)
    y = dz.add(x, x)
    y.backward()
    assert_close(x.grad, np.asarray(2.0))
    # Without cleargrad the next backward adds on (DeZero step 14: 2 + 3 = 5) ...
    y = dz.add(dz.add(x, x), x)
    y.backward()
    assert_close(x.grad, np.asarray(5.0))
    # ... and with it the gradient is fresh.
    x.cleargrad()
    y = dz.add(dz.add(x, x), x)
    y.backward()
    assert_close(x.grad, np.asarray(3.0))


def test_diamond_graph_dezero_step16(backend: xgrad.Backend) -> None:
    # The book's example: y = (x^2)^2 + (x^2)^2 = 2 x^4 at x = 2 -> y = 32, dy/dx = 8 x^3 = 64.
    x = _var(backend, 2.0)
    a = dz.square(x)
    y = dz.add(dz.square(a), dz.square(a))
    y.backward()
    assert_close(y.data, np.asarray(32.0))
    assert_close(x.grad, np.asarray(64.0))
    assert_close(a.grad, np.asarray(16.0))  # 4a, retained by default


def test_generation_order_on_a_deep_diamond(backend: xgrad.Backend) -> None:
    # x feeds a long chain and a short one: only generation order gives every path once.
    x = _var(backend, [0.5, -1.5])
    long = x
    for _ in range(5):
        long = long * 1.5
    y = long + dz.sin(x)
    y.backward()
    assert_close(x.grad, 1.5**5 + np.cos(np.array([0.5, -1.5])))


def test_retain_grad_false_frees_intermediates(backend: xgrad.Backend) -> None:
    x = _var(backend, 2.0)
    a = dz.square(x)
    y = dz.exp(a)
    y.backward(retain_grad=False)
    assert a.grad is None and y.grad is None
    assert_close(x.grad, np.asarray(4.0 * math.exp(4.0)))


def test_seed_gradient_user_given(backend: xgrad.Backend) -> None:
    x = _var(backend, [1.0, 2.0])
    y = dz.square(x)
    y.grad = backend.asarray(np.array([10.0, 100.0]))
    y.backward()
    assert_close(x.grad, np.array([20.0, 400.0]))


def test_outputs_are_weak_no_reference_cycle(backend: xgrad.Backend) -> None:
    gc.disable()
    try:
        x = _var(backend, [1.0, 2.0])
        y = dz.square(dz.exp(x))
        f = y.creator
        ref = weakref.ref(y)
        del y
        # Freed at once by reference counting, without the cyclic collector.
        assert ref() is None
        assert f.outputs[0]() is None
    finally:
        gc.enable()


def test_no_grad_records_nothing(backend: xgrad.Backend) -> None:
    x = _var(backend, 2.0)
    with dz.no_grad():
        y = dz.square(x)
    assert y.creator is None
    assert_close(y.data, np.asarray(4.0))
    y = dz.square(x)
    assert y.creator is not None


def test_broadcasting_sums_gradients_back(backend: xgrad.Backend) -> None:
    w = _var(backend, [1.0, 2.0, 3.0])
    x = _var(backend, np.arange(6.0).reshape(2, 3))
    b = _var(backend, 0.5)
    y = x * w + b
    y.backward()
    assert y.shape == (2, 3)
    assert_close(w.grad, np.array([3.0, 5.0, 7.0]))
    assert_close(x.grad, np.tile([1.0, 2.0, 3.0], (2, 1)))
    assert_close(b.grad, np.asarray(6.0))


def test_multiple_outputs_and_custom_function(backend: xgrad.Backend) -> None:
    class SplitScale(dz.Function):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return 2 * x, 3 * x

        def backward(self, gy0, gy1):  # type: ignore[no-untyped-def]
            return 2 * gy0 + 3 * gy1

    x = _var(backend, [1.0, -1.0])
    y0, y1 = SplitScale()(x)
    z = y0 * y1  # 6 x^2
    z.backward()
    assert_close(x.grad, np.array([12.0, -12.0]))


# -- Variable -------------------------------------------------------------------------


def test_variable_from_python_scalar_is_float64_array() -> None:
    v = Variable(2.0)
    assert isinstance(v.data, np.ndarray)
    assert v.data.dtype == np.float64 and v.shape == () and v.ndim == 0 and v.size == 1
    assert repr(v) == "variable(2.0)"
    assert repr(Variable(np.array([[1.0, 2.0], [3.0, 4.0]]))) == (
        "variable([[1. 2.]\n          [3. 4.]])"
    )
    assert repr(Variable(None)) == "variable(None)"


def test_variable_on_backend(backend: xgrad.Backend) -> None:
    v = Variable(2.0, backend=backend)
    assert backend.owns(v.data) and v.backend == backend
    assert backend.dtype_name(v.dtype) == "float64"
    w = Variable([[1, 2, 3], [4, 5, 6]], backend=backend)  # ints are promoted
    assert backend.dtype_name(w.dtype) == "float64"
    assert w.shape == (2, 3) and w.ndim == 2 and w.size == 6 and len(w) == 2
    assert_close(w.data, np.arange(1.0, 7.0).reshape(2, 3))
    assert repr(Variable(np.array([1.0, 2.0]), backend=backend)).startswith("variable([1. 2.]")
    with pytest.raises(TypeError, match="len"):
        len(v)


def test_variable_rejects_non_numeric() -> None:
    with pytest.raises(TypeError, match="data"):
        Variable("1.0")
    with pytest.raises(TypeError, match="data"):
        Variable(["a", "b"])
    with pytest.raises(TypeError, match="data"):
        Variable({"a": 1})
    with pytest.raises(TypeError, match="name"):
        Variable(1.0, name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="c: expected a real"):
        Variable(1.0) ** Variable(2.0)
    with pytest.raises(TypeError, match="data"):
        Variable(1.0) + "x"
    with pytest.raises(ValueError, match="base"):
        (-2.0) ** Variable(1.0)


def test_float32_stays_float32(backend: xgrad.Backend) -> None:
    x = _var(backend, [0.5, 1.5], dtype="float32")
    y = 2.0 * dz.exp(x) + 1 - x / 3
    assert backend.dtype_name(y.dtype) == "float32"
    y.backward()
    assert backend.dtype_name(x.grad.dtype) == "float32"
    x64 = np.array([0.5, 1.5], dtype=np.float32).astype(np.float64)
    assert_close(x.grad, (2 * np.exp(x64) - 1 / 3).astype(np.float32))


def test_mixed_dtypes_give_gradient_in_each_inputs_dtype(backend: xgrad.Backend) -> None:
    a = _var(backend, [1.0, 2.0], dtype="float32")
    b = _var(backend, [3.0, 4.0])
    y = a * b
    y.backward()
    assert backend.dtype_name(a.grad.dtype) == "float32"
    assert backend.dtype_name(b.grad.dtype) == "float64"
    assert_close(a.grad, np.array([3.0, 4.0], dtype=np.float32))


def test_mixed_backends_are_refused(backend: xgrad.Backend) -> None:
    if backend.name == "numpy":
        pytest.skip("needs a second backend")
    x = _var(backend, [1.0])
    with pytest.raises(ValueError, match="two backends or devices"):
        x + Variable(np.array([1.0]))


def test_empty_variable_backward_errors() -> None:
    with pytest.raises(ValueError, match="no data"):
        Variable(None).backward()
    with pytest.raises(ValueError, match="no data"):
        dz.square(Variable(None))


def test_public_names() -> None:
    assert xgrad.Variable is Variable
    assert xgrad.Square is Square and xgrad.Exp is Exp
    assert xgrad.Function is dz.Function


def test_numpy_operands_defer_to_variable(backend: xgrad.Backend) -> None:
    x = _var(backend, [1.0, 2.0])
    # NumPy scalars act like Python scalars on every backend ...
    y = np.float64(2.0) * x + x * np.float32(3.0)
    assert isinstance(y, Variable) and backend.owns(y.data)
    y.backward()
    assert_close(x.grad, np.array([5.0, 5.0]))
    # ... and a NumPy array on the left leaves the operation to the Variable.
    v = Variable(np.array([1.0, 2.0]))
    z = np.array([3.0, 4.0]) * v
    assert isinstance(z, Variable)
    assert_close(z.data, np.array([3.0, 8.0]))
    assert Variable(np.float32(2.0)).dtype == np.float32
