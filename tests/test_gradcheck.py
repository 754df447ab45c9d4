"""xgrad.gradcheck on every backend: correct gradients pass, a 1e-3 error is caught (float32
and float64), ReLU kinks are reported, and the report has the book's columns."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad.nn import TwoLayerNet

KEYS = ("W1", "b1", "W2", "b2")


class WrongNet(TwoLayerNet):
    """A TwoLayerNet whose backprop gradient of one parameter is off by a factor 1 + 1e-3."""

    wrong_key = "W1"

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        grads = super().gradient(x, t)
        grads[self.wrong_key] = grads[self.wrong_key] * (1 + 1e-3)
        return grads


class BookStyleNet:
    """A minimal model with only params / loss / gradient: gradcheck's generic path."""

    def __init__(self, net: TwoLayerNet) -> None:
        self.net = net
        self.params = net.params  # the same dict: replacing an entry changes the net

    def loss(self, x: Any, t: Any) -> Any:
        return self.net.loss(x, t)

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        return self.net.gradient(x, t)


def batch(n: int = 3, d: int = 20, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_net_passes(backend: xgrad.Backend, dtype: str) -> None:
    x, t = batch()
    net = TwoLayerNet(20, 8, 4, 0.3, backend=backend, dtype=dtype, seed=1)
    result = xgrad.gradcheck(net, x, t)
    assert result.passed, str(result)
    assert result.dtype == dtype and result.backend == backend.spec
    assert set(result.params) == set(KEYS)
    assert all(p.kinks == 0 for p in result.params.values())  # sigmoid: smooth
    expected_ref = "float64 central difference"
    assert result.reference.startswith(expected_ref)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("key", KEYS)
def test_one_part_in_a_thousand_is_caught(backend: xgrad.Backend, dtype: str, key: str) -> None:
    x, t = batch()
    net = WrongNet(20, 8, 4, 0.3, backend=backend, dtype=dtype, seed=1)
    net.wrong_key = key
    result = xgrad.gradcheck(net, x, t)
    assert not result.passed
    assert not result[key].passed
    assert result[key].max_rel == pytest.approx(1e-3, rel=0.05)
    assert all(result[k].passed for k in KEYS if k != key), str(result)
    assert "FAILED" in str(result)


def test_float32_only_backends_use_richardson(backend: xgrad.Backend) -> None:
    # What "auto" picks where float64 is missing (JAX without x64), forced here.
    x, t = batch()
    good = TwoLayerNet(20, 8, 4, 0.3, backend=backend, dtype="float32", seed=1)
    result = xgrad.gradcheck(good, x, t, method="richardson")
    assert result.passed, str(result)
    assert "Richardson" in result.reference
    bad = WrongNet(20, 8, 4, 0.3, backend=backend, dtype="float32", seed=1)
    assert not xgrad.gradcheck(bad, x, t, method="richardson")["W1"].passed


def test_relu_kink_is_reported_not_failed(backend: xgrad.Backend) -> None:
    # Put hidden unit 2's pre-activation for the only sample 3e-5 above zero: the +-1e-4
    # steps of b1[2] straddle the ReLU kink, and the central difference is half a slope off.
    x, t = batch(n=1)
    net = TwoLayerNet(20, 8, 4, 0.3, activation="relu", backend=backend, seed=1)
    w1 = backend.to_numpy(net.params["W1"])
    b1 = np.zeros(8)
    b1[2] = 3e-5 - float(x[0] @ w1[:, 2])
    net.params["b1"] = backend.asarray(b1)
    result = xgrad.gradcheck(net, x, t)
    check = result["b1"]
    assert check.kink_mask[2] and check.kinks >= 1
    assert abs(check.analytic[2] - check.reference[2]) > check.rtol * check.scale
    assert result.passed, str(result)
    assert "kinks" in str(result)
    # ... while a real error in the same parameter still fails
    bad = WrongNet(20, 8, 4, 0.3, activation="relu", backend=backend, seed=1)
    bad.wrong_key = "b1"
    bad.params["b1"] = backend.asarray(b1)
    assert not xgrad.gradcheck(bad, x, t)["b1"].passed


def test_generic_model_path(backend: xgrad.Backend) -> None:
    # No loss_differences and no astype: per-element loop through loss, params replaced
    # (not written in place), so JAX's immutable arrays work too.
    x, t = batch(n=2, d=5)
    net = TwoLayerNet(5, 3, 4, 0.5, backend=backend, seed=2)
    model = BookStyleNet(net)
    before = {k: backend.to_numpy(v) for k, v in net.params.items()}
    result = xgrad.gradcheck(model, x, t)
    assert result.passed, str(result)
    for k in KEYS:
        np.testing.assert_array_equal(backend.to_numpy(net.params[k]), before[k])
    fast = xgrad.gradcheck(net, x, t)
    for k in KEYS:
        np.testing.assert_allclose(
            result[k].reference, fast[k].reference, rtol=0, atol=1e-9 * fast[k].scale
        )
    net32 = TwoLayerNet(5, 3, 4, 0.5, backend=backend, dtype="float32", seed=2)
    assert "Richardson" in xgrad.gradcheck(BookStyleNet(net32), x, t).reference


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_function_mode(backend: xgrad.Backend, dtype: str) -> None:
    xp = backend.xp
    x = backend.asarray(np.array([0.3, -1.2, 2.0, 0.7]), dtype=dtype)

    def f(v: Any) -> Any:
        return xp.sum(xp.sin(v) * v**2)

    def grad(v: Any) -> Any:
        return xp.cos(v) * v**2 + 2 * v * xp.sin(v)

    result = xgrad.gradcheck(f, x, grad=grad)
    assert result.passed, str(result)
    assert not xgrad.gradcheck(f, x, grad=lambda v: grad(v) * (1 + 1e-3))
    # a precomputed gradient works as well
    assert xgrad.gradcheck(f, x, grad=grad(x))


def test_report_lists_the_book_columns() -> None:
    x, t = batch()
    text = str(xgrad.gradcheck(TwoLayerNet(20, 8, 4, seed=1), x, t))
    for word in (
        "numpy:cpu",
        "float64",
        "max abs diff",
        "max rel diff",
        "mean abs diff",
        "W1",
        "b2",
        "PASSED",
    ):
        assert word in text


def test_bad_arguments() -> None:
    x, t = batch()
    net = TwoLayerNet(20, 8, 4, seed=1)
    with pytest.raises(ValueError, match="method: expected one of"):
        xgrad.gradcheck(net, x, t, method="forward")
    with pytest.raises(TypeError, match="exactly x and t"):
        xgrad.gradcheck(net, x)
    with pytest.raises(TypeError, match="grad="):
        xgrad.gradcheck(lambda v: v, x)
    with pytest.raises(TypeError, match="target: expected a model"):
        xgrad.gradcheck(42, x, grad=x)
    with pytest.raises(ValueError, match=r"h: expected a finite number > 0"):
        xgrad.gradcheck(net, x, t, h=-1.0)


# -- functions of several arrays, checked against the engine ---------------------------
A = np.arange(6.0).reshape(2, 3) / 7


def two_inputs(xp: Any, backend: xgrad.Backend) -> tuple[Any, Any, Any]:
    a_mat = backend.asarray(A)

    def f(a: Any, b: Any) -> Any:  # R^3 x R^2 -> R^2
        return xp.tanh(xp.astype(a_mat, a.dtype) @ a) * b  # float32 stays float32

    def jac(a: Any, b: Any) -> tuple[Any, Any]:
        t = backend.to_numpy(xp.tanh(xp.astype(a_mat, a.dtype) @ a))
        bb = backend.to_numpy(b)
        return (1 - t**2)[:, None] * A * bb[:, None], np.diag(t)

    return f, jac, a_mat


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_several_inputs_array_output(backend: xgrad.Backend, dtype: str) -> None:
    xp = backend.xp
    f, jac, _ = two_inputs(xp, backend)
    a = backend.asarray(np.array([0.1, 0.2, -0.3]), dtype=dtype)
    b = backend.asarray(np.array([1.5, -0.5]), dtype=dtype)
    good = xgrad.gradcheck(f, a, b, grad=jac)
    assert good.passed and good.verdict == "passed", str(good)
    assert set(good.params) == {"x0", "x1"} and good["x0"].analytic.shape == (2, 3)

    def one_wrong(a: Any, b: Any) -> tuple[Any, Any]:
        ja, jb = jac(a, b)
        ja = ja.copy()
        ja[1, 2] *= 1 + 1e-3  # a bug in one element only
        return ja, jb

    bad = xgrad.gradcheck(f, a, b, grad=one_wrong)
    assert bad.verdict == "gradient wrong" and bad["x0"].failed == 1 and bad["x1"].passed
    assert bad["x0"].worst[0][0] == (1, 2)  # names the element: (output, input) index
    assert "analytic" in str(bad) and "FAILED: gradient wrong" in str(bad)

    def vjp(u: Any, a: Any, b: Any) -> tuple[Any, ...]:
        uu = backend.to_numpy(u)
        return tuple(backend.asarray(np.tensordot(uu, j, 1), dtype=dtype) for j in jac(a, b))

    assert xgrad.gradcheck(f, a, b, vjp=vjp)
    assert xgrad.gradcheck(f, a, b, vjp=vjp, mode="fast")


@pytest.mark.xgrad_skip(lacking="autodiff", reason="no gradient of its own to check")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_own_autodiff_is_the_default(backend: xgrad.Backend, dtype: str) -> None:
    xp = backend.xp
    x = backend.asarray(np.array([0.3, -1.2, 2.0]), dtype=dtype)
    result = xgrad.gradcheck(lambda v: xp.sum(xp.sin(v) * v**2), x)
    assert result.passed, str(result)
    assert result.analytic == f"{backend.name}'s own autodiff"
    assert result.dtype == dtype and result.reference.endswith(
        "on float64 copies" if dtype == "float32" else "full_output)"
    )


def test_torch_custom_function_in_float32() -> None:
    torch = pytest.importorskip("torch")

    def exp_with(factor: float) -> Any:
        class Exp(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: Any) -> Any:
                y = torch.exp(x)
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx: Any, gy: Any) -> Any:
                (y,) = ctx.saved_tensors
                return gy * y * factor

        return Exp.apply

    x32 = torch.tensor([0.1, 0.5, -0.3], dtype=torch.float32)
    assert xgrad.gradcheck(lambda v: exp_with(1.0)(v).sum(), x32)
    bad = xgrad.gradcheck(lambda v: exp_with(1.001)(v).sum(), x32)
    assert bad.verdict == "gradient wrong" and bad["x"].failed == 3, str(bad)
    # torch's own float32 gradcheck cannot tell: it false-alarms on the correct one
    error = importlib.import_module("torch.autograd.gradcheck").GradcheckError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "inputs are not double precision"
        with pytest.raises(error, match="Jacobian mismatch"):
            torch.autograd.gradcheck(exp_with(1.0), (x32.clone().requires_grad_(),))


def test_jax_custom_vjp() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    @jax.custom_vjp
    def square(x: Any) -> Any:
        return x * x

    square.defvjp(lambda x: (x * x, x), lambda x, g: (g * 2.002 * x,))
    x = jnp.asarray(np.array([0.5, -1.0, 2.0]), dtype=jnp.float32)
    result = xgrad.gradcheck(lambda v: jnp.sum(square(v)), x)
    assert result.verdict == "gradient wrong", str(result)
    assert xgrad.gradcheck(lambda v: jnp.sum(v * v), x)


def test_fast_mode_evaluations_and_miss_probability() -> None:
    x = np.random.default_rng(0).standard_normal(1000)

    def f(v: Any) -> Any:
        return np.sum(np.log1p(v**2))

    def g(v: Any) -> Any:
        return 2 * v / (1 + v**2)

    fast = xgrad.gradcheck(f, x, grad=g, mode="fast")
    full = xgrad.gradcheck(f, x, grad=g)
    assert fast.passed and full.passed
    assert full.nfev >= 10 * fast.nfev  # 8000 against ~26
    p = xgrad.checking.miss_probability(1e-6, 3)
    assert fast.miss_probability == p and 0 < p < 1e-9
    assert f"missed with probability <= {p:.1e}" in str(fast)
    assert not xgrad.gradcheck(f, x, grad=lambda v: g(v) * (1 + 1e-3), mode="fast")
    assert not xgrad.gradcheck(f, x, grad=lambda v: -g(v), mode="fast", probes=1)


def test_kinks_reported_and_resampled() -> None:
    def relu_sum(v: Any) -> Any:
        return np.sum(np.maximum(v, 0.0))

    def grad(v: Any) -> Any:
        return (v > 0) * 1.0

    x = np.array([0.0, 1.0, -2.0])
    at_kink = xgrad.gradcheck(relu_sum, x, grad=grad)
    assert at_kink["x"].kinks == 1 and bool(at_kink["x"].kink_mask[0])
    assert at_kink.passed and "kinks: f has no derivative there" in str(at_kink)
    moved = xgrad.gradcheck(relu_sum, x, grad=grad, resample=2)
    assert moved.resampled == 1 and moved["x"].kinks == 0 and moved.passed


def test_too_noisy_is_not_a_wrong_gradient() -> None:
    x = np.array([0.3, -1.2, 2.0, 0.7])

    def noisy(v: Any) -> Any:  # sin with a deterministic relative noise of 1e-5
        s = np.sin(2.0**50 * v) * 43758.5453
        return np.sum(np.sin(v) * (1 + 1e-5 * (s - np.floor(s) - 0.5)))

    correct = xgrad.gradcheck(noisy, x, grad=np.cos)
    assert correct.verdict == "finite differences too noisy", str(correct)
    assert correct["x"].failed == 0 and correct["x"].noisy >= 1
    assert xgrad.gradcheck(noisy, x, grad=lambda v: 1.5 * np.cos(v)).verdict == "gradient wrong"


def test_nondeterministic_f_is_detected() -> None:
    rng = np.random.default_rng(1)
    x = np.array([0.3, -1.2])
    result = xgrad.gradcheck(lambda v: np.sum(v**2) + 1e-9 * rng.random(), x, grad=lambda v: 2 * v)
    assert result.verdict == "f is nondeterministic" and not result
    assert 0 < result.nondeterministic < 1e-9
    assert "f is nondeterministic" in str(result)


def test_function_mode_bad_arguments() -> None:
    x = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match=r"numpy has no autodiff of its own, so pass grad="):
        xgrad.gradcheck(lambda v: np.sum(v), x)
    with pytest.raises(ValueError, match=r"mode: expected one of \('full', 'fast'\), found 'slow'"):
        xgrad.gradcheck(lambda v: np.sum(v), x, grad=np.ones(2), mode="slow")
    with pytest.raises(TypeError, match="grad= or vjp=, not both"):
        xgrad.gradcheck(lambda v: np.sum(v), x, grad=np.ones(2), vjp=lambda u, v: u)
    with pytest.raises(ValueError, match=r"grad: expected the Jacobian of input 0 to have shape"):
        xgrad.gradcheck(lambda v: v * 2, x, grad=np.ones(3))
    with pytest.raises(ValueError, match="probes: expected an int >= 1"):
        xgrad.gradcheck(lambda v: np.sum(v), x, grad=np.ones(2), mode="fast", probes=0)


def test_float32_f_that_refuses_float64_keeps_a_float32_reference() -> None:
    torch = pytest.importorskip("torch")
    m = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float32)
    x = torch.tensor([0.3, -0.7], dtype=torch.float32)

    def f(v: Any) -> Any:
        return torch.sum(torch.sin(m @ v))  # float64 v: "must have the same dtype"

    result = xgrad.gradcheck(f, x)  # torch.autograd against a float32 reference
    assert result.passed, str(result)
    assert "float64" not in result.reference
