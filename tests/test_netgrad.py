"""The closed-form numerical gradient of TwoLayerNet (xgrad._netgrad) on every backend row.

References: the book's per-element central difference of the loss, with the same rounded
steps ``p +- h``, evaluated in extended precision (np.longdouble) on the host, so that the
reference itself is free of the loop's cancellation noise (~1e-12 absolute in float64); and
the exact perturbation engine (``loss_differences``) on the book's 784-50-10 shape.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xgrad
from xgrad import _netgrad
from xgrad.nn import TwoLayerNet

KEYS = ("W1", "b1", "W2", "b2")
# max|g - reference| / max|reference| per parameter. float64: the target of the structured
# gradient. float32: ~100 ulp of float32, what the float32 forward pass itself carries.
TOL = {"float64": 1e-12, "float32": 1e-5}


def _loss_ld(p: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, activation: str):  # type: ignore[no-untyped-def]
    a1 = x @ p["W1"] + p["b1"]
    z1 = 1 / (1 + np.exp(-a1)) if activation == "sigmoid" else np.maximum(a1, 0)
    a2 = z1 @ p["W2"] + p["b2"]
    m = a2.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(a2 - m).sum(axis=1))
    return np.mean(lse - a2[np.arange(len(t)), t])


def book_loop_ld(net: TwoLayerNet, x: np.ndarray, t: np.ndarray, h: float) -> dict:
    """The book's loop (p -> p +- h rounded to the net's dtype) with the loss in longdouble."""
    dtype = np.dtype(net.dtype_name)
    params = {k: net.backend.to_numpy(v).astype(dtype) for k, v in net.params.items()}
    ld = {k: v.astype(np.longdouble) for k, v in params.items()}
    x_ld = np.asarray(x, dtype=dtype).astype(np.longdouble)
    out = {}
    for key, values in params.items():
        g = np.zeros(values.shape, dtype=np.longdouble)
        for idx in np.ndindex(values.shape):
            moved = []
            for s in (h, -h):
                p = values[idx] + dtype.type(s)  # rounded to the dtype, as the loop sets it
                ld[key][idx] = p
                moved.append((_loss_ld(ld, x_ld, t, net.activation), np.longdouble(p)))
            ld[key][idx] = values[idx]
            (l_up, p_up), (l_down, p_down) = moved
            g[idx] = (l_up - l_down) / (p_up - p_down)
        out[key] = g.astype(np.float64)
    return out


def rel_errors(net: TwoLayerNet, got: dict, ref: dict) -> dict[str, float]:
    errs = {}
    for k in KEYS:
        g = net.backend.to_numpy(got[k]).astype(np.float64)
        assert g.shape == ref[k].shape, k
        scale = np.max(np.abs(ref[k]))
        errs[k] = (
            float(np.max(np.abs(g - ref[k])) / scale) if scale > 0 else float(np.max(np.abs(g)))
        )
    return errs


def sparse_images(n: int, d: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)) * (rng.random((n, d)) < density)


def previous(net: TwoLayerNet, x, t, h=None) -> dict:  # type: ignore[no-untyped-def]
    """The previous implementation: the perturbation engine's difference quotient."""
    return {
        k: (up - down) / (su - sd)
        for k, (up, down, su, sd) in net.loss_differences(x, t, h).items()
    }


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_equals_the_exact_central_difference(
    backend: xgrad.Backend, activation: str, dtype: str, density: float
) -> None:
    net = TwoLayerNet(7, 5, 4, 0.8, activation=activation, backend=backend, dtype=dtype, seed=3)
    x = sparse_images(6, 7, density, seed=4)
    t = np.array([0, 1, 2, 3, 1, 0])
    h = xgrad.nn.default_step(dtype)
    got = net.numerical_gradient(x, t)
    errs = rel_errors(net, got, book_loop_ld(net, x, t, h))
    assert max(errs.values()) <= TOL[dtype], errs


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_zero_pixels_zero_samples_and_a_batch_of_one(
    backend: xgrad.Backend, activation: str
) -> None:
    net = TwoLayerNet(7, 5, 4, 0.8, activation=activation, backend=backend, seed=5)
    x = sparse_images(6, 7, 0.5, seed=6)
    x[:, [0, 5]] = 0.0  # pixels off in every sample: their W1 rows are exactly 0
    x[2, :] = 0.0  # an all-zero sample: with b1 = 0 every ReLU unit sits on its kink
    t = np.array([2, 0, 1, 3, 0, 1])
    got = net.numerical_gradient(x, t)
    errs = rel_errors(net, got, book_loop_ld(net, x, t, 1e-4))
    assert max(errs.values()) <= TOL["float64"], errs
    w1 = net.backend.to_numpy(got["W1"])
    assert np.all(w1[[0, 5], :] == 0.0)
    one = net.numerical_gradient(x[3], t[3:4])  # one sample, 1-d
    errs = rel_errors(net, one, book_loop_ld(net, x[3:4], t[3:4], 1e-4))
    assert max(errs.values()) <= TOL["float64"], errs


def test_relu_units_crossing_the_kink(
    backend: xgrad.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pre-activations within h of 0: a perturbation switches the unit on or off, and the
    # loss is not analytic there. Those pairs are evaluated exactly, in chunks.
    net = TwoLayerNet(7, 5, 4, 0.8, activation="relu", backend=backend, seed=7)
    x = sparse_images(6, 7, 0.6, seed=8)
    a1 = x @ net.backend.to_numpy(net.params["W1"])
    b1 = -a1[1, :] + np.array([3e-5, -6e-5, 0.0, 2e-5, -1e-6])  # sample 1 at every kink
    net.params["b1"] = net.backend.asarray(b1, dtype=net.dtype)
    t = np.array([0, 2, 1, 3, 2, 0])
    # Across a kink the quotient moves by (slope jump) * (rounding of a1) / h: ~1e-12 of the
    # gradient between any two roundings of x @ W1 + b1. The perturbation engine rounds a1
    # as the structured gradient does, the longdouble loop does not.
    engine = {k: net.backend.to_numpy(v) for k, v in previous(net, x, t).items()}
    loop = book_loop_ld(net, x, t, 1e-4)
    for chunk in (None, 2):
        got = net.numerical_gradient(x, t, chunk_size=chunk)
        errs = rel_errors(net, got, engine)
        assert max(errs.values()) <= TOL["float64"], (chunk, errs)
        errs = rel_errors(net, got, loop)
        assert max(errs.values()) <= 1e-10, (chunk, errs)
    # The kink pairs matter: without them (every unit treated as on or off) W1 is far off.
    monkeypatch.setattr(_netgrad, "_kink_pairs", lambda xp, *args: xp.zeros_like(args[-3]))
    errs = rel_errors(net, net.numerical_gradient(x, t), engine)
    assert errs["b1"] > 1e-3, errs


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_large_steps_near_the_series_limit_and_beyond(
    backend: xgrad.Backend, activation: str
) -> None:
    # Large pixels and steps: the series needs many orders (or the exact engine takes over);
    # the values stay those of the exact central difference either way.
    net = TwoLayerNet(7, 5, 4, 0.5, activation=activation, backend=backend, seed=9)
    x = 3.0 * sparse_images(6, 7, 0.7, seed=10)
    t = np.array([1, 0, 2, 3, 1, 3])
    for h in (1e-3, 1e-2, 0.3):
        errs = rel_errors(net, net.numerical_gradient(x, t, h), book_loop_ld(net, x, t, h))
        assert max(errs.values()) <= TOL["float64"], (h, errs)


def test_second_layer_exact_where_its_series_would_converge_slowly(
    backend: xgrad.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large ReLU outputs (z1 ~ 50) move the logits by h * z1: beyond the W2 series' bound
    # the W2/b2 differences are evaluated exactly, the W1/b1 series still applies.
    calls: list[int] = []
    real = _netgrad._second_layer

    def spy(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_netgrad, "_second_layer", spy)
    net = TwoLayerNet(7, 5, 4, 0.5, activation="relu", backend=backend, seed=15)
    w1 = 20.0 * np.random.default_rng(16).standard_normal((7, 5))
    net.params["W1"] = net.backend.asarray(w1, dtype=net.dtype)
    x = sparse_images(6, 7, 0.8, seed=17)
    t = np.array([3, 1, 0, 2, 2, 1])
    for h, exact_second in ((1e-4, False), (3e-3, True)):
        errs = rel_errors(net, net.numerical_gradient(x, t, h), book_loop_ld(net, x, t, h))
        assert max(errs.values()) <= TOL["float64"], (h, errs)
        assert bool(calls) is exact_second, h
        calls.clear()


def test_the_series_is_taken_or_declined_by_its_convergence_bound() -> None:
    net = TwoLayerNet(7, 5, 4, 0.5, backend="numpy", seed=9)
    x, target, _, _ = net._difference_setup(
        3.0 * sparse_images(6, 7, 0.7, seed=10), [1, 0, 2, 3, 1, 3], None, None
    )
    args = (net.backend, x, target, net.params, "sigmoid")
    assert _netgrad.structured_gradient(*args, 1e-4, 2**20) is not None
    assert _netgrad.structured_gradient(*args, 0.3, 2**20) is None  # exact engine instead
    assert _netgrad.series_order(1e-4, "float64") == 5
    assert _netgrad.series_order(1 / 16, "float64") == math.ceil(19 * math.log(10) / math.log(16))
    assert _netgrad.series_order(0.07, "float64") is None
    assert _netgrad.series_order(math.nan, "float64") is None


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_equals_the_previous_engine_on_the_books_net(
    backend: xgrad.Backend, activation: str
) -> None:
    # 784-50-10 with MNIST-like images (~20% of pixels non-zero, a border of zero pixels).
    # float64 (float32 against the exact reference above: each new shape and dtype costs
    # JAX rows seconds of compilation).
    dtype = "float64"
    net = TwoLayerNet(784, 50, 10, activation=activation, backend=backend, dtype=dtype, seed=0)
    x = sparse_images(20, 784, 0.2, seed=11).reshape(20, 28, 28)
    x[:, :3, :] = 0.0
    t = np.random.default_rng(12).integers(0, 10, 20)
    got = net.numerical_gradient(x, t)
    ref = {k: net.backend.to_numpy(v).astype(np.float64) for k, v in previous(net, x, t).items()}
    errs = rel_errors(net, got, ref)
    assert max(errs.values()) <= TOL[dtype], errs
    assert np.all(net.backend.to_numpy(got["W1"])[: 3 * 28, :] == 0.0)


def test_accelerator_takes_the_kink_pairs_in_one_chunk(
    backend: xgrad.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The only chunked part of the structured gradient: the ReLU-kink pairs, in
    # cache-sized chunks on a CPU and in one large call on an accelerator, same values.
    import dataclasses

    budgets: list[int] = []
    real = _netgrad._kink_pairs

    def spy(*args):  # type: ignore[no-untyped-def]
        budgets.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_netgrad, "_kink_pairs", spy)
    # The shapes of the 784-50-10 test above: JAX rows reuse its compiled operations.
    x = sparse_images(20, 784, 0.2, seed=13)
    x[:14, :] = 0.0  # 14 all-zero samples: with b1 = 0, 14 * 50 units on their kink
    t = np.random.default_rng(14).integers(0, 10, 20)
    cpu_net = TwoLayerNet(784, 50, 10, activation="relu", backend=backend, seed=0)
    gpu_like = dataclasses.replace(backend, accelerator=True)
    gpu_net = TwoLayerNet(784, 50, 10, activation="relu", backend=gpu_like, seed=0)
    g_cpu, g_gpu = cpu_net.numerical_gradient(x, t), gpu_net.numerical_gradient(x, t)
    pairs_per_chunk = [b // (2 * 785) for b in budgets]  # (2, D + 1, pairs) temporaries
    if not backend.accelerator:
        assert pairs_per_chunk[0] < 14 * 50  # several cache-sized chunks
    assert pairs_per_chunk[1] >= 14 * 50  # one call
    ref = {k: backend.to_numpy(v) for k, v in g_cpu.items()}
    errs = rel_errors(cpu_net, g_gpu, {k: v.astype(np.float64) for k, v in ref.items()})
    assert max(errs.values()) <= 1e-13, errs
