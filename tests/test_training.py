"""xgrad.training.train: the book's loop, on every backend, with checkpoints and resumption."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad.training import CHECKPOINT, HISTORY, TrainingDiverged, TrainStep, train

N_TRAIN, N_TEST, FEATURES, CLASSES = 120, 60, 12, 3


def blobs(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Three well separated classes in [0, 1]-ish pixels: class c lights up block c."""
    rng = np.random.default_rng(seed)
    centers = np.kron(np.eye(CLASSES), np.ones(FEATURES // CLASSES))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = rng.integers(0, CLASSES, n).astype(np.uint8)
        x = (centers[t] + 0.15 * rng.standard_normal((n, FEATURES))).astype(np.float32)
        return x, t

    return draw(N_TRAIN), draw(N_TEST)


DATA = blobs()
# 120 // 10 = 12 iterations per epoch: evaluations at 0, 12, 24, 36, 48.
CONFIG: dict[str, Any] = {
    "data": DATA,
    "iters": 50,
    "batch_size": 10,
    "lr": 1.0,
    "hidden": 8,
    "weight_init_std": 0.1,
    "seed": 3,
    "quiet": True,
}


# -- an independent NumPy transcription of the book's loop (ch. 4/5 train_neuralnet.py) -------
def book_forward(p: dict[str, np.ndarray], x: np.ndarray, activation: str) -> tuple[Any, ...]:
    a1 = x @ p["W1"] + p["b1"]
    z1 = 1 / (1 + np.exp(-a1)) if activation == "sigmoid" else np.maximum(a1, 0)
    a2 = z1 @ p["W2"] + p["b2"]
    e = np.exp(a2 - a2.max(axis=1, keepdims=True))
    return a1, z1, e / e.sum(axis=1, keepdims=True), a2


def book_loss(p: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, activation: str) -> float:
    # xgrad's TwoLayerNet drops the book's 1e-7 inside the log (documented in xgrad.nn):
    # the exact cross entropy, through log-softmax.
    a2 = book_forward(p, x, activation)[3]
    a2 = a2 - a2.max(axis=1, keepdims=True)
    log_y = a2 - np.log(np.exp(a2).sum(axis=1, keepdims=True))
    return float(-np.sum(log_y[np.arange(len(t)), t.argmax(axis=1)]) / len(t))


def book_accuracy(p: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, activation: str) -> float:
    y = book_forward(p, x, activation)[2]
    return float(np.sum(y.argmax(axis=1) == t.argmax(axis=1)) / x.shape[0])


def book_gradient(
    p: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, activation: str
) -> dict[str, np.ndarray]:
    a1, z1, y, _ = book_forward(p, x, activation)
    dy = (y - t) / x.shape[0]
    da1 = dy @ p["W2"].T
    da1 = da1 * (1 - z1) * z1 if activation == "sigmoid" else da1 * (a1 > 0)
    return {"W1": x.T @ da1, "b1": da1.sum(axis=0), "W2": z1.T @ dy, "b2": dy.sum(axis=0)}


def book_run(
    iters: int,
    batch_size: int,
    lr: float,
    hidden: int,
    seed: int,
    weight_init_std: float,
    activation: str = "sigmoid",
    **_: Any,
) -> dict[str, Any]:
    (x, t), (xt, tt) = DATA
    x, xt = x.astype(np.float64), xt.astype(np.float64)
    t1, tt1 = np.eye(10)[t], np.eye(10)[tt]
    net = xgrad.nn.TwoLayerNet(
        FEATURES, hidden, 10, weight_init_std, activation=activation, backend="numpy", seed=seed
    )
    p = {k: np.array(v, dtype=np.float64) for k, v in net.state_dict()["params"].items()}
    # xgrad's documented contract: minibatches come from the seed's first spawned stream.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    iter_per_epoch = max(N_TRAIN // batch_size, 1)
    losses, train_acc, test_acc = [], [], []
    for i in range(iters):
        batch_mask = rng.choice(N_TRAIN, batch_size)
        xb, tb = x[batch_mask], t1[batch_mask]
        grad = book_gradient(p, xb, tb, activation)
        for key in ("W1", "b1", "W2", "b2"):
            p[key] -= lr * grad[key]
        losses.append(book_loss(p, xb, tb, activation))
        if i % iter_per_epoch == 0:
            train_acc.append(book_accuracy(p, x, t1, activation))
            test_acc.append(book_accuracy(p, xt, tt1, activation))
    return {
        "train_loss": losses,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "params": p,
        "final_test_acc": book_accuracy(p, xt, tt1, activation),
    }


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_matches_the_books_loop(activation: str) -> None:
    ref = book_run(**CONFIG, activation=activation)
    result = train(**CONFIG, activation=activation, backend="numpy")
    h = result.history
    np.testing.assert_allclose(h["train_loss"], ref["train_loss"], rtol=1e-10)
    assert h["train_acc"] == ref["train_acc"] and h["test_acc"] == ref["test_acc"]
    assert [e["iteration"] for e in h["epochs"]] == [0, 12, 24, 36, 48]
    for key, value in result.net.state_dict()["params"].items():
        np.testing.assert_allclose(value, ref["params"][key], rtol=1e-10, atol=1e-14)
    assert result.test_acc == ref["final_test_acc"] == h["final"]["test_acc"]
    assert h["final"]["iteration"] == 49
    assert result.test_acc >= 0.9  # the blobs are separable: training must have worked


_NUMPY_RUN: dict[str, Any] = {}


def test_same_run_on_every_backend(backend: xgrad.Backend) -> None:
    if not _NUMPY_RUN:
        _NUMPY_RUN.update(train(**CONFIG, backend="numpy").history)
    result = train(**CONFIG, backend=backend)
    h = result.history
    assert h["config"]["backend"] == backend.spec
    for value in result.net.params.values():
        assert backend.owns(value) and backend.dtype_name(value.dtype) == "float64"
    np.testing.assert_allclose(h["train_loss"], _NUMPY_RUN["train_loss"], rtol=1e-9)
    assert h["test_acc"] == _NUMPY_RUN["test_acc"]
    assert h["final"] == _NUMPY_RUN["final"]


def test_float32(backend: xgrad.Backend) -> None:
    if not _NUMPY_RUN:
        _NUMPY_RUN.update(train(**CONFIG, backend="numpy").history)
    result = train(**CONFIG, backend=backend, dtype="float32")
    for value in result.net.params.values():
        assert backend.dtype_name(value.dtype) == "float32"
    assert result.history["config"]["dtype"] == "float32"
    np.testing.assert_allclose(result.history["train_loss"], _NUMPY_RUN["train_loss"], rtol=1e-4)
    assert result.test_acc >= 0.9


@pytest.mark.parametrize("optimizer", ["momentum", "adagrad", "adam"])
def test_optimizers_by_name_and_object(optimizer: str) -> None:
    by_name = train(**{**CONFIG, "lr": 0.05}, optimizer=optimizer)
    obj = xgrad.optim.get_optimizer(optimizer, lr=0.05)
    by_object = train(**{**CONFIG, "lr": 0.05}, optimizer=obj)
    assert by_object.optimizer is obj and obj.iter == CONFIG["iters"]
    assert by_name.history["train_loss"] == by_object.history["train_loss"]
    assert by_name.history["config"]["optimizer"] == optimizer
    assert by_name.history["train_loss"][-1] < by_name.history["train_loss"][0]


def test_numerical_gradient_follows_backprop() -> None:
    config = {**CONFIG, "iters": 4, "hidden": 4}
    backprop = train(**config, gradient="backprop")
    numerical = train(**config, gradient="numerical")
    assert numerical.history["config"]["gradient"] == "numerical"
    np.testing.assert_allclose(
        numerical.history["train_loss"], backprop.history["train_loss"], rtol=1e-6
    )


# -- files: history, figures, checkpoints ------------------------------------------------------
def strip_timings(history: dict[str, Any]) -> dict[str, Any]:
    h = dict(history)
    h.pop("timings")
    h["config"] = {k: v for k, v in h["config"].items() if k != "device_name"}
    return h


def test_files_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the figures need the plot extra")
    result = train(**CONFIG, out=tmp_path / "run")
    run = tmp_path / "run"
    assert set(result.files) == {
        run / HISTORY,
        run / CHECKPOINT,
        run / "loss.png",
        run / "accuracy.png",
    }
    for png in ("loss.png", "accuracy.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / HISTORY).read_text())
    assert saved["train_loss"] == result.history["train_loss"]
    assert saved["finished"] is True and saved["iterations_done"] == 50
    assert set(saved["timings"]) >= {"load_s", "train_s", "eval_s", "total_s", "iters_per_s"}
    assert len(saved["timings"]["epoch_eval_s"]) == 5
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(
        [HISTORY, CHECKPOINT, "checkpoint-000000050.npz", "loss.png", "accuracy.png"]
    )  # no temporary files, one npz


def test_no_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setattr("xgrad.training._warned_no_matplotlib", False)
    stream = io.StringIO()
    train(**{**CONFIG, "quiet": False}, out=tmp_path / "a", stream=stream)
    train(**{**CONFIG, "quiet": False}, out=tmp_path / "b", stream=stream)
    assert stream.getvalue().count("matplotlib is not installed") == 1
    assert not (tmp_path / "a" / "loss.png").exists()
    assert (tmp_path / "a" / HISTORY).exists()


def stop_at(iteration: int) -> Any:
    def callback(step: TrainStep) -> None:
        if step.iteration == iteration:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize(("optimizer", "kill_at"), [("sgd", 29), ("adam", 12), ("momentum", 49)])
def test_resume_ends_where_the_uninterrupted_run_ends(
    tmp_path: Path, optimizer: str, kill_at: int
) -> None:
    config = {**CONFIG, "optimizer": optimizer, "lr": 0.05}
    whole = train(**config, out=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(**config, out=tmp_path / "killed", callback=stop_at(kill_at))
    record = json.loads((tmp_path / "killed" / CHECKPOINT).read_text())
    assert record["iteration"] == 12 * (kill_at // 12) + 1  # the last epoch's checkpoint
    resumed = train(**config, out=tmp_path / "killed", resume=True)
    for key, value in whole.net.state_dict()["params"].items():
        np.testing.assert_array_equal(resumed.net.state_dict()["params"][key], value)
    assert strip_timings(resumed.history) == strip_timings(whole.history)
    a, b = whole.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert a["iter"] == b["iter"] == 50
    for slot in a["state"]:
        for key in a["state"][slot]:
            np.testing.assert_array_equal(a["state"][slot][key], b["state"][slot][key])
    # The files on disk agree too.
    assert strip_timings(json.loads((tmp_path / "killed" / HISTORY).read_text())) == strip_timings(
        json.loads((tmp_path / "whole" / HISTORY).read_text())
    )


def test_resume_on_another_backend_and_longer(tmp_path: Path) -> None:
    whole = train(**{**CONFIG, "iters": 70})
    train(**CONFIG, out=tmp_path / "r")
    longer = train(
        **{**CONFIG, "iters": 70}, out=tmp_path / "r", resume=True, backend="array_api_strict"
    )
    assert longer.history["config"]["backend"].startswith("array_api_strict")
    np.testing.assert_allclose(
        longer.history["train_loss"], whole.history["train_loss"], rtol=1e-12
    )
    assert longer.history["final"]["iteration"] == 69
    # Resuming a finished run changes nothing.
    again = train(**{**CONFIG, "iters": 70}, out=tmp_path / "r", resume=True)
    assert again.history["train_loss"] == longer.history["train_loss"]


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train(**CONFIG, out=tmp_path / "r")
    with pytest.raises(ValueError, match=r"other settings \(lr: 1.0 -> 0.1"):
        train(**{**CONFIG, "lr": 0.1}, out=tmp_path / "r", resume=True)
    with pytest.raises(ValueError, match="holds the checkpoint of an earlier run"):
        train(**CONFIG, out=tmp_path / "r")


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    stream = io.StringIO()
    result = train(**{**CONFIG, "quiet": False}, out=tmp_path / "new", resume=True, stream=stream)
    assert "no checkpoint" in stream.getvalue()
    assert result.history["iterations_done"] == 50


def test_divergence_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    def poison(step: TrainStep) -> None:
        if step.iteration == 30:
            step.net.params["W2"] = step.net.params["W2"] * math.inf

    with pytest.raises(TrainingDiverged, match=r"loss is nan at iteration 31.*iteration 25"):
        train(**CONFIG, out=tmp_path / "r", callback=poison)
    record = json.loads((tmp_path / "r" / CHECKPOINT).read_text())
    assert record["iteration"] == 25
    with np.load(tmp_path / "r" / record["arrays"]) as npz:
        assert all(np.isfinite(npz[k]).all() for k in npz.files)


def test_too_large_learning_rate_diverges() -> None:
    with pytest.raises(TrainingDiverged, match=r"iteration 0.*no checkpoint.*try a smaller lr"):
        train(**{**CONFIG, "lr": 1e308})


# -- progress output ---------------------------------------------------------------------------
def test_progress_bar_and_quiet() -> None:
    bar = io.StringIO()
    train(**{**CONFIG, "quiet": False}, progress=True, stream=bar)
    text = bar.getvalue()
    assert "\r" in text and "it/s" in text and "50/50" in text
    assert text.count("test acc") == 6  # five epochs and the summary

    lines = io.StringIO()  # not a terminal: epoch lines only
    train(**{**CONFIG, "quiet": False}, stream=lines)
    assert "\r" not in lines.getvalue() and lines.getvalue().count("\n") == 6

    silent = io.StringIO()
    train(**CONFIG, progress=True, stream=silent)
    assert silent.getvalue() == ""


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"iters": 0}, ValueError, "iters: expected an integer >= 1"),
        ({"batch_size": 2.5}, ValueError, "batch_size"),
        ({"lr": -1.0}, ValueError, "lr: expected a positive"),
        ({"gradient": "finite"}, ValueError, "gradient: expected one of"),
        ({"seed": -1}, ValueError, "seed"),
        ({"resume": True}, ValueError, "resume: needs out"),
        ({"optimizer": object()}, TypeError, "optimizer: expected a name"),
        ({"optimizer": "lbfgs"}, ValueError, "unknown optimizer"),
        ({"dtype": "int32"}, ValueError, "dtype"),
        ({"backend": "nope"}, ValueError, "backend: unknown name"),
        ({"data": (DATA[0],)}, TypeError, r"data: expected \(\(x_train"),
        ({"data": ((DATA[0][0], DATA[0][1][:5]), DATA[1])}, ValueError, "differ in number"),
        ({"data": ((DATA[0][0].reshape(-1, 3, 4), DATA[0][1]), DATA[1])}, ValueError, "flattened"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        train(**{**CONFIG, **kwargs})
