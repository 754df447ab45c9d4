"""xgrad.functions on every backend: book values, NumPy references, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xgrad
from xgrad import functions as F
from xgrad.backends._registry import backend_of
from xgrad.testing import assert_close

# The book's section 4.2 example: the right answer is class 2.
Y_BOOK = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
Y_BOOK_WRONG = [0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]
T_BOOK = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def _on(backend: xgrad.Backend, values, dtype="float64"):  # type: ignore[no-untyped-def]
    return backend.asarray(np.asarray(values, dtype=np.float64), dtype=dtype)


def _same_place(result, backend: xgrad.Backend) -> None:  # type: ignore[no-untyped-def]
    assert backend_of(result) == backend


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_activations_match_numpy(backend: xgrad.Backend, dtype: str) -> None:
    host = np.array([-800.0, -3.0, -0.5, 0.0, 0.5, 3.0, 800.0])
    x = _on(backend, host, dtype)
    sig = 1.0 / (1.0 + np.exp(-np.clip(host, -700, 700)))  # reference without overflow
    for result, expected in [
        (F.sigmoid(x), sig),
        (F.sigmoid_grad(x), sig * (1.0 - sig)),
        (F.relu(x), np.maximum(host, 0.0)),
        (F.relu_grad(x), (host >= 0).astype(float)),
        (F.step_function(x), (host > 0).astype(float)),
        (F.identity(x), host),
    ]:
        _same_place(result, backend)
        assert backend.dtype_name(result.dtype) == dtype
        assert_close(result, expected.astype(dtype), atol=1e-300)


def test_sigmoid_is_exact_on_both_branches(backend: xgrad.Backend) -> None:
    # s(-x) = 1 - s(x); for x = 40, 1 - s(x) underflows to 0 in the naive formula.
    x = _on(backend, [40.0, -40.0, 0.0])
    assert_close(F.sigmoid(x), np.array([1.0, np.exp(-40.0) / (1 + np.exp(-40.0)), 0.5]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_vector_and_batch(backend: xgrad.Backend, dtype: str) -> None:
    host = np.array([[0.3, 2.9, 4.0], [1010.0, 1000.0, 990.0]])
    e = np.exp(host - host.max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    result = F.softmax(_on(backend, host, dtype))
    _same_place(result, backend)
    assert_close(result, expected.astype(dtype))
    # The book's vector example (section 3.5.1).
    assert_close(
        F.softmax(_on(backend, [0.3, 2.9, 4.0])),
        np.array([0.01821127, 0.24519181, 0.73659691]),
        rtol=0,
        atol=5e-9,
    )


def test_cross_entropy_book_values(backend: xgrad.Backend) -> None:
    t = backend.asarray(np.array(T_BOOK))
    y = _on(backend, Y_BOOK)
    # Printed in the book: 0.51082545709933802 and 2.3025840929945458.
    assert float(F.cross_entropy_error(y, t)) == pytest.approx(0.51082545709933802, rel=1e-14)
    wrong = F.cross_entropy_error(_on(backend, Y_BOOK_WRONG), t)
    assert float(wrong) == pytest.approx(2.3025840929945458, rel=1e-14)
    label = backend.asarray(np.array(2))
    assert float(F.cross_entropy_error(y, label)) == pytest.approx(0.51082545709933802, rel=1e-14)


def test_cross_entropy_batch_labels_equal_one_hot(backend: xgrad.Backend) -> None:
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(5), size=4)
    labels = np.array([0, 4, 2, 2])
    expected = -np.mean(np.log(y[np.arange(4), labels] + 1e-7))
    by_label = F.cross_entropy_error(_on(backend, y), backend.asarray(labels))
    by_one_hot = F.cross_entropy_error(_on(backend, y), _on(backend, np.eye(5)[labels]))
    _same_place(by_label, backend)
    assert float(by_label) == pytest.approx(expected, rel=1e-13)
    assert float(by_one_hot) == pytest.approx(expected, rel=1e-13)


def test_mean_squared_error_book_values(backend: xgrad.Backend) -> None:
    t = backend.asarray(np.array(T_BOOK))
    assert float(F.mean_squared_error(_on(backend, Y_BOOK), t)) == pytest.approx(0.0975)
    assert float(F.mean_squared_error(_on(backend, Y_BOOK_WRONG), t)) == pytest.approx(0.5975)


def test_bad_targets_are_refused(backend: xgrad.Backend) -> None:
    y = _on(backend, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[0, 3\]"):
        F.cross_entropy_error(y, backend.asarray(np.array([0, 3])))
    with pytest.raises(ValueError, match=r"must be integers; found dtype float64"):
        F.cross_entropy_error(y, _on(backend, [0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\) or one-hot targets of shape \(2, 3\)"):
        F.cross_entropy_error(y, _on(backend, np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"t: expected the shape of y \(2, 3\), found \(3,\)"):
        F.mean_squared_error(y, _on(backend, [1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="scalar"):
        F.softmax(_on(backend, 1.0))


def test_mixed_backends_are_refused() -> None:
    strict = xgrad.get_backend("array_api_strict", "device1")
    with pytest.raises(ValueError, match="two backends or devices"):
        F.cross_entropy_error(strict.asarray(np.full(3, 1 / 3)), np.array([0, 0, 1]))


def test_jax_float32_labels_do_not_warn_on_every_gradient() -> None:
    # Before: labels were cast to int64, which JAX without x64 truncates to int32 with a
    # UserWarning on every loss and gradient. A fresh process: the suite enables x64.
    import subprocess
    import sys

    pytest.importorskip("jax")
    code = (
        "import numpy as np\n"
        "from xgrad.nn import TwoLayerNet\n"
        "from xgrad import functions as F\n"
        "net = TwoLayerNet(4, 3, 2, backend='jax', dtype='float32', seed=0)\n"
        "x, t = np.ones((2, 4)), np.array([0, 1], dtype=np.uint8)\n"
        "for _ in range(2):\n"
        "    g = net.gradient(x, t)\n"
        "    print(float(net.loss(x, t)), net.accuracy(x, t), g['W1'].dtype)\n"
        "y = net.backend.asarray([[0.2, 0.8]], dtype='float32')\n"
        "print(float(F.cross_entropy_error(y, net.backend.asarray(np.array([1], np.uint8)))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XGRAD_BACKEND"}
    env["JAX_ENABLE_X64"] = "0"
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == lines[1] and lines[0].endswith("float32")
    assert abs(float(lines[2]) - (-np.log(0.8 + 1e-7))) < 1e-6
