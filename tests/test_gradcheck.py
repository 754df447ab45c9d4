"""xgrad.gradcheck on every backend: correct gradients pass, a 1e-3 error is caught (float32
and float64), ReLU kinks are reported, and the report has the book's columns."""

from __future__ import annotations

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
