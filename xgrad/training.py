"""The book's training loop (ch. 4/5 ``train_neuralnet.py``) as a library function.

:func:`train` is what ``xgrad train`` runs. It keeps the book's algorithm -- minibatches
drawn with replacement, one optimizer step each, the loss of the minibatch after the step,
train and test accuracy every ``iter_per_epoch`` iterations -- and adds what a real run
needs: any backend, device and dtype; minibatch indices drawn on the host from the seed, so
every backend sees the same minibatches; a JSON history and the book's two figures; a
progress bar; atomic checkpoints every epoch with exact resumption; and a clear stop when
the loss stops being finite.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from xgrad.backends import Backend, get_backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import XgradError

__all__ = ["TrainResult", "TrainStep", "TrainingDiverged", "plot_history", "train"]

CHECKPOINT = "checkpoint.json"
HISTORY = "history.json"
_FORMAT = "xgrad-train-checkpoint"
_VERSION = 1
# Settings a resumed run must share with the run it continues (iters may grow; the
# backend and device may change: the state is stored as host arrays).
_MUST_MATCH = (
    "dataset",
    "train_size",
    "test_size",
    "input_size",
    "output_size",
    "hidden",
    "activation",
    "weight_init_std",
    "batch_size",
    "lr",
    "gradient",
    "optimizer",
    "seed",
    "dtype",
)
_GRADIENTS = ("backprop", "numerical")


class TrainingDiverged(XgradError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainStep:
    """What a ``callback`` sees after each iteration (raise in it to stop the run)."""

    iteration: int
    loss: float
    net: Any
    optimizer: Any
    history: dict[str, Any]


@dataclass
class TrainResult:
    """The trained net and optimizer, the history, and where the files went."""

    net: Any
    optimizer: Any
    history: dict[str, Any]
    out: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def test_acc(self) -> float | None:
        """Test accuracy after the last iteration (None if the run did not finish)."""
        final = self.history.get("final")
        return final["test_acc"] if final else None

    @property
    def train_acc(self) -> float | None:
        """Accuracy on the whole training set after the last iteration."""
        final = self.history.get("final")
        return final["train_acc"] if final else None


# -- small helpers ---------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1, allow_nan=False).encode()
    _atomic_write(path, lambda f: f.write(data))


def _scalar(backend: Backend, value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float(backend.to_numpy(value))


def _split_state(state: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON part of a (nested) state dict; its arrays go to ``arrays`` under path keys."""
    if isinstance(state, dict):
        return {str(k): _split_state(v, f"{prefix}/{k}", arrays) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [_split_state(v, f"{prefix}/{i}", arrays) for i, v in enumerate(state)]
    if state is None or isinstance(state, bool | int | float | str):
        return state
    if isinstance(state, np.generic):
        return state.item()
    from xgrad._arrays import to_numpy

    arrays[prefix] = np.asarray(to_numpy(state))
    return {"__array__": prefix}


def _join_state(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return np.array(arrays[obj["__array__"]])
        return {k: _join_state(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_state(v, arrays) for v in obj]
    return obj


class _Progress:
    """A one-line progress bar on a terminal, epoch lines otherwise; silent when quiet."""

    def __init__(
        self, total: int, *, stream: IO[str] | None, bar: bool | None, quiet: bool
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = (isatty if bar is None else bar) and not quiet
        self.total = total
        self.shown = 0.0
        self.width = 0

    def note(self, text: str) -> None:
        if not self.quiet:
            self.clear()
            print(text, file=self.stream, flush=True)

    def update(self, done: int, loss: float, rate: float) -> None:
        now = time.perf_counter()
        if not self.bar or (now - self.shown < 0.1 and done < self.total):
            return
        self.shown = now
        filled = int(24 * done / max(self.total, 1))
        line = (
            f"{done}/{self.total} [{'#' * filled}{'.' * (24 - filled)}] "
            f"{100 * done / max(self.total, 1):3.0f}%  loss {loss:.4f}  {rate:.1f} it/s"
        )
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.bar and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


_warned_no_matplotlib = False


def plot_history(history: dict[str, Any], out: str | os.PathLike[str]) -> list[Path]:
    """Write the book's two figures: ``loss.png`` (loss per iteration) and ``accuracy.png``.

    Returns the files written; an empty list if matplotlib is not installed
    (``pip install 'xgrad[plot]'``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    out = Path(out)
    written = []
    # Figure objects directly (no pyplot): no global state, no display needed.
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.arange(len(history["train_loss"])), history["train_loss"], linewidth=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss ({history['config']['dataset']})")
    written.append(out / "loss.png")
    _atomic_write(written[-1], lambda f: fig.savefig(f, format="png", dpi=100))

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = np.arange(len(history["train_acc"]))
    ax.plot(epochs, history["train_acc"], marker="o", label="train acc")
    ax.plot(epochs, history["test_acc"], marker="s", linestyle="--", label="test acc")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.set_title(f"accuracy per epoch ({history['config']['dataset']})")
    ax.legend(loc="lower right")
    written.append(out / "accuracy.png")
    _atomic_write(written[-1], lambda f: fig.savefig(f, format="png", dpi=100))
    return written


# -- data ------------------------------------------------------------------------------------
def _prepare_data(
    data: Any, dataset: str, data_dir: Any, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if data is None:
        from xgrad.datasets import load_mnist

        (x, t), (xt, tt) = load_mnist(
            normalize=True,
            flatten=True,
            one_hot_label=False,
            dataset=dataset,
            data_dir=data_dir,
            download=download,
        )
    else:
        try:
            (x, t), (xt, tt) = data
        except (TypeError, ValueError):
            raise TypeError(
                "data: expected ((x_train, t_train), (x_test, t_test)) as returned by load_mnist"
            ) from None
    arrays = []
    for name, a in (("x_train", x), ("t_train", t), ("x_test", xt), ("t_test", tt)):
        from xgrad._arrays import to_numpy

        a = np.asarray(to_numpy(a))
        if a.dtype.kind not in "biuf":
            raise TypeError(f"data: {name} must be numeric, found dtype {a.dtype}")
        arrays.append(a)
    x, t, xt, tt = arrays
    if x.ndim != 2 or xt.ndim != 2 or x.shape[1] != xt.shape[1]:
        raise ValueError(
            f"data: expected flattened images (N, features) for train and test, "
            f"found {x.shape} and {xt.shape}"
        )
    if x.shape[0] == 0 or x.shape[0] != t.shape[0] or xt.shape[0] != tt.shape[0]:
        raise ValueError(
            f"data: images and labels differ in number: {x.shape[0]} vs "
            f"{t.shape[0]} (train), {xt.shape[0]} vs {tt.shape[0]} (test)"
        )
    return x, t, xt, tt


def _one_hot(t: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ValueError(f"data: {name} one-hot width {t.shape[1]} != {num_classes}")
        return t.astype(np.float64)
    if t.ndim != 1 or t.dtype.kind not in "biu":
        raise ValueError(
            f"data: {name} must be integer class labels (N,) or one-hot (N, C), "
            f"found {t.dtype} of shape {t.shape}"
        )
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"data: {name} has labels outside 0..{num_classes - 1}")
    return np.eye(num_classes)[t]


def _num_classes(t: np.ndarray, tt: np.ndarray) -> int:
    if t.ndim == 2:
        return int(t.shape[1])
    top = max(int(t.max()) if t.size else 0, int(tt.max()) if tt.size else 0)
    return max(top + 1, 10)  # the book's 10 outputs, more if the labels need them


# -- checkpoints -----------------------------------------------------------------------------
def _save_checkpoint(
    out: Path,
    *,
    iteration: int,
    net: Any,
    optimizer: Any,
    rng: np.random.Generator,
    history: dict[str, Any],
) -> Path:
    arrays: dict[str, np.ndarray] = {}
    params = _split_state(net.state_dict(), "params", arrays)
    opt_state = _split_state(optimizer.state_dict(), "optimizer", arrays)
    npz = out / f"checkpoint-{iteration:09d}.npz"
    _atomic_write(npz, lambda f: np.savez(f, **arrays))
    record = {
        "format": _FORMAT,
        "version": _VERSION,
        "iteration": iteration,
        "arrays": npz.name,
        "params": params,
        "optimizer": opt_state,
        "rng": rng.bit_generator.state,
        "history": history,
    }
    # The JSON record is the commit point: it names the npz it belongs to, so a run killed
    # between the two writes still finds a consistent pair.
    _write_json(out / CHECKPOINT, record)
    for old in out.glob("checkpoint-*.npz"):
        if old.name != npz.name:
            old.unlink(missing_ok=True)
    return npz


def _remove_stale_files(out: Path) -> None:
    """Temporary files of a run killed while writing, and npz files no record names."""
    for pattern in (
        ".checkpoint*.tmp",
        f".{HISTORY}.*.tmp",
        ".loss.png.*.tmp",
        ".accuracy.png.*.tmp",
    ):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
    try:
        keep = json.loads((out / CHECKPOINT).read_text()).get("arrays")
    except (OSError, ValueError, AttributeError):
        return
    for path in out.glob("checkpoint-*.npz"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def _load_checkpoint(out: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    path = out / CHECKPOINT
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("format") != _FORMAT:
            raise ValueError("not an xgrad training checkpoint")
        if record.get("version") != _VERSION:
            raise ValueError(
                f"checkpoint format version {record.get('version')}, this xgrad reads {_VERSION}"
            )
        with np.load(out / record["arrays"]) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"resume: cannot read the checkpoint in {out}: {exc}") from None
    return record, arrays


# -- the loop --------------------------------------------------------------------------------
def train(
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    data: Any = None,
    iters: int = 10000,
    batch_size: int = 100,
    lr: float = 0.1,
    hidden: int = 50,
    activation: str = "sigmoid",
    weight_init_std: float = 0.01,
    gradient: str = "backprop",
    optimizer: Any = "sgd",
    backend: str | Backend | None = None,
    device: str | None = None,
    dtype: DtypeLike = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    plot: bool = True,
    download: bool = True,
    quiet: bool = False,
    progress: bool | None = None,
    stream: IO[str] | None = None,
    callback: Callable[[TrainStep], None] | None = None,
) -> TrainResult:
    """Train the book's two-layer net with minibatch gradient descent.

    Parameters
    ----------
    dataset : str
        ``"mnist"`` or ``"fashion-mnist"``, loaded by :func:`xgrad.datasets.load_mnist`.
    data_dir : path-like, optional
        Where to look for (and download) the data first.
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` to use instead of loading ``dataset``;
        images flattened, labels as class numbers or one-hot.
    iters, batch_size, lr, hidden : int, int, float, int
        The book's ``iters_num``, ``batch_size``, ``learning_rate`` and hidden size.
    activation : {"sigmoid", "relu"}
        Hidden activation: sigmoid is the book's ch. 4 net, relu its ch. 5 net.
    weight_init_std : float
        Standard deviation of the initial weights (the book's 0.01).
    gradient : {"backprop", "numerical"}
        How gradients are computed (numerical: the book's ch. 4, very slow on real data).
    optimizer : str or optimizer
        A name for :func:`xgrad.optim.get_optimizer` (``lr`` is passed on) or an optimizer
        object with ``update(params, grads)``, ``state_dict()`` and ``load_state_dict()``.
    backend, device, dtype
        Where and in which float precision to compute (default: the default backend,
        float64). The data are moved to the device and converted once.
    seed : int
        Seeds the initial weights and, separately, the host generator of minibatch indices:
        the same seed gives the same minibatches on every backend.
    out : path-like, optional
        Directory for ``history.json``, ``loss.png``, ``accuracy.png`` and the checkpoint
        (written every epoch). None: nothing is written and ``resume`` is unavailable.
    resume : bool
        Continue the run checkpointed in ``out``; it ends exactly where the uninterrupted
        run would have. Without ``resume``, an ``out`` that holds a checkpoint is refused.
    plot : bool
        Write the two figures at the end (needs matplotlib: ``pip install 'xgrad[plot]'``).
    download : bool
        Allow downloading the data set.
    quiet, progress, stream
        Progress output goes to ``stream`` (stderr): a bar when it is a terminal (or
        ``progress=True``) and one line per epoch; ``quiet`` silences both.
    callback : callable, optional
        Called with a :class:`TrainStep` after every iteration; an exception raised in it
        stops the run (the last epoch's checkpoint stays, so the run can be resumed).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        The loss became NaN or infinite (the message names the iteration and the last good
        checkpoint, which is left in place).
    ValueError, TypeError
        A bad argument (named in the message), or an incompatible checkpoint on resume.
    """
    t_start = time.perf_counter()
    for name, value, low in (
        ("iters", iters, 1),
        ("batch_size", batch_size, 1),
        ("hidden", hidden, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, found {seed!r}")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: expected a positive finite number, found {lr!r}")
    if gradient not in _GRADIENTS:
        raise ValueError(f"gradient: expected one of {_GRADIENTS}, found {gradient!r}")
    if resume and out is None:
        raise ValueError("resume: needs out, the directory of the run to continue")

    b = get_backend(backend, device)
    fdtype = b.float_dtype(dtype)
    dtype_name = b.dtype_name(fdtype)
    xp = b.xp

    t_load = time.perf_counter()
    x_host, t_host, xt_host, tt_host = _prepare_data(data, dataset, data_dir, download)
    num_classes = _num_classes(t_host, tt_host)
    # Moved and converted once: the book multiplies float32 images by float64 weights at
    # every evaluation, upcasting all 60,000 x 784 values each time.
    x_train = b.asarray(x_host, dtype=fdtype)
    x_test = b.asarray(xt_host, dtype=fdtype)
    t_train = b.asarray(_one_hot(t_host, num_classes, "t_train"), dtype=fdtype)
    t_test = b.asarray(_one_hot(tt_host, num_classes, "t_test"), dtype=fdtype)
    b.synchronize(x_train, x_test, t_train, t_test)
    load_s = time.perf_counter() - t_load
    train_size = int(x_host.shape[0])
    iter_per_epoch = max(train_size // batch_size, 1)

    from xgrad.nn import TwoLayerNet

    net = TwoLayerNet(
        int(x_host.shape[1]),
        hidden,
        num_classes,
        weight_init_std,
        activation=activation,
        backend=b,
        dtype=fdtype,
        seed=int(seed),
    )
    if isinstance(optimizer, str):
        from xgrad.optim import get_optimizer

        opt = get_optimizer(optimizer, lr=lr)
        opt_name = optimizer.strip().lower()
    else:
        if not all(hasattr(optimizer, a) for a in ("update", "state_dict", "load_state_dict")):
            raise TypeError(
                "optimizer: expected a name or an object with update(params, "
                f"grads), state_dict() and load_state_dict(), found {optimizer!r}"
            )
        opt = optimizer
        opt_name = type(optimizer).__name__.lower()
    # A stream of its own for minibatches (not the one that drew the weights).
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])

    config = {
        "dataset": dataset if data is None else "custom",
        "train_size": train_size,
        "test_size": int(xt_host.shape[0]),
        "input_size": int(x_host.shape[1]),
        "output_size": num_classes,
        "hidden": hidden,
        "activation": activation,
        "weight_init_std": weight_init_std,
        "iters": iters,
        "batch_size": batch_size,
        "lr": lr,
        "gradient": gradient,
        "optimizer": opt_name,
        "seed": int(seed),
        "dtype": dtype_name,
        "backend": b.spec,
        "device_name": b.device_name or b.device_label,
        "iter_per_epoch": iter_per_epoch,
    }
    history: dict[str, Any] = {
        "config": config,
        "train_loss": [],
        "train_acc": [],
        "test_acc": [],
        "epochs": [],
        "timings": {
            "load_s": load_s,
            "train_s": 0.0,
            "eval_s": 0.0,
            "total_s": 0.0,
            "epoch_eval_s": [],
        },
        "iterations_done": 0,
        "finished": False,
    }
    out_dir = Path(out).expanduser() if out is not None else None
    start = 0
    show = _Progress(iters, stream=stream, bar=progress, quiet=quiet)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_files(out_dir)
        found = _load_checkpoint(out_dir)
        if found is not None and not resume:
            raise ValueError(
                f"out: {out_dir} holds the checkpoint of an earlier run (iteration "
                f"{json.loads((out_dir / CHECKPOINT).read_text()).get('iteration')}); pass "
                "resume=True (--resume) to continue it, or choose another directory"
            )
        if found is None and resume:
            show.note(f"xgrad train: no checkpoint in {out_dir}; starting at iteration 0")
        if found is not None:
            record, arrays = found
            old = record["history"]["config"]
            diff = [
                f"{k}: {old.get(k)!r} -> {config[k]!r}"
                for k in _MUST_MATCH
                if old.get(k) != config[k]
            ]
            if diff:
                raise ValueError(
                    f"resume: the run in {out_dir} used other settings ("
                    + "; ".join(diff)
                    + "); use the same ones or another out"
                )
            net.load_state_dict(_join_state(record["params"], arrays))
            opt.load_state_dict(_join_state(record["optimizer"], arrays))
            rng.bit_generator.state = record["rng"]
            history = record["history"]
            history["config"] = config
            history["finished"] = False
            history.pop("final", None)
            start = int(record["iteration"])
            show.note(f"xgrad train: resuming {out_dir} at iteration {start} of {iters}")

    last_checkpoint = start if out_dir is not None and start else None
    timings = history["timings"]
    session_iters, session_train_s = 0, 0.0
    loss = math.nan
    errstate = np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")
    try:
        with errstate:  # a non-finite loss is reported below, clearly, instead of as warnings
            for i in range(start, iters):
                t0 = time.perf_counter()
                batch_mask = b.asarray(rng.choice(train_size, batch_size).astype(np.int64))
                x_batch = xp.take(x_train, batch_mask, axis=0)
                t_batch = xp.take(t_train, batch_mask, axis=0)
                if gradient == "backprop":
                    grads = net.gradient(x_batch, t_batch)
                else:
                    grads = net.numerical_gradient(x_batch, t_batch)
                opt.update(net.params, grads)
                loss = _scalar(b, net.loss(x_batch, t_batch))
                dt = time.perf_counter() - t0
                timings["train_s"] += dt
                session_train_s += dt
                session_iters += 1
                if not math.isfinite(loss):
                    show.clear()
                    where = (
                        f"the last good checkpoint (iteration {last_checkpoint}) is kept in "
                        f"{out_dir}"
                        if last_checkpoint is not None
                        else "no checkpoint was written yet"
                    )
                    raise TrainingDiverged(
                        f"the loss is {loss} at iteration {i} (lr={lr}, optimizer={opt_name}, "
                        f"dtype={dtype_name}): training diverged; {where}; try a smaller lr"
                    )
                history["train_loss"].append(loss)
                history["iterations_done"] = i + 1
                if i % iter_per_epoch == 0:
                    t1 = time.perf_counter()
                    train_acc = _scalar(b, net.accuracy(x_train, t_train))
                    test_acc = _scalar(b, net.accuracy(x_test, t_test))
                    eval_s = time.perf_counter() - t1
                    timings["eval_s"] += eval_s
                    history["train_acc"].append(train_acc)
                    history["test_acc"].append(test_acc)
                    history["epochs"].append(
                        {"iteration": i, "train_acc": train_acc, "test_acc": test_acc}
                    )
                    timings["epoch_eval_s"].append(eval_s)
                    epoch = len(history["train_acc"]) - 1
                    show.note(
                        f"epoch {epoch:3d}  iter {i:6d}  loss {loss:.4f}  train acc "
                        f"{train_acc:.4f}  test acc {test_acc:.4f}"
                    )
                    if out_dir is not None:
                        timings["total_s"] += time.perf_counter() - t_start
                        t_start = time.perf_counter()
                        _save_checkpoint(
                            out_dir,
                            iteration=i + 1,
                            net=net,
                            optimizer=opt,
                            rng=rng,
                            history=history,
                        )
                        _write_json(out_dir / HISTORY, history)
                        last_checkpoint = i + 1
                show.update(i + 1, loss, session_iters / max(session_train_s, 1e-9))
                if callback is not None:
                    callback(TrainStep(i, loss, net, opt, history))
    except KeyboardInterrupt:
        show.clear()
        if last_checkpoint is not None:
            show.note(
                f"xgrad train: interrupted; continue from iteration {last_checkpoint} "
                f"with resume=True (--resume --out {out_dir})"
            )
        raise
    show.clear()
    last = history["iterations_done"] - 1
    if last >= 0 and (not history["epochs"] or history["epochs"][-1]["iteration"] != last):
        # The book evaluates only at epoch starts; the result of the run is measured at its
        # end, kept apart from the per-epoch lists so those stay the book's.
        t1 = time.perf_counter()
        history["final"] = {
            "iteration": last,
            "train_acc": _scalar(b, net.accuracy(x_train, t_train)),
            "test_acc": _scalar(b, net.accuracy(x_test, t_test)),
        }
        timings["eval_s"] += time.perf_counter() - t1
    elif history["epochs"]:
        history["final"] = dict(history["epochs"][-1])
    history["finished"] = True
    timings["total_s"] += time.perf_counter() - t_start
    timings["iters_per_s"] = (
        history["iterations_done"] / timings["train_s"] if timings["train_s"] > 0 else None
    )
    files: list[Path] = []
    if out_dir is not None:
        _save_checkpoint(
            out_dir,
            iteration=history["iterations_done"],
            net=net,
            optimizer=opt,
            rng=rng,
            history=history,
        )
        _write_json(out_dir / HISTORY, history)
        files += [out_dir / HISTORY, out_dir / CHECKPOINT]
        if plot:
            pngs = plot_history(history, out_dir)
            global _warned_no_matplotlib
            if not pngs and not _warned_no_matplotlib:
                _warned_no_matplotlib = True
                show.note(
                    "xgrad train: matplotlib is not installed, so no figures were "
                    "written (pip install 'xgrad[plot]')"
                )
            files += pngs
    if "final" in history:
        show.note(
            f"done: {history['iterations_done']} iterations, train acc "
            f"{history['final']['train_acc']:.4f}, test acc "
            f"{history['final']['test_acc']:.4f}, {timings['train_s']:.1f} s training + "
            f"{timings['eval_s']:.1f} s evaluation"
            + (f"; files in {out_dir}" if out_dir is not None else "")
        )
    return TrainResult(net=net, optimizer=opt, history=history, out=out_dir, files=files)
