"""xgrad.layers on every backend: forward/backward against NumPy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import xgrad
from xgrad import functions as F
from xgrad.backends._registry import backend_of
from xgrad.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from xgrad.testing import assert_close

RNG = np.random.default_rng(42)
X = RNG.standard_normal((4, 2, 3))
W = RNG.standard_normal((6, 5))
B = RNG.standard_normal(5)
DOUT = RNG.standard_normal((4, 5))


def test_affine_forward_backward(backend: xgrad.Backend) -> None:
    layer = Affine(backend.asarray(W), backend.asarray(B))
    out = layer.forward(backend.asarray(X))  # (4, 2, 3) flattened per sample, as in ch. 5
    x2 = X.reshape(4, 6)
    assert_close(out, x2 @ W + B)
    dx = layer.backward(backend.asarray(DOUT))
    assert backend_of(dx) == backend
    assert_close(dx, (DOUT @ W.T).reshape(X.shape))
    assert_close(layer.dW, x2.T @ DOUT)
    assert_close(layer.db, DOUT.sum(axis=0))


def test_affine_without_input_grad(backend: xgrad.Backend) -> None:
    layer = Affine(backend.asarray(W), backend.asarray(B), input_grad=False)
    layer.forward(backend.asarray(X.reshape(4, 6)))
    assert layer.backward(backend.asarray(DOUT)) is None
    assert_close(layer.dW, X.reshape(4, 6).T @ DOUT)


def test_affine_shape_errors(backend: xgrad.Backend) -> None:
    with pytest.raises(ValueError, match=r"expected shapes \(D, M\) and \(M,\)"):
        Affine(backend.asarray(W), backend.asarray(B[:3]))
    layer = Affine(backend.asarray(W), backend.asarray(B))
    with pytest.raises(ValueError, match=r"expected 6 features .* found input of shape \(4, 5\)"):
        layer.forward(backend.asarray(np.ones((4, 5))))
    with pytest.raises(RuntimeError, match="before forward"):
        Affine(backend.asarray(W), backend.asarray(B)).backward(backend.asarray(DOUT))


def test_relu_and_sigmoid(backend: xgrad.Backend) -> None:
    x = np.array([[-2.0, 0.0, 0.5], [3.0, -0.1, 1e-3]])
    d = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    relu = Relu()
    assert_close(relu.forward(backend.asarray(x)), np.maximum(x, 0))
    assert_close(relu.backward(backend.asarray(d)), d * (x > 0))  # 0 at x == 0, as the book
    sig = Sigmoid()
    s = 1 / (1 + np.exp(-x))
    assert_close(sig.forward(backend.asarray(x)), s)
    assert_close(sig.backward(backend.asarray(d)), d * s * (1 - s))
    with pytest.raises(TypeError, match="x: expected an array"):
        Relu().forward([1.0, 2.0])


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss(backend: xgrad.Backend, one_hot: bool) -> None:
    scores = RNG.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    t = np.eye(4)[labels] if one_hot else labels
    log_p = scores - scores.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    layer = SoftmaxWithLoss()
    loss = layer.forward(backend.asarray(scores), backend.asarray(t))
    assert float(loss) == pytest.approx(-log_p[np.arange(5), labels].mean(), rel=1e-13)
    assert_close(layer.backward(), (np.exp(log_p) - np.eye(4)[labels]) / 5, atol=1e-17)


def test_softmax_with_loss_backward_is_the_loss_gradient() -> None:
    # Central differences of the exact loss; the book's eps = 1e-7 version is off by ~eps/y.
    scores = RNG.standard_normal((3, 4))
    labels = np.array([2, 0, 3])
    layer = SoftmaxWithLoss()
    layer.forward(scores, labels)
    analytic = layer.backward()
    numeric = np.zeros_like(scores)
    h = 1e-5
    for idx in np.ndindex(scores.shape):
        plus, minus = scores.copy(), scores.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (
            float(SoftmaxWithLoss().forward(plus, labels))
            - float(SoftmaxWithLoss().forward(minus, labels))
        ) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, atol=1e-10)


def test_softmax_with_loss_book_eps(backend: xgrad.Backend) -> None:
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((3, 4))
    labels = np.array([2, 0, 3])
    book = SoftmaxWithLoss(eps=1e-7).forward(backend.asarray(scores), backend.asarray(labels))
    y = np.asarray(F.softmax(scores))
    expected = F.cross_entropy_error(y, labels)  # the book's composition
    assert float(book) == pytest.approx(float(expected), rel=1e-14)
    exact = SoftmaxWithLoss().forward(backend.asarray(scores), backend.asarray(labels))
    # log(y) - log(y + eps) = -eps / y to first order
    gap = np.mean(1e-7 / y[np.arange(3), labels])
    assert float(exact) - float(book) == pytest.approx(gap, rel=1e-5)
    with pytest.raises(ValueError, match="eps"):
        SoftmaxWithLoss(eps=-1.0)
