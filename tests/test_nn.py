"""SimpleNet and TwoLayerNet on every backend: book values, NumPy references, fast numerical
gradient against the per-element loop, cross-backend training agreement, bad input."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

import xgrad
from xgrad.backends._registry import backend_of
from xgrad.nn import SimpleNet, TwoLayerNet
from xgrad.testing import assert_close

BOOK_W = [[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]]
BOOK_DW = [[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]]
KEYS = ("W1", "b1", "W2", "b2")


# -- NumPy references ---------------------------------------------------------------------
def np_forward(p, x, activation):  # type: ignore[no-untyped-def]
    a1 = x @ p["W1"] + p["b1"]
    z1 = 1 / (1 + np.exp(-a1)) if activation == "sigmoid" else np.maximum(a1, 0)
    return a1, z1, z1 @ p["W2"] + p["b2"]


def np_loss(p, x, labels, activation):  # type: ignore[no-untyped-def]
    a2 = np_forward(p, x, activation)[2]
    log_p = a2 - a2.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def np_gradient(p, x, labels, activation):  # type: ignore[no-untyped-def]
    a1, z1, a2 = np_forward(p, x, activation)
    y = np.exp(a2 - a2.max(axis=1, keepdims=True))
    y /= y.sum(axis=1, keepdims=True)
    da2 = (y - np.eye(a2.shape[1])[labels]) / len(labels)
    dz1 = da2 @ p["W2"].T
    da1 = dz1 * z1 * (1 - z1) if activation == "sigmoid" else dz1 * (a1 > 0)
    return {"W1": x.T @ da1, "b1": da1.sum(0), "W2": z1.T @ da2, "b2": da2.sum(0)}


def host(net: TwoLayerNet) -> dict[str, np.ndarray]:
    return {k: net.backend.to_numpy(v).astype(np.float64) for k, v in net.params.items()}


def data(n=5, d=6, c=3, seed=0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


# -- SimpleNet ------------------------------------------------------------------------------
def test_simplenet_book_values(backend: xgrad.Backend) -> None:
    net = SimpleNet(backend.asarray(np.array(BOOK_W)))
    x = backend.asarray(np.array([0.6, 0.9]))
    p = net.predict(x)
    assert backend_of(p) == backend
    # Printed in the book (section 4.4.1); W is printed to 8 digits, hence rel=1e-8.
    assert_close(p, np.array([1.05414809, 0.63071653, 1.1328074]), rtol=0, atol=5e-9)
    t = backend.asarray(np.array([0, 0, 1]))
    assert float(net.loss(x, t)) == pytest.approx(0.92806853663411326, rel=1e-8)
    assert float(net.loss(x, 2)) == pytest.approx(0.92806853663411326, rel=1e-8)


def test_simplenet_numerical_gradient_reproduces_book_dw(backend: xgrad.Backend) -> None:
    pytest.importorskip("xgrad.numdiff")
    W = backend.asarray(np.array(BOOK_W))
    x = backend.asarray(np.array([0.6, 0.9]))
    t = backend.asarray(np.array([0, 0, 1]))
    # The function of W form works on every backend, immutable JAX arrays included.
    dW = xgrad.numerical_gradient(lambda w: SimpleNet(w).loss(x, t), W, h=1e-4)
    assert_close(dW, np.array(BOOK_DW), rtol=0, atol=5e-9)


def test_simplenet_book_closure_form() -> None:
    # The book's own spelling: f ignores its argument and reads net.W, perturbed in place.
    pytest.importorskip("xgrad.numdiff")
    net = SimpleNet(np.array(BOOK_W))
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    dW = xgrad.numerical_gradient(lambda W: net.loss(x, t), net.W, h=1e-4)
    np.testing.assert_allclose(dW, BOOK_DW, rtol=0, atol=5e-9)
    np.testing.assert_array_equal(net.W, BOOK_W)  # restored


def test_simplenet_book_dw_by_hand() -> None:
    # The book's loop, written out, as a check independent of xgrad.numdiff.
    W = np.array(BOOK_W)
    net = SimpleNet(W)
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    dW = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        v = W[idx]
        W[idx] = v + 1e-4
        fp = float(SimpleNet(W).loss(x, t))
        W[idx] = v - 1e-4
        fm = float(SimpleNet(W).loss(x, t))
        W[idx] = v
        dW[idx] = (fp - fm) / 2e-4
    np.testing.assert_allclose(dW, BOOK_DW, rtol=0, atol=5e-9)
    assert net.W.shape == (2, 3)


def test_simplenet_random_init_and_errors(backend: xgrad.Backend) -> None:
    a = SimpleNet(seed=3, backend=backend)
    b = SimpleNet(seed=3, backend="numpy")
    assert_close(a.W, b.W, rtol=0)
    with pytest.raises(ValueError, match=r"W: expected shape \(2, 3\), found \(3, 2\)"):
        SimpleNet(np.ones((3, 2)), backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \(2,\) or \(N, 2\), found \(3,\)"):
        a.predict(np.ones(3))


# -- TwoLayerNet basics ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_seed_same_net_everywhere(backend: xgrad.Backend, dtype: str) -> None:
    net = TwoLayerNet(6, 4, 3, 0.5, backend=backend, dtype=dtype, seed=11)
    rng = np.random.default_rng(11)
    W1 = 0.5 * rng.standard_normal((6, 4))
    W2 = 0.5 * rng.standard_normal((4, 3))
    expected = {"W1": W1, "b1": np.zeros(4), "W2": W2, "b2": np.zeros(3)}
    for k in KEYS:
        assert backend_of(net.params[k]) == backend
        assert_close(net.params[k], expected[k].astype(dtype), rtol=0)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_loss_gradient_accuracy_match_numpy(backend: xgrad.Backend, activation: str) -> None:
    net = TwoLayerNet(6, 4, 3, 0.8, activation=activation, backend=backend, seed=1)
    x, t = data()
    p = host(net)
    assert float(net.loss(x, t)) == pytest.approx(np_loss(p, x, t, activation), rel=1e-13)
    loss, grads = net.loss_and_gradient(x, t)
    assert float(loss) == pytest.approx(np_loss(p, x, t, activation), rel=1e-13)
    expected = np_gradient(p, x, t, activation)
    for k in KEYS:
        assert backend_of(grads[k]) == backend
        assert_close(grads[k], expected[k], atol=1e-15)
    # one-hot targets give the same loss and gradient
    one_hot = np.eye(3)[t]
    assert float(net.loss(x, one_hot)) == pytest.approx(float(loss), rel=1e-14)
    assert_close(net.gradient(x, one_hot)["W1"], expected["W1"], atol=1e-15)
    scores = np_forward(p, x, activation)[2]
    assert net.accuracy(x, t) == np.mean(scores.argmax(1) == t)
    assert_close(net.predict(x), scores)


def test_inputs_from_anywhere(backend: xgrad.Backend) -> None:
    net = TwoLayerNet(6, 4, 3, 0.8, backend=backend, seed=1)
    x, t = data()
    strict = xgrad.get_backend("array_api_strict", "device1")
    images = x.reshape(5, 2, 3)
    x32 = x.astype(np.float32)
    for xs, ts, x_used in [
        (x32, t.astype(np.uint8), x32.astype(np.float64)),
        (strict.asarray(x), t, x),
        (images, t, x),
    ]:
        expected = np_loss(host(net), x_used, t, "sigmoid")
        assert float(net.loss(xs, ts)) == pytest.approx(expected, rel=1e-13)
    assert net.predict(x[0]).shape == (3,)


def test_bad_input_names_argument_and_shapes(backend: xgrad.Backend) -> None:
    net = TwoLayerNet(6, 4, 3, backend=backend, seed=1)
    x, t = data()
    cases = [
        ((np.ones((5, 7)), t), r"x: expected shape \(N, 6\) for input_size=6, found \(5, 7\)"),
        ((x, np.array([0, 1, 2, 3, 0])), r"t: class labels must lie in \[0, 3\).*\[0, 3\]"),
        ((x, np.array([0, 1, -1, 2, 0])), r"t: class labels must lie in \[0, 3\).*\[-1, 2\]"),
        ((x, t.astype(np.float64)), r"t: shape \(5,\) means class labels .* found dtype float64"),
        (
            (x, np.eye(4)[t]),
            r"t: expected class labels of shape \(5,\) or one-hot targets of"
            r" shape \(5, 3\) .* found shape \(5, 4\)",
        ),
        ((x, t[:4]), r"t: expected class labels of shape \(5,\) .* found shape \(4,\)"),
    ]
    for (xs, ts), message in cases:
        for method in (net.loss, net.gradient, net.accuracy, net.numerical_gradient):
            with pytest.raises(ValueError, match=message):
                method(xs, ts)
    with pytest.raises(ValueError, match="activation"):
        TwoLayerNet(6, 4, 3, activation="tanh")
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, found 0"):
        TwoLayerNet(6, 0, 3)
    with pytest.raises(ValueError, match="h: expected a finite number > 0"):
        net.numerical_gradient(x, t, h=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        net.numerical_gradient(x, t, chunk_size=0)


def test_state_dict_round_trip(backend: xgrad.Backend) -> None:
    net = TwoLayerNet(6, 4, 3, 0.3, activation="relu", backend=backend, seed=5)
    state = net.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state["params"].values())
    copy = TwoLayerNet.from_state_dict(state, backend=backend)
    x, t = data()
    assert float(copy.loss(x, t)) == float(net.loss(x, t))
    other = net.to("numpy", dtype="float32")
    assert other.dtype_name == "float32" and other.activation == "relu"
    assert_close(other.params["W1"], state["params"]["W1"].astype(np.float32), rtol=0)
    with pytest.raises(ValueError, match=r"params\['W1'\]: expected shape \(6, 4\)"):
        net.load_state_dict({"params": {**state["params"], "W1": np.ones((4, 6))}})
    state["params"]["W1"][0, 0] += 1.0  # the loaded net owns its arrays
    assert float(copy.loss(x, t)) == float(net.loss(x, t))


# -- numerical gradient ---------------------------------------------------------------
def loop_gradient(net: TwoLayerNet, x, t, h):  # type: ignore[no-untyped-def]
    """The book's per-element loop on net.loss, on the host copy of the parameters."""
    out = {}
    for k in KEYS:
        original = net.params[k]
        values = net.backend.to_numpy(original).astype(np.float64)
        g = np.zeros_like(values)
        for idx in np.ndindex(values.shape):
            losses = []
            for s in (h, -h):
                moved = values.copy()
                moved[idx] = values[idx] + s
                net.params[k] = net.backend.asarray(moved, dtype=net.dtype)
                losses.append(float(net.loss(x, t)))
            g[idx] = (losses[0] - losses[1]) / (2 * h)
        net.params[k] = original
        out[k] = g
    return out


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_numerical_gradient_equals_the_loop(backend: xgrad.Backend, activation: str) -> None:
    net = TwoLayerNet(6, 4, 3, 0.8, activation=activation, backend=backend, seed=2)
    x, t = data(seed=3)
    fast = net.numerical_gradient(x, t)
    slow = loop_gradient(net, x, t, 1e-4)
    for k in KEYS:
        g = net.backend.to_numpy(fast[k])
        assert np.max(np.abs(g - slow[k])) <= 1e-9 * np.max(np.abs(slow[k])), k
    # chunking changes nothing but the order of GPU sums (a few ulp on torch-cuda)
    for chunk in (1, 7):
        other = net.numerical_gradient(x, t, chunk_size=chunk)
        for k in KEYS:
            assert_close(other[k], net.backend.to_numpy(fast[k]), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numerical_gradient_agrees_with_backprop(backend: xgrad.Backend, dtype: str) -> None:
    # Exact loss (no 1e-7): the two agree to the O(h^2) truncation, not just to ~5e-7.
    net = TwoLayerNet(6, 4, 3, 0.8, backend=backend, dtype=dtype, seed=4)
    x, t = data(seed=5)
    exact = np_gradient(host(net), x.astype(dtype).astype(float), t, "sigmoid")
    numeric = net.numerical_gradient(x, t)
    tol = 1e-8 if dtype == "float64" else 3e-6
    for k in KEYS:
        err = np.max(np.abs(net.backend.to_numpy(numeric[k]) - exact[k]))
        assert err <= tol * np.max(np.abs(exact[k])), (k, err)


def test_accelerator_takes_one_large_chunk(
    backend: xgrad.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a GPU the CPU-sized chunks made the 784-50-10 gradient 4x slower (H100: 56 ms
    # against 12 ms); Backend.accelerator switches to large chunks with the same numbers.
    import xgrad.nn as nn_module

    chunks: list[int] = []
    real = nn_module._loss_differences

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        chunks.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(nn_module, "_loss_differences", spy)
    rng = np.random.default_rng(7)
    x, t = rng.random((50, 300)), rng.integers(0, 10, 50)
    cpu_net = TwoLayerNet(300, 20, 10, 0.1, backend=backend, seed=3)
    gpu_like = dataclasses.replace(backend, accelerator=True)
    gpu_net = TwoLayerNet(300, 20, 10, 0.1, backend=gpu_like, seed=3)
    assert backend.accelerator is backend.device_label.startswith("cuda")

    # The per-perturbation engine behind loss_differences (gradcheck's reference); the
    # closed-form numerical_gradient has its own accelerator test in test_netgrad.py.
    def differences(net):  # type: ignore[no-untyped-def]
        return {k: (u - d) / (su - sd) for k, (u, d, su, sd) in net.loss_differences(x, t).items()}

    g_cpu, g_gpu = differences(cpu_net), differences(gpu_net)
    n_pairs = 301 * 20
    if not backend.accelerator:
        assert chunks[0] < n_pairs  # several cache-sized chunks
    assert chunks[1] >= n_pairs  # all W1/b1 pairs in one call
    for k in KEYS:
        ref = backend.to_numpy(g_cpu[k])  # chunk shapes change summation order: ulps
        assert_close(g_gpu[k], ref, rtol=1e-13, atol=1e-13 * float(np.max(np.abs(ref))))


# -- cross-backend training agreement ---------------------------------------------------
# lr 0.5 made the relu float32 run chaotic: a 3e-7 change of W1 moved the loss by 2e-2.
N_TRAIN, STEPS, BATCH, LR = 500, 100, 100, 0.1


@functools.cache
def teacher_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    x = rng.random((N_TRAIN, 784))
    teacher = rng.standard_normal((784, 10))
    labels = np.argmax(x @ teacher, axis=1)
    batches = rng.integers(0, N_TRAIN, (STEPS, BATCH))  # host-drawn minibatch indices
    return x, labels, batches


def sgd_losses(backend: xgrad.Backend | str, dtype: str, activation: str) -> np.ndarray:
    x, labels, batches = teacher_data()
    net = TwoLayerNet(784, 50, 10, activation=activation, backend=backend, dtype=dtype, seed=7)
    b = net.backend
    xs, ts = b.asarray(x, dtype=dtype), b.asarray(labels)
    losses = []
    for idx in batches:
        i = b.asarray(idx)
        loss, grads = net.loss_and_gradient(b.xp.take(xs, i, axis=0), b.xp.take(ts, i, axis=0))
        for k in KEYS:  # plain SGD; a new array, so immutable backends work as well
            net.params[k] = net.params[k] - LR * grads[k]
        losses.append(float(loss))
    return np.array(losses)


@functools.cache
def numpy_losses(dtype: str, activation: str) -> np.ndarray:
    return sgd_losses("numpy", dtype, activation)


# float64: measured <= 2e-14 (torch 5e-16, JAX 2e-14, array-api-strict 0). float32: each
# step's rounding (~6e-8) differs between BLAS libraries and compounds over 100 steps;
# measured <= 2e-6, asserted 2e-5.
@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_sgd_losses_agree_across_backends(
    backend: xgrad.Backend, dtype: str, rtol: float, activation: str
) -> None:
    ref = numpy_losses(dtype, activation)
    assert ref[-1] < 0.9 * ref[0]  # it learns
    got = sgd_losses(backend, dtype, activation)
    assert np.max(np.abs(got - ref) / np.abs(ref)) <= rtol
