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

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from xgrad._rundir import (
    CHECKPOINT,
    HISTORY,
    Checkpoint,
    CheckpointError,
    RunExistsError,
    RunLock,
    RunLockedError,
    TrainingInterrupted,
    atomic_write,
    read_checkpoint,
    remove_temporary_files,
    remove_unnamed_npz,
    run_files,
    save_checkpoint,
    signal_of,
    write_json,
)
from xgrad.backends import Backend, get_backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError

__all__ = [
    "CheckpointError",
    "RunExistsError",
    "RunLockedError",
    "TrainResult",
    "TrainStep",
    "TrainingDiverged",
    "TrainingInterrupted",
    "plot_history",
    "train",
]

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
    """What a ``callback`` sees after each iteration (raise in it to stop the run).

    ``iteration`` counts the iterations done: 1 after the first. Every iteration number
    xgrad shows or stores is such a count (progress lines, checkpoint names, history).
    """

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
_atomic_write = atomic_write
_write_json = write_json


def _scalar(backend: Backend, value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float(backend.to_numpy(value))


def _scalars(backend: Backend, values: list[Any]) -> list[float]:
    """Python floats of 0-d arrays, in one device-to-host transfer."""
    if len(values) == 1:
        return [_scalar(backend, values[0])]
    return [float(v) for v in backend.to_numpy(backend.xp.stack(values))]


def _diverged(
    loss: float,
    done: int,
    lr: float,
    opt_name: str,
    dtype_name: str,
    last_checkpoint: int | None,
    out_dir: Path | None,
) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (iteration {last_checkpoint}) is kept in {out_dir}"
        if last_checkpoint is not None
        else "no checkpoint was written yet"
    )
    return TrainingDiverged(
        f"the loss is {loss} at iteration {done} (lr={lr}, optimizer={opt_name}, "
        f"dtype={dtype_name}): training diverged; {kept}; try a smaller lr"
    )


def _eta(done: int, iters: int, iter_per_epoch: int, rate: float, timings: dict[str, Any]) -> float:
    """Seconds left: the iterations left at the measured rate, plus the evaluations still to
    come at the measured cost of one."""
    evals = timings["epoch_eval_s"]
    # Epoch evaluations come at iteration indices 0, ipe, 2 ipe...; one more at the end
    # unless the last iteration is such an index.
    next_eval = -(-done // iter_per_epoch) * iter_per_epoch
    evals_left = len(range(next_eval, iters, iter_per_epoch))
    evals_left += 1 if (iters - 1) % iter_per_epoch else 0
    eval_cost = sum(evals) / len(evals) if evals else 0.0
    return (iters - done) / rate + evals_left * eval_cost


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``: a progress bar's remaining time.

    >>> format_duration(42.4), format_duration(185), format_duration(3725)
    ('42s', '3m05s', '1h02m')
    """
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


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

    def update(self, done: int, loss: float, rate: float, eta_s: float | None = None) -> None:
        now = time.perf_counter()
        if not self.bar or (now - self.shown < 0.1 and done < self.total):
            return
        self.shown = now
        filled = int(24 * done / max(self.total, 1))
        line = (
            f"{done}/{self.total} [{'#' * filled}{'.' * (24 - filled)}] "
            f"{100 * done / max(self.total, 1):3.0f}%  loss {loss:.4f}  {rate:.1f} it/s"
        )
        if eta_s is not None and done < self.total and math.isfinite(eta_s):
            line += f"  ETA {format_duration(eta_s)}"
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
    (``pip install -e ".[plot]" in a checkout``).
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
    data: Any, spec: Any, data_dir: Any, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if data is None:
        from xgrad.datasets import load_mnist

        (x, t), (xt, tt) = load_mnist(
            normalize=True,
            flatten=True,
            one_hot_label=False,
            dataset=spec,
            data_dir=data_dir,
            download=download,
        )
    else:
        try:
            (x, t), (xt, tt) = data
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                "data: expected ((x_train, t_train), (x_test, t_test)) as returned by load_mnist"
            ) from None
    arrays = []
    for name, a in (("x_train", x), ("t_train", t), ("x_test", xt), ("t_test", tt)):
        from xgrad._arrays import to_numpy

        a = np.asarray(to_numpy(a))
        if a.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"data: {name} must be numeric, found dtype {a.dtype}")
        arrays.append(a)
    x, t, xt, tt = arrays
    if x.ndim != 2 or xt.ndim != 2 or x.shape[1] != xt.shape[1]:
        raise ArgumentError(
            f"data: expected flattened images (N, features) for train and test, "
            f"found {x.shape} and {xt.shape}"
        )
    if x.shape[0] == 0 or x.shape[0] != t.shape[0] or xt.shape[0] != tt.shape[0]:
        raise ArgumentError(
            f"data: images and labels differ in number: {x.shape[0]} vs "
            f"{t.shape[0]} (train), {xt.shape[0]} vs {tt.shape[0]} (test)"
        )
    return x, t, xt, tt


def _class_count(num_classes: int | None, spec: Any, t: np.ndarray, tt: np.ndarray) -> int:
    """The net's outputs: ``num_classes``, else the one-hot width, else the data set's.

    Never the largest label + 1: a stray label must be an error, not a wider net.
    """
    if num_classes is not None:
        return num_classes
    for labels in (t, tt):
        if labels.ndim == 2:
            return int(labels.shape[1])
    return int(spec.num_classes)


def _one_hot(t: np.ndarray, num_classes: int, name: str, where: Callable[[], str]) -> np.ndarray:
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ArgumentError(
                f"{where()}: {name} one-hot width {t.shape[1]}, expected {num_classes} classes"
            )
        return t.astype(np.float64)
    if t.ndim != 1 or t.dtype.kind not in "biu":
        raise ArgumentError(
            f"{where()}: {name} must be integer class labels (N,) or one-hot (N, C), "
            f"found {t.dtype} of shape {t.shape}"
        )
    outside = np.flatnonzero((t < 0) | (t >= num_classes))
    if outside.size:
        k = int(outside[0])
        raise ArgumentError(
            f"{where()}: {name} holds label {int(t[k])} (at index {k}; {outside.size} labels "
            f"in all) outside [0, {num_classes}) for {num_classes} classes"
        )
    return np.eye(num_classes)[t]


def _label_source(data: Any, spec: Any, data_dir: Any, name: str) -> str:
    """What to call labels in an error: ``data``, or the label file they were read from."""
    if data is not None:
        return "data"
    from xgrad.datasets import find_files

    part = "train_labels" if name == "t_train" else "test_labels"
    try:
        found = find_files(spec, data_dir) or {}
    except (OSError, ValueError, TypeError):
        found = {}
    return str(found.get(part, f"{spec.name} {part.replace('_', ' ')}"))


# -- the run directory -----------------------------------------------------------------------
def _claim_out(
    out_dir: Path, resume: bool, iters: int, stack: contextlib.ExitStack[Any]
) -> tuple[RunLock, Checkpoint | None]:
    """Lock ``out`` for this process and decide, under the lock, what may be written there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError(f"out: {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = stack.enter_context(RunLock(out_dir))
    # Only now, holding the lock: the temporary files cannot be another run's.
    remove_temporary_files(out_dir)
    existing = run_files(out_dir)
    if not resume:
        if existing:
            raise RunExistsError(
                f"out: {out_dir} holds an earlier run ({', '.join(existing)}); pass "
                "resume=True (--resume) to continue it, or choose another directory"
            )
        return lock, None
    found = read_checkpoint(out_dir)
    if found is None and existing:
        raise CheckpointError(
            f"resume: {out_dir} holds a run ({', '.join(existing)}) but no {CHECKPOINT} "
            "to continue it from; these files are left as they are: choose another "
            "directory (--out), or remove them to start afresh"
        )
    if found is not None:
        remove_unnamed_npz(out_dir, found.arrays)
        if iters < found.iteration:
            raise ArgumentError(
                f"iters: the run in {out_dir} has done {found.iteration} iterations, so it "
                f"cannot end at {iters} (--iters {iters}); pass iters >= {found.iteration}"
            )
    return lock, found


def _optimizer_mismatch(
    fresh: dict[str, Any], loaded: dict[str, Any], net: Any, iteration: int, by_name: bool
) -> str | None:
    """Why a loaded optimizer state cannot continue this run (None if it can).

    Checked now rather than met at the next step: other hyperparameters would silently
    change the run, a state array of another shape would fail deep inside an update.
    """
    if loaded.get("hyperparameters") != fresh.get("hyperparameters"):
        return (
            f"optimizer hyperparameters {loaded.get('hyperparameters')!r}, this run's "
            f"{fresh.get('hyperparameters')!r}"
        )
    if by_name and loaded.get("iter") != iteration:
        return f"the optimizer made {loaded.get('iter')!r} steps in {iteration} iterations"
    state = loaded.get("state", {})
    if isinstance(state, dict):
        shapes = {k: tuple(np.shape(v)) for k, v in net.state_dict()["params"].items()}
        for slot, arrays in state.items():
            for key, value in arrays.items() if isinstance(arrays, dict) else ():
                if key in shapes and tuple(np.shape(value)) != shapes[key]:
                    return (
                        f"optimizer state {slot}/{key} has shape {tuple(np.shape(value))}, "
                        f"the parameter {shapes[key]}"
                    )
    return None


def _restore(
    found: Checkpoint,
    out_dir: Path,
    config: dict[str, Any],
    net: Any,
    opt: Any,
    rng: Any,
    by_name: bool,
) -> dict[str, Any]:
    old = found.history["config"]
    diff = [f"{k}: {old.get(k)!r} -> {config[k]!r}" for k in _MUST_MATCH if old.get(k) != config[k]]
    if diff:
        raise ArgumentError(
            f"resume: the run in {out_dir} used other settings ("
            + "; ".join(diff)
            + "); use the same ones or another out"
        )
    fresh = opt.state_dict()
    try:
        net.load_state_dict(found.params)
        opt.load_state_dict(found.optimizer)
        rng.bit_generator.state = found.rng
        loaded = opt.state_dict()
        problem = _optimizer_mismatch(fresh, loaded, net, found.iteration, by_name)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        problem = str(exc)
    if problem:
        raise CheckpointError(
            f"resume: the checkpoint in {out_dir} does not fit this run: {problem}"
        )
    history = found.history
    history["config"] = config
    history["finished"] = False
    history.pop("final", None)
    return history


def _committed(out: Path, last: int | None) -> int | None:
    # The signal may have come after a record was committed but before the loop noted it:
    # the record on disk is what a resume will start from.
    try:
        done = json.loads((out / CHECKPOINT).read_bytes())["iteration"]
    except (OSError, ValueError, KeyError, TypeError):
        return last
    return done if isinstance(done, int) and done > 0 else last


def _interrupted(exc: KeyboardInterrupt, last: int | None, out: Path | None) -> TrainingInterrupted:
    signum = signal_of(exc)
    if out is not None:
        last = _committed(out, last)
    name = signal.Signals(signum).name
    if out is None:
        text = f"interrupted ({name}); nothing was saved (no out directory)"
    elif last is None:
        text = f"interrupted ({name}) before the first checkpoint; nothing to resume in {out}"
    else:
        text = (
            f"interrupted ({name}); the checkpoint at iteration {last} is kept: continue "
            f"with resume=True (--resume --out {out})"
        )
    return TrainingInterrupted(text, signum=signum, iteration=last, out=out)


# -- the loop --------------------------------------------------------------------------------
def train(
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    data: Any = None,
    num_classes: int | None = None,
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
        With ``data``, it gives the number of classes (10 for both).
    data_dir : path-like, optional
        Where to look for (and download) the data first.
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` to use instead of loading ``dataset``;
        images flattened, labels as class numbers or one-hot.
    num_classes : int, optional
        Outputs of the net. Default: the one-hot width, else the classes of ``dataset``
        (10), never the largest label + 1. Labels outside ``[0, num_classes)`` are refused.
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
        The directory is locked for the run: a second writer gets `RunLockedError`.
    resume : bool
        Continue the run checkpointed in ``out``; it ends exactly where the uninterrupted
        run would have. Without ``resume``, an ``out`` that holds any file of a run is
        refused (`RunExistsError`): nothing there is overwritten.
    plot : bool
        Write the two figures at the end (needs matplotlib; in a checkout:
        ``pip install -e ".[plot]"``).
    download : bool
        Allow downloading the data set.
    quiet, progress, stream
        Progress output goes to ``stream`` (stderr): a bar when it is a terminal (or
        ``progress=True``) and one line per epoch; ``quiet`` silences both.
    callback : callable, optional
        Called with a :class:`TrainStep` after every iteration; an exception raised in it
        stops the run (the last epoch's checkpoint stays, so the run can be resumed).
        On an accelerator a callback costs one host synchronization per iteration (it is
        given each iteration's loss as a float); without one, losses stay on the device
        and are converted once per evaluation interval, with the same results.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        The loss became NaN or infinite (the message names the iteration and the last good
        checkpoint, which is left in place).
    TrainingInterrupted
        Ctrl-C (a ``KeyboardInterrupt``); the message says where to resume from.
    RunLockedError
        Another process is writing ``out``.
    RunExistsError
        ``out`` holds a run and ``resume`` is False.
    CheckpointError
        ``resume``: the checkpoint is damaged, truncated or does not fit the run.
    ValueError, TypeError
        A bad argument (named in the message), or other settings than the resumed run's.
    """
    t_start = time.perf_counter()
    for name, value, low in (
        ("iters", iters, 1),
        ("batch_size", batch_size, 1),
        ("hidden", hidden, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ArgumentError(f"{name}: expected an integer >= {low}, found {value!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 2
    ):
        raise ArgumentError(f"num_classes: expected an integer >= 2, found {num_classes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ArgumentError(f"seed: expected a non-negative integer, found {seed!r}")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ArgumentError(f"lr: expected a positive finite number, found {lr!r}")
    if gradient not in _GRADIENTS:
        raise ArgumentError(f"gradient: expected one of {_GRADIENTS}, found {gradient!r}")
    if resume and out is None:
        raise ArgumentError("resume: needs out, the directory of the run to continue")
    from xgrad.datasets import get_spec

    spec = get_spec(dataset)
    iters, batch_size, hidden = int(iters), int(batch_size), int(hidden)
    num_classes = None if num_classes is None else int(num_classes)

    b = get_backend(backend, device)
    fdtype = b.float_dtype(dtype)
    dtype_name = b.dtype_name(fdtype)
    xp = b.xp
    out_dir = Path(out).expanduser() if out is not None else None
    show = _Progress(iters, stream=stream, bar=progress, quiet=quiet)
    with contextlib.ExitStack() as stack:
        found = None
        if out_dir is not None:
            lock, found = _claim_out(out_dir, bool(resume), iters, stack)
            if lock.stale_pid is not None:
                show.note(
                    f"xgrad train: took over the lock of {out_dir} from pid {lock.stale_pid}, "
                    "which is no longer running"
                )
            if found is None and resume:
                show.note(f"xgrad train: no checkpoint in {out_dir}; starting at iteration 0")

        t_load = time.perf_counter()
        x_host, t_host, xt_host, tt_host = _prepare_data(data, spec, data_dir, download)
        classes = _class_count(num_classes, spec, t_host, tt_host)
        onehot = {
            name: _one_hot(
                labels, classes, name, lambda n=name: _label_source(data, spec, data_dir, n)
            )
            for name, labels in (("t_train", t_host), ("t_test", tt_host))
        }
        # Moved and converted once: the book multiplies float32 images by float64 weights at
        # every evaluation, upcasting all 60,000 x 784 values each time.
        x_train = b.asarray(x_host, dtype=fdtype)
        x_test = b.asarray(xt_host, dtype=fdtype)
        t_train = b.asarray(onehot["t_train"], dtype=fdtype)
        t_test = b.asarray(onehot["t_test"], dtype=fdtype)
        del onehot
        b.synchronize(x_train, x_test, t_train, t_test)
        load_s = time.perf_counter() - t_load
        train_size = int(x_host.shape[0])
        iter_per_epoch = max(train_size // batch_size, 1)

        from xgrad.nn import TwoLayerNet

        net = TwoLayerNet(
            int(x_host.shape[1]),
            hidden,
            classes,
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
                raise ArgumentTypeError(
                    "optimizer: expected a name or an object with update(params, "
                    f"grads), state_dict() and load_state_dict(), found {optimizer!r}"
                )
            opt = optimizer
            opt_name = type(optimizer).__name__.lower()
        # A stream of its own for minibatches (not the one that drew the weights).
        rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])

        config = {
            "dataset": spec.name if data is None else "custom",
            "train_size": train_size,
            "test_size": int(xt_host.shape[0]),
            "input_size": int(x_host.shape[1]),
            "output_size": classes,
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
                "iter_s": [],
            },
            "iterations_done": 0,
            "finished": False,
        }
        start = 0
        if found is not None:
            assert out_dir is not None
            history = _restore(
                found, out_dir, config, net, opt, rng, by_name=isinstance(optimizer, str)
            )
            start = found.iteration
            show.note(f"xgrad train: resuming {out_dir} at iteration {start} of {iters}")

        def checkpoint(done: int) -> None:
            assert out_dir is not None
            save_checkpoint(
                out_dir,
                iteration=done,
                params=net.state_dict(),
                optimizer=opt.state_dict(),
                rng=rng,
                history=history,
            )
            write_json(out_dir / HISTORY, history)

        last_checkpoint = start if out_dir is not None and start else None
        timings = history["timings"]
        timings.setdefault("iter_s", [])  # a run checkpointed before they were recorded
        session_iters, session_train_s = 0, 0.0
        loss = math.nan
        errstate = np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")
        # On an accelerator every float(loss) waits for the device: losses stay there and
        # are converted once per evaluation interval, and the minibatch indices of the
        # interval go over in one transfer. A callback sees every loss, so it keeps the
        # per-iteration conversion (documented under `callback`).
        sync_every = iter_per_epoch if b.accelerator and callback is None else 1
        try:
            with errstate:  # a non-finite loss is reported below, clearly, not as warnings
                i = start
                while i < iters:
                    # Blocks end where the book's schedule evaluates (i % ipe == 0) or at the
                    # end, so checkpoints see the generator exactly where they always did.
                    end = min(i + sync_every, iters, i + (-i % iter_per_epoch) + 1)
                    t0 = time.perf_counter()
                    masks = b.asarray(
                        np.stack([rng.choice(train_size, batch_size) for _ in range(i, end)])
                    )
                    pending = []
                    for k in range(end - i):
                        x_batch = xp.take(x_train, masks[k, ...], axis=0)
                        t_batch = xp.take(t_train, masks[k, ...], axis=0)
                        if gradient == "backprop":
                            grads = net._loss_and_gradient_rows(x_batch, t_batch)[1]
                        else:
                            grads = net.numerical_gradient(x_batch, t_batch)
                        opt.update(net.params, grads)
                        pending.append(net._loss_rows(x_batch, t_batch))
                    losses = _scalars(b, pending)
                    # Per iteration where each one was converted; else the block's mean
                    # (an accelerator's iterations overlap: no finer time is measurable).
                    dt = (time.perf_counter() - t0) / len(losses)
                    for loss in losses:
                        i += 1
                        done = i  # every number shown or stored counts iterations done
                        timings["train_s"] += dt
                        timings["iter_s"].append(dt)
                        session_train_s += dt
                        session_iters += 1
                        if not math.isfinite(loss):
                            show.clear()
                            raise _diverged(
                                loss, done, lr, opt_name, dtype_name, last_checkpoint, out_dir
                            )
                        history["train_loss"].append(loss)
                        history["iterations_done"] = done
                    # The book's schedule: evaluate after iterations 1, 1 + iter_per_epoch...
                    if (done - 1) % iter_per_epoch == 0:
                        t1 = time.perf_counter()
                        train_acc = _scalar(b, net.accuracy(x_train, t_train))
                        test_acc = _scalar(b, net.accuracy(x_test, t_test))
                        eval_s = time.perf_counter() - t1
                        timings["eval_s"] += eval_s
                        history["train_acc"].append(train_acc)
                        history["test_acc"].append(test_acc)
                        history["epochs"].append(
                            {"iteration": done, "train_acc": train_acc, "test_acc": test_acc}
                        )
                        timings["epoch_eval_s"].append(eval_s)
                        epoch = len(history["train_acc"]) - 1
                        show.note(
                            f"epoch {epoch:3d}  iter {done:6d}  loss {loss:.4f}  train acc "
                            f"{train_acc:.4f}  test acc {test_acc:.4f}"
                        )
                        if out_dir is not None:
                            timings["total_s"] += time.perf_counter() - t_start
                            t_start = time.perf_counter()
                            checkpoint(done)
                            last_checkpoint = done
                    rate = session_iters / max(session_train_s, 1e-9)
                    show.update(done, loss, rate, _eta(done, iters, iter_per_epoch, rate, timings))
                    if callback is not None:
                        callback(TrainStep(done, loss, net, opt, history))
            show.clear()
            done = history["iterations_done"]
            if done and (not history["epochs"] or history["epochs"][-1]["iteration"] != done):
                # The book evaluates only at epoch starts; the result of the run is measured
                # at its end, kept apart from the per-epoch lists so those stay the book's.
                t1 = time.perf_counter()
                history["final"] = {
                    "iteration": done,
                    "train_acc": _scalar(b, net.accuracy(x_train, t_train)),
                    "test_acc": _scalar(b, net.accuracy(x_test, t_test)),
                }
                timings["eval_s"] += time.perf_counter() - t1
            elif history["epochs"]:
                history["final"] = dict(history["epochs"][-1])
            history["finished"] = True
            timings["total_s"] += time.perf_counter() - t_start
            timings["iters_per_s"] = done / timings["train_s"] if timings["train_s"] > 0 else None
            files: list[Path] = []
            if out_dir is not None:
                checkpoint(done)
                last_checkpoint = done
                files += [out_dir / HISTORY, out_dir / CHECKPOINT]
                if plot:
                    pngs = plot_history(history, out_dir)
                    global _warned_no_matplotlib
                    if not pngs and not _warned_no_matplotlib:
                        _warned_no_matplotlib = True
                        show.note(
                            "xgrad train: matplotlib is not installed, so no figures were "
                            "written (in a checkout: pip install -e '.[plot]')"
                        )
                    files += pngs
        except KeyboardInterrupt as exc:
            show.clear()
            raise _interrupted(exc, last_checkpoint, out_dir) from None
    if "final" in history:
        show.note(
            f"done: {history['iterations_done']} iterations, train acc "
            f"{history['final']['train_acc']:.4f}, test acc "
            f"{history['final']['test_acc']:.4f}, {timings['train_s']:.1f} s training + "
            f"{timings['eval_s']:.1f} s evaluation"
            + (f"; files in {out_dir}" if out_dir is not None else "")
        )
    return TrainResult(net=net, optimizer=opt, history=history, out=out_dir, files=files)
