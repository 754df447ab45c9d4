"""xgrad.training.train: the book's loop, on every backend, with checkpoints and resumption."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad._rundir import LOCK, RunLock
from xgrad.errors import ArgumentError
from xgrad.training import (
    CHECKPOINT,
    HISTORY,
    CheckpointError,
    RunExistsError,
    RunLockedError,
    TrainingDiverged,
    TrainingInterrupted,
    TrainStep,
    train,
)

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
# 120 // 10 = 12 iterations per epoch: evaluations after iterations 1, 13, 25, 37, 49.
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


def test_minibatch_stream_is_the_documented_recipe() -> None:
    from xgrad.random import minibatch_stream

    recipe = np.random.default_rng(np.random.SeedSequence(7).spawn(1)[0])
    stream = minibatch_stream(7, backend="numpy")
    for _ in range(3):
        assert stream.choice(1000, 5).tolist() == recipe.choice(1000, 5).tolist()


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_matches_the_books_loop(activation: str) -> None:
    ref = book_run(**CONFIG, activation=activation)
    result = train(**CONFIG, activation=activation, backend="numpy")
    h = result.history
    np.testing.assert_allclose(h["train_loss"], ref["train_loss"], rtol=1e-10)
    assert h["train_acc"] == ref["train_acc"] and h["test_acc"] == ref["test_acc"]
    # Counts of iterations done, as everywhere: the book evaluates after iterations 1, 13, ...
    assert [e["iteration"] for e in h["epochs"]] == [1, 13, 25, 37, 49]
    for key, value in result.net.state_dict()["params"].items():
        np.testing.assert_allclose(value, ref["params"][key], rtol=1e-10, atol=1e-14)
    assert result.test_acc == ref["final_test_acc"] == h["final"]["test_acc"]
    assert h["final"]["iteration"] == 50 == h["iterations_done"]
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
    # The last epoch's checkpoint: the one written after iteration 1 + 12k <= kill_at.
    assert record["iteration"] == 12 * ((kill_at - 1) // 12) + 1
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
    assert longer.history["final"]["iteration"] == 70
    # Resuming a finished run changes nothing.
    again = train(**{**CONFIG, "iters": 70}, out=tmp_path / "r", resume=True)
    assert again.history["train_loss"] == longer.history["train_loss"]


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train(**CONFIG, out=tmp_path / "r")
    with pytest.raises(ValueError, match=r"other settings \(lr: 1.0 -> 0.1"):
        train(**{**CONFIG, "lr": 0.1}, out=tmp_path / "r", resume=True)
    with pytest.raises(RunExistsError, match="holds an earlier run"):
        train(**CONFIG, out=tmp_path / "r")


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    stream = io.StringIO()
    result = train(**{**CONFIG, "quiet": False}, out=tmp_path / "new", resume=True, stream=stream)
    assert "no checkpoint" in stream.getvalue()
    assert result.history["iterations_done"] == 50


def test_divergence_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    def poison(step: TrainStep) -> None:
        if step.iteration == 31:
            step.net.params["W2"] = step.net.params["W2"] * math.inf

    with pytest.raises(TrainingDiverged, match=r"loss is nan at iteration 32.*iteration 25"):
        train(**CONFIG, out=tmp_path / "r", callback=poison)
    record = json.loads((tmp_path / "r" / CHECKPOINT).read_text())
    assert record["iteration"] == 25
    with np.load(tmp_path / "r" / record["arrays"]) as npz:
        assert all(np.isfinite(npz[k]).all() for k in npz.files)


def test_too_large_learning_rate_diverges() -> None:
    with pytest.raises(TrainingDiverged, match=r"iteration 1 .*no checkpoint.*try a smaller lr"):
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


def test_eta_and_per_iteration_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar's ETA is the measured rate over the iterations left plus the evaluations left."""
    import xgrad._progress as progress
    import xgrad.training as training

    shown: list[tuple[int, float | None]] = []
    real = progress.ProgressBar.update

    def spy(self, done, loss, rate, eta_s=None):  # type: ignore[no-untyped-def]
        shown.append((done, eta_s, rate))
        return real(self, done, loss, rate, eta_s)

    monkeypatch.setattr(progress.ProgressBar, "update", spy)
    bar = io.StringIO()
    result = train(**{**CONFIG, "quiet": False}, progress=True, stream=bar)
    times = result.history["timings"]["iter_s"]
    assert len(times) == CONFIG["iters"] and all(t > 0 for t in times)
    assert sum(times) == pytest.approx(result.history["timings"]["train_s"], rel=1e-9)
    iters, per_epoch = CONFIG["iters"], 10  # 100 training samples, batches of 10
    first_eval = result.history["timings"]["epoch_eval_s"][0]
    done, eta, rate = shown[0]
    # Still to come after iteration 1: evaluations at indices 10, 20, 30, 40, and the final
    # one after iteration 50 (index 49 is not an epoch start).
    later = [i for i in range(iters) if i % per_epoch == 0 and i >= done] + [iters]
    assert eta == pytest.approx((iters - done) / rate + len(later) * first_eval, rel=1e-9)
    done, eta, rate = shown[-1]
    assert done == iters and eta is not None
    assert "ETA" in bar.getvalue()
    assert training.format_duration(3725) == "1h02m"


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


# -- run directories: one writer, nothing overwritten, damaged checkpoints (issue 11) --------
def run_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_a_second_writer_is_refused_while_a_run_holds_out(tmp_path: Path) -> None:
    """The lock is held for the whole run: a resume from inside it is refused, by pid."""
    seen: list[RunLockedError] = []

    def second_writer(step: TrainStep) -> None:
        if step.iteration == 20:  # checkpoints exist: today this resume ran alongside
            with pytest.raises(RunLockedError) as info:
                train(**CONFIG, out=tmp_path / "r", resume=True)
            seen.append(info.value)

    whole = train(**CONFIG, out=tmp_path / "r", callback=second_writer)
    (err,) = seen
    assert err.pid == os.getpid() and err.out == tmp_path / "r"
    assert f"pid {os.getpid()}" in str(err) and str(err).startswith("out: ")
    assert "--out" in str(err)
    # The refused writer changed nothing: the run ends as an undisturbed one.
    alone = train(**CONFIG, out=tmp_path / "alone")
    assert strip_timings(whole.history) == strip_timings(alone.history)
    assert not (tmp_path / "r" / LOCK).exists()  # released at the end


def test_a_held_lock_refuses_a_new_run_before_any_write(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunLockedError, match=rf"out: .*pid {os.getpid()}"):
            train(**CONFIG, out=run)
        assert [p.name for p in run.iterdir()] == [LOCK]
    assert list(run.iterdir()) == []


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    import subprocess

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    run = tmp_path / "r"
    run.mkdir()
    (run / LOCK).write_text(f"{pid}\n")  # what a killed run leaves behind
    stream = io.StringIO()
    result = train(**{**CONFIG, "quiet": False}, out=run, stream=stream)
    assert f"took over the lock of {run} from pid {pid}" in stream.getvalue()
    assert result.history["finished"] and not (run / LOCK).exists()


@pytest.mark.parametrize("remove", [CHECKPOINT, HISTORY])
def test_nothing_in_a_run_directory_is_overwritten_without_resume(
    tmp_path: Path, remove: str
) -> None:
    run = tmp_path / "r"
    train(**CONFIG, out=run, plot=False)
    (run / remove).unlink()  # today: a run without checkpoint.json was overwritten
    before = run_bytes(run)
    with pytest.raises(RunExistsError, match=r"out: .* holds an earlier run \(.*npz") as info:
        train(**{**CONFIG, "seed": 4}, out=run)
    assert isinstance(info.value, ArgumentError)
    assert run_bytes(run) == before
    if remove == CHECKPOINT:
        # Nor with resume: without a record there is nothing to continue, and nothing to
        # overwrite either.
        with pytest.raises(CheckpointError, match=rf"no {CHECKPOINT} to continue it from"):
            train(**CONFIG, out=run, resume=True)
        assert run_bytes(run) == before


def test_an_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ArgumentError, match=r"out: .* is not a directory"):
        train(**CONFIG, out=tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"


def test_resume_with_fewer_iters_than_done_is_an_error(tmp_path: Path) -> None:
    train(**CONFIG, out=tmp_path / "r")  # 50 iterations
    before = run_bytes(tmp_path / "r")
    with pytest.raises(ArgumentError, match=r"iters: .* has done 50 iterations.*--iters 30"):
        train(**{**CONFIG, "iters": 30}, out=tmp_path / "r", resume=True)
    assert run_bytes(tmp_path / "r") == before


def interrupted_run(out: Path, at: int = 29) -> None:
    with pytest.raises(TrainingInterrupted):
        train(**CONFIG, out=out, callback=stop_at(at))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_npz", r"checkpoint-000000025\.npz: the file does not match the SHA-256"),
        ("garbage_npz", r"checkpoint-000000025\.npz: the file does not match the SHA-256"),
        ("truncate_json", r"checkpoint\.json: not valid JSON"),
        ("edit_json", r"checkpoint\.json: the record does not match its SHA-256 digest"),
        ("missing_npz", r"checkpoint-000000025\.npz: its arrays cannot be read"),
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path, damage: str, message: str) -> None:
    run = tmp_path / "r"
    interrupted_run(run)
    npz, record = run / "checkpoint-000000025.npz", run / CHECKPOINT
    if damage == "truncate_npz":  # today: zipfile.BadZipFile from deep inside np.load
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "garbage_npz":
        npz.write_bytes(b"\x00" * 4000)
    elif damage == "truncate_json":
        record.write_bytes(record.read_bytes()[:-40])
    elif damage == "edit_json":  # valid JSON, one number changed
        text = record.read_text()
        assert text.count('"iteration":25,') == 2  # the record's, and the third epoch's
        record.write_text(text.replace('"iteration":25,', '"iteration":24,', 1))
    else:
        npz.unlink()
    with pytest.raises(CheckpointError, match=message) as info:
        train(**CONFIG, out=run, resume=True)
    assert isinstance(info.value, ValueError) and "resume: cannot use the checkpoint" in str(
        info.value
    )


def test_a_version_1_checkpoint_resumes_to_the_same_end(tmp_path: Path) -> None:
    """Runs checkpointed before the numbering fix resume bit for bit, renumbered."""
    whole = train(**CONFIG, out=tmp_path / "whole")
    run = tmp_path / "old"
    interrupted_run(run)
    record = json.loads((run / CHECKPOINT).read_text())
    for key in ("sha256", "arrays_sha256"):
        del record[key]
    record["version"] = 1
    for e in record["history"]["epochs"]:
        e["iteration"] -= 1  # version 1 stored 0-based indices here
    (run / CHECKPOINT).write_text(json.dumps(record))
    resumed = train(**CONFIG, out=run, resume=True)
    assert strip_timings(resumed.history) == strip_timings(whole.history)
    for key, value in whole.net.state_dict()["params"].items():
        np.testing.assert_array_equal(resumed.net.state_dict()["params"][key], value)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    pytest.importorskip("matplotlib", reason="the figures need the plot extra")
    old = os.umask(umask)
    try:
        train(**CONFIG, out=tmp_path / "r")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").iterdir()}
    assert len(modes) == 5  # history, record, npz, two figures
    assert set(modes.values()) == {0o666 & ~umask}  # today: 0o600 (mkstemp's)


def test_iterations_are_counted_the_same_everywhere(tmp_path: Path) -> None:
    """Progress lines, checkpoint names and the history use counts of iterations done."""
    records: list[tuple[int, int, str]] = []

    def look(step: TrainStep) -> None:
        if step.history["epochs"] and step.history["epochs"][-1]["iteration"] == step.iteration:
            record = json.loads((tmp_path / "r" / CHECKPOINT).read_text())
            records.append((step.iteration, record["iteration"], record["arrays"]))

    stream = io.StringIO()
    result = train(**{**CONFIG, "quiet": False}, out=tmp_path / "r", stream=stream, callback=look)
    shown = [int(line.split()[3]) for line in stream.getvalue().splitlines() if " iter " in line]
    assert shown == [1, 13, 25, 37, 49]
    assert records == [(n, n, f"checkpoint-{n:09d}.npz") for n in shown]
    assert result.history["final"]["iteration"] == 50 == result.history["iterations_done"]
    assert (tmp_path / "r" / "checkpoint-000000050.npz").exists()
    assert "done: 50 iterations" in stream.getvalue()


def test_interrupt_is_one_typed_exception_with_the_resume_point(tmp_path: Path) -> None:
    stream = io.StringIO()
    with pytest.raises(TrainingInterrupted) as info:
        train(**{**CONFIG, "quiet": False}, out=tmp_path / "r", stream=stream, callback=stop_at(30))
    err = info.value
    assert isinstance(err, KeyboardInterrupt) and not isinstance(err, Exception)
    assert err.iteration == 25 and err.out == tmp_path / "r"
    assert "iteration 25" in str(err) and "--resume --out" in str(err)
    assert "interrupted" not in stream.getvalue()  # said once, by whoever catches it
    assert not (tmp_path / "r" / LOCK).exists()
    with pytest.raises(TrainingInterrupted, match="nothing was saved"):
        train(**CONFIG, callback=stop_at(3))


# -- the number of classes (issue 11) -------------------------------------------------------
def test_classes_come_from_the_data_set_not_from_the_labels() -> None:
    (x, t), (xt, tt) = DATA
    bad = tt.copy()
    bad[7] = 10  # today: the net was widened to 11 outputs
    with pytest.raises(ArgumentError, match=r"data: t_test holds label 10 \(at index 7.*\[0, 10\)"):
        train(**{**CONFIG, "data": ((x, t), (xt, bad))})
    assert train(**CONFIG).history["config"]["output_size"] == 10  # mnist's, labels 0..2
    three = train(**CONFIG, num_classes=3)
    assert three.history["config"]["output_size"] == 3 and three.net.output_size == 3
    assert three.test_acc >= 0.9
    with pytest.raises(ArgumentError, match=r"t_train holds label [0-9]+ .*\[0, 2\)"):
        train(**CONFIG, num_classes=2)
    onehot = ((x, np.eye(4)[t]), (xt, np.eye(4)[tt]))
    assert train(**{**CONFIG, "data": onehot}).history["config"]["output_size"] == 4
    with pytest.raises(ArgumentError, match="one-hot width 4, expected 5 classes"):
        train(**{**CONFIG, "data": onehot}, num_classes=5)
    for wrong in (1, 2.0, True):
        with pytest.raises(ArgumentError, match="num_classes: expected an integer >= 2"):
            train(**CONFIG, num_classes=wrong)


def test_a_label_outside_num_classes_names_its_file(tmp_path: Path) -> None:
    from xgrad.datasets import write_idx

    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    for stem, n in (("train", 40), ("t10k", 10)):
        t = (np.arange(n) % 4).astype(np.uint8)  # classes 0..3
        x = rng.integers(0, 255, (n, 3, 3)).astype(np.uint8)
        write_idx(tmp_path / "mnist" / f"{stem}-images-idx3-ubyte.gz", x)
        write_idx(tmp_path / "mnist" / f"{stem}-labels-idx1-ubyte.gz", t)
    config = {**CONFIG, "data": None, "data_dir": tmp_path, "download": False}
    assert train(**config).history["config"]["output_size"] == 10  # mnist's classes
    label_file = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    pattern = rf"^{re.escape(str(label_file))}: t_train holds label 3 \(at index 3"
    with pytest.raises(ArgumentError, match=pattern):
        train(**config, num_classes=3)


# -- host synchronizations on an accelerator ---------------------------------------------------
@pytest.fixture
def host_transfers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of device-to-host and host-to-device transfers, on torch tensors.

    Every way Python can read a tensor's value counts (``float()``, ``item()``, ``numpy()``
    ...): on a GPU each one waits for the queued kernels. Host arrays given to
    ``Backend.asarray`` count as host-to-device (a pageable copy that waits as well).
    """
    torch = pytest.importorskip("torch")
    counts = {"to_host": 0, "to_device": 0}
    for name in ("__float__", "__int__", "__bool__", "__index__", "item", "numpy", "tolist"):
        real = getattr(torch.Tensor, name)

        def counting(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            counts["to_host"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    real_asarray = xgrad.Backend.asarray

    def asarray(self: xgrad.Backend, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.owns(obj):
            counts["to_device"] += 1
        return real_asarray(self, obj, *args, **kwargs)

    monkeypatch.setattr(xgrad.Backend, "asarray", asarray)
    return counts


def fake_accelerator() -> xgrad.Backend:
    """torch on the CPU, flagged as an accelerator: train() takes its accelerator path."""
    import dataclasses

    pytest.importorskip("torch")
    return dataclasses.replace(xgrad.get_backend("torch", "cpu"), accelerator=True)


def transfers_per_iteration(counts: dict[str, int], backend: xgrad.Backend) -> dict[str, float]:
    """Transfers per extra iteration: a run of 5 epochs minus a run of 2 (same setup cost)."""
    runs = []
    for iters in (2 * 12, 5 * 12):  # 12 iterations per epoch
        before = dict(counts)
        train(**{**CONFIG, "iters": iters}, backend=backend)
        runs.append({k: counts[k] - before[k] for k in counts})
    return {k: (runs[1][k] - runs[0][k]) / (3 * 12) for k in counts}


def test_no_host_sync_per_iteration_on_an_accelerator(host_transfers: dict[str, int]) -> None:
    plain = transfers_per_iteration(host_transfers, xgrad.get_backend("torch", "cpu"))
    # The counter sees the per-iteration conversions of a CPU row: a loss and the indices.
    assert plain["to_host"] >= 1 and plain["to_device"] >= 1
    fast = transfers_per_iteration(host_transfers, fake_accelerator())
    # Per epoch of 12 iterations: one conversion of the 12 losses, one transfer of their
    # minibatch indices, and the evaluation's (two accuracies: each a target check and a
    # count), nothing per iteration.
    assert fast["to_host"] * 12 <= 5
    assert fast["to_device"] * 12 <= 1


def test_accelerator_path_gives_the_same_run(tmp_path: Path) -> None:
    torch_cpu = train(**CONFIG, backend="torch:cpu", out=tmp_path / "a", plot=False)
    fast = train(**CONFIG, backend=fake_accelerator(), out=tmp_path / "b", plot=False)
    assert fast.history["train_loss"] == torch_cpu.history["train_loss"]
    assert fast.history["epochs"] == torch_cpu.history["epochs"]
    assert fast.history["final"] == torch_cpu.history["final"]
    assert len(fast.history["timings"]["iter_s"]) == CONFIG["iters"]
    for key, value in fast.net.params.items():
        np.testing.assert_array_equal(value.numpy(), torch_cpu.net.params[key].numpy())
    # The checkpoints hold the same generator state: both runs resume alike.
    a = json.loads((tmp_path / "a" / CHECKPOINT).read_text())
    b = json.loads((tmp_path / "b" / CHECKPOINT).read_text())
    assert a["rng"] == b["rng"] and a["iteration"] == b["iteration"] == CONFIG["iters"]


class PoisonAt:
    """SGD that multiplies ``W2`` by inf at its ``n``-th update (no callback needed)."""

    def __init__(self, n: int) -> None:
        from xgrad.optim import SGD

        self.sgd, self.n, self.calls = SGD(lr=CONFIG["lr"]), n, 0

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        self.sgd.update(params, grads)
        self.calls += 1
        if self.calls == self.n:
            params["W2"] = params["W2"] * math.inf

    def state_dict(self) -> dict[str, Any]:
        return self.sgd.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sgd.load_state_dict(state)


def test_divergence_found_at_its_iteration_on_an_accelerator(tmp_path: Path) -> None:
    # Iteration 30 lies inside the block of iterations 26..37, converted after 37.
    with pytest.raises(TrainingDiverged, match=r"loss is nan at iteration 30 .*iteration 25"):
        train(**CONFIG, backend=fake_accelerator(), optimizer=PoisonAt(30), out=tmp_path / "r")
    record = json.loads((tmp_path / "r" / CHECKPOINT).read_text())
    assert record["iteration"] == 25
    history = json.loads((tmp_path / "r" / HISTORY).read_text())
    assert history["iterations_done"] == 25


# -- TrainConfig: the one list of settings -------------------------------------------------------
def test_train_config_is_the_one_list_of_settings() -> None:
    import dataclasses

    from xgrad.cli import build_parser
    from xgrad.training import TrainConfig

    # What a resumed run must share: the settings marked so, and the data's sizes.
    assert set(TrainConfig.must_match()) == {
        "dataset", "train_size", "test_size", "input_size", "output_size", "hidden",
        "activation", "weight_init_std", "batch_size", "lr", "gradient", "optimizer", "seed",
        "dtype",
    }  # fmt: skip
    # Every setting is an option of `xgrad train`, with the setting's default.
    args = build_parser().parse_args(["train"])
    for f in dataclasses.fields(TrainConfig):
        assert getattr(args, f.name) == f.default, f.name
    settings = {k: v for k, v in CONFIG.items() if k not in ("data", "quiet")}
    by_config = train(TrainConfig(**settings), data=DATA, quiet=True)
    by_keywords = train(**CONFIG)
    assert by_config.history["train_loss"] == by_keywords.history["train_loss"]
    # Keywords override the config's fields.
    longer = train(TrainConfig(**settings), data=DATA, quiet=True, iters=CONFIG["iters"] + 1)
    assert longer.history["iterations_done"] == CONFIG["iters"] + 1
    with pytest.raises(TypeError, match=r"unknown settings \['iterations'\]"):
        train(iterations=5)
    with pytest.raises(TypeError, match="config: expected a TrainConfig"):
        train({"iters": 5})  # type: ignore[arg-type]


# -- the numerical gradient on workers -----------------------------------------------------------
def test_numerical_training_on_workers_is_the_same_run() -> None:
    settings = {**CONFIG, "iters": 3, "gradient": "numerical"}
    here = train(**settings)
    spread = train(**settings, workers=2)
    # The book's per-element loop on two processes vs the closed form on this one: the same
    # central differences up to the loop's rounding (eps * loss / h ~ 1e-12 per element).
    np.testing.assert_allclose(spread.history["train_loss"], here.history["train_loss"], rtol=1e-9)
    for key, value in spread.net.params.items():
        np.testing.assert_allclose(value, here.net.params[key], rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="workers: only the numerical gradient"):
        train(**CONFIG, workers=2)


def test_signals_wait_for_the_end_of_a_held_block() -> None:
    # A signal inside np.savez's ZipFile constructor left a half-built object whose
    # __del__ printed "'ZipFile' object has no attribute '_writing'" after the CLI's
    # message (the kill-and-resume soak, XGRAD_SOAK_SEED=726444104): such blocks hold
    # SIGINT and the CLI's SIGTERM until they end, then raise as the signal would have.
    import signal

    from xgrad._rundir import signal_of, signals_held, sigterm_as_interrupt

    done: list[str] = []

    def kill(signum: int, held: bool) -> None:
        with signals_held() if held else contextlib.nullcontext():
            os.kill(os.getpid(), signum)
            np.savez(io.BytesIO(), a=np.ones(3))
            done.append(signal.Signals(signum).name)

    with pytest.raises(KeyboardInterrupt) as caught:
        kill(signal.SIGINT, held=True)
    assert done == ["SIGINT"] and signal_of(caught.value) == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with sigterm_as_interrupt():
        with pytest.raises(KeyboardInterrupt) as caught:
            kill(signal.SIGTERM, held=True)
        assert done[-1] == "SIGTERM" and signal_of(caught.value) == signal.SIGTERM
        # Outside a held block the signal interrupts at once, as before.
        with pytest.raises(KeyboardInterrupt):
            kill(signal.SIGTERM, held=False)
    assert done == ["SIGINT", "SIGTERM"]
