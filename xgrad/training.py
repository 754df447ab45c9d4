"""The book's training loop (ch. 4/5 ``train_neuralnet.py``) as a library function.

:func:`train` is what ``xgrad train`` runs. It keeps the book's algorithm -- minibatches
drawn with replacement, one optimizer step each, the loss of the minibatch after the step,
train and test accuracy every ``iter_per_epoch`` iterations -- and adds what a real run
needs: any backend, device and dtype; minibatch indices drawn on the host from the seed, so
every backend sees the same minibatches; a JSON history and the book's two figures; a
progress bar; atomic checkpoints every epoch with exact resumption; and a clear stop when
the loss stops being finite.

The settings of a run are the fields of :class:`TrainConfig`, listed there once: the CLI's
options, the settings a resumed run must share and the history's ``config`` come from it.
The loop itself is `xgrad._trainloop.fit`; the run directory is `xgrad._checkpointer`'s,
the progress bar `xgrad._progress`'s, the figures `xgrad.plotting`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from xgrad import _checkpointer, _trainloop
from xgrad._progress import ProgressBar, eta, format_duration
from xgrad._rundir import (
    CHECKPOINT,
    HISTORY,
    CheckpointError,
    RunExistsError,
    RunLockedError,
    TrainingInterrupted,
)
from xgrad._traindata import TrainData, load
from xgrad.backends import Backend, get_backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError
from xgrad.plotting import plot_history

__all__ = [
    "CheckpointError",
    "RunExistsError",
    "RunLockedError",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "TrainingDiverged",
    "TrainingInterrupted",
    "format_duration",
    "plot_history",
    "train",
]

GRADIENTS = ("backprop", "numerical")
# Facts of the data that a resumed run must share with the run it continues, besides the
# settings marked resume="match" below.
_DATA_FACTS = ("train_size", "test_size", "input_size", "output_size")


def _meta(help: str, *, resume: str = "match", choices: Any = None) -> dict[str, Any]:
    """A `TrainConfig` field's CLI help, choices, and what a resumed run may change.

    ``resume``: "match" (must equal the checkpointed run's), "grow" (may be larger),
    "free" (may differ: where to compute).
    """
    return {"help": help, "resume": resume, "choices": choices}


def _dataset_names() -> list[str]:
    from xgrad.datasets import DATASETS

    return sorted(DATASETS)


def _optimizer_names() -> list[str]:
    from xgrad.optim import _OPTIMIZERS

    return list(_OPTIMIZERS)


def _float_names() -> tuple[str, ...]:
    from xgrad.backends._base import FLOAT_NAMES

    return FLOAT_NAMES


def _activations() -> tuple[str, ...]:
    from xgrad.nn import ACTIVATIONS

    return ACTIVATIONS


@dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run (defaults: the book's chapter 4 experiment).

    Attributes
    ----------
    dataset : str
        ``"mnist"`` or ``"fashion-mnist"``, loaded by :func:`xgrad.datasets.load_mnist`.
        With ``data``, it gives the number of classes (10 for both).
    iters, batch_size, lr, hidden : int, int, float, int
        The book's ``iters_num``, ``batch_size`` (samples per minibatch), ``learning_rate``
        and ``hidden_size``. Three are named as the CLI's options (``--iters``, ``--lr``,
        ``--hidden``), and the names are the keys of the ``config`` that every run
        directory's history records and that a resumed run is compared against: renaming
        them would stop ``--resume`` from reading the runs already on disk. The book's
        names stay where the book has them: ``TwoLayerNet(input_size, hidden_size,
        output_size)``, ``gradient_descent(..., step_num=)``.
    activation : {"sigmoid", "relu"}
        Hidden activation: sigmoid is the book's ch. 4 net, relu its ch. 5 net.
    weight_init_std : float
        Standard deviation of the initial weights (the book's 0.01).
    gradient : {"backprop", "numerical"}
        How gradients are computed (numerical: the book's ch. 4).
    optimizer : str or optimizer
        A name for :func:`xgrad.optim.get_optimizer` (``lr`` is passed on) or an optimizer
        object with ``update(params, grads)``, ``state_dict()`` and ``load_state_dict()``.
    seed : int
        Seeds the initial weights and, separately, the host generator of minibatch indices
        (:func:`xgrad.random.minibatch_stream`): the same seed gives the same minibatches
        on every backend.
    backend, device, dtype
        Where and in which float precision to compute (default: the default backend,
        float64). A resumed run may move to another backend or device.
    """

    dataset: str = field(
        default="mnist",
        metadata=_meta(
            "data set (fashion-mnist is also the Debian/Ubuntu package dataset-fashion-mnist)",
            choices=_dataset_names,
        ),
    )
    iters: int = field(default=10000, metadata=_meta("iterations", resume="grow"))
    batch_size: int = field(default=100, metadata=_meta("minibatch size"))
    lr: float = field(default=0.1, metadata=_meta("learning rate"))
    hidden: int = field(default=50, metadata=_meta("hidden units"))
    activation: str = field(
        default="sigmoid",
        metadata=_meta("hidden activation (sigmoid: ch. 4; relu: ch. 5)", choices=_activations),
    )
    weight_init_std: float = field(
        default=0.01, metadata=_meta("standard deviation of the initial weights")
    )
    gradient: str = field(
        default="backprop",
        metadata=_meta("backprop (ch. 5) or numerical (ch. 4)", choices=lambda: GRADIENTS),
    )
    optimizer: Any = field(
        default="sgd",
        metadata=_meta("optimizer from xgrad.optim, with --lr", choices=_optimizer_names),
    )
    seed: int = field(
        default=0, metadata=_meta("seed of the initial weights and of the minibatches")
    )
    backend: str | Backend | None = field(
        default=None,
        metadata=_meta(
            "numpy, cupy, torch, jax, array_api_strict, optionally with a device: torch:cuda"
            " (default: $XGRAD_BACKEND or numpy)",
            resume="free",
        ),
    )
    device: str | None = field(
        default=None, metadata=_meta("device of the backend, e.g. cuda:1", resume="free")
    )
    dtype: DtypeLike = field(
        default=None,
        metadata=_meta("float precision (default float64)", choices=_float_names),
    )

    def __post_init__(self) -> None:
        for name, low in (("iters", 1), ("batch_size", 1), ("hidden", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                if name == "seed":
                    raise ArgumentError(f"seed: expected a non-negative integer, found {value!r}")
                raise ArgumentError(f"{name}: expected an integer >= {low}, found {value!r}")
            object.__setattr__(self, name, int(value))
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr):
            raise ArgumentError(f"lr: expected a positive finite number, found {lr!r}")
        if lr <= 0:
            raise ArgumentError(f"lr: expected a positive finite number, found {lr!r}")
        if self.gradient not in GRADIENTS:
            raise ArgumentError(f"gradient: expected one of {GRADIENTS}, found {self.gradient!r}")
        if not isinstance(self.optimizer, str) and not all(
            hasattr(self.optimizer, a) for a in ("update", "state_dict", "load_state_dict")
        ):
            raise ArgumentTypeError(
                "optimizer: expected a name or an object with update(params, "
                f"grads), state_dict() and load_state_dict(), found {self.optimizer!r}"
            )

    @classmethod
    def must_match(cls) -> tuple[str, ...]:
        """Keys of the history's ``config`` that a resumed run must share."""
        names = [f.name for f in dataclasses.fields(cls) if f.metadata["resume"] == "match"]
        return (*names, *_DATA_FACTS)

    def optimizer_name(self) -> str:
        opt = self.optimizer
        return opt.strip().lower() if isinstance(opt, str) else type(opt).__name__.lower()


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


_warned_no_matplotlib = False


def _new_history(cfg: TrainConfig, data: TrainData, b: Backend, name: str) -> dict[str, Any]:
    config = {
        "dataset": name,
        "train_size": data.train_size,
        "test_size": data.test_size,
        "input_size": data.input_size,
        "output_size": data.classes,
        "hidden": cfg.hidden,
        "activation": cfg.activation,
        "weight_init_std": cfg.weight_init_std,
        "iters": cfg.iters,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "gradient": cfg.gradient,
        "optimizer": cfg.optimizer_name(),
        "seed": cfg.seed,
        "dtype": b.dtype_name(b.float_dtype(cfg.dtype)),
        "backend": b.spec,
        "device_name": b.device_name or b.device_label,
        "iter_per_epoch": max(data.train_size // cfg.batch_size, 1),
    }
    timings = {"load_s": data.load_s, "train_s": 0.0, "eval_s": 0.0, "total_s": 0.0}
    return {
        "config": config,
        "train_loss": [],
        "train_acc": [],
        "test_acc": [],
        "epochs": [],
        "timings": {**timings, "epoch_eval_s": [], "iter_s": []},
        "iterations_done": 0,
        "finished": False,
    }


class _Run:
    """One run's state between blocks: the history, the files and what the user sees."""

    def __init__(
        self,
        cfg: TrainConfig,
        net: Any,
        opt: Any,
        data: TrainData,
        b: Backend,
        show: ProgressBar,
        out: Path | None,
        rng: np.random.Generator,
        callback: Callable[[TrainStep], None] | None,
        history: dict[str, Any],
        last_checkpoint: int | None,
    ) -> None:
        self.cfg, self.net, self.opt, self.data, self.b = cfg, net, opt, data, b
        self.show, self.out, self.rng, self.callback = show, out, rng, callback
        self.history = history
        self.timings = history["timings"]
        self.timings.setdefault("iter_s", [])  # a run checkpointed before they were recorded
        self.ipe = history["config"]["iter_per_epoch"]
        self.last_checkpoint = last_checkpoint
        self.t_start = time.perf_counter()
        self.session_iters, self.session_s = 0, 0.0

    def on_block(self, first: int, losses: list[float], seconds: float) -> None:
        # Per iteration where each one was converted; else the block's mean (an
        # accelerator's iterations overlap: no finer time is measurable).
        dt, history = seconds / len(losses), self.history
        done = first
        for loss in losses:
            done += 1  # every number shown or stored counts iterations done
            self.timings["train_s"] += dt
            self.timings["iter_s"].append(dt)
            self.session_s += dt
            self.session_iters += 1
            if not math.isfinite(loss):
                self.show.clear()
                raise self._diverged(loss, done)
            history["train_loss"].append(loss)
            history["iterations_done"] = done
        if (done - 1) % self.ipe == 0:  # the book's schedule: after iterations 1, 1 + ipe...
            self.evaluate(done, loss)
        rate = self.session_iters / max(self.session_s, 1e-9)
        self.show.update(done, loss, rate, eta(done, self.cfg.iters, self.ipe, rate, self.timings))
        if self.callback is not None:
            self.callback(TrainStep(done, loss, self.net, self.opt, history))

    def accuracies(self) -> tuple[float, float, float]:
        """Train and test accuracy of the net now, and the seconds they took."""
        d = self.data
        t1 = time.perf_counter()
        train_acc = float(self.net.accuracy(d.x_train, d.t_train))
        test_acc = float(self.net.accuracy(d.x_test, d.t_test))
        seconds = time.perf_counter() - t1
        self.timings["eval_s"] += seconds
        return train_acc, test_acc, seconds

    def evaluate(self, done: int, loss: float) -> None:
        train_acc, test_acc, seconds = self.accuracies()
        history = self.history
        history["train_acc"].append(train_acc)
        history["test_acc"].append(test_acc)
        history["epochs"].append({"iteration": done, "train_acc": train_acc, "test_acc": test_acc})
        self.timings["epoch_eval_s"].append(seconds)
        self.show.note(
            f"epoch {len(history['train_acc']) - 1:3d}  iter {done:6d}  loss {loss:.4f}  train "
            f"acc {train_acc:.4f}  test acc {test_acc:.4f}"
        )
        if self.out is not None:
            self.timings["total_s"] += time.perf_counter() - self.t_start
            self.t_start = time.perf_counter()
            self.checkpoint(done)

    def checkpoint(self, done: int) -> None:
        assert self.out is not None
        _checkpointer.save(self.out, done, self.net, self.opt, self.rng, self.history)
        self.last_checkpoint = done

    def _diverged(self, loss: float, done: int) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint (iteration {self.last_checkpoint}) is kept in {self.out}"
            if self.last_checkpoint is not None
            else "no checkpoint was written yet"
        )
        return TrainingDiverged(
            f"the loss is {loss} at iteration {done} (lr={self.cfg.lr}, optimizer="
            f"{self.cfg.optimizer_name()}, dtype={self.history['config']['dtype']}): training "
            f"diverged; {kept}; try a smaller lr"
        )

    def summary(self) -> None:
        history, t = self.history, self.timings
        if "final" not in history:
            return
        self.show.note(
            f"done: {history['iterations_done']} iterations, train acc "
            f"{history['final']['train_acc']:.4f}, test acc {history['final']['test_acc']:.4f},"
            f" {t['train_s']:.1f} s training + {t['eval_s']:.1f} s evaluation"
            + (f"; files in {self.out}" if self.out is not None else "")
        )

    def finish(self, plot: bool) -> list[Path]:
        """The result measured at the end, the last checkpoint and the figures."""
        history, timings = self.history, self.timings
        done = history["iterations_done"]
        if done and (not history["epochs"] or history["epochs"][-1]["iteration"] != done):
            # The book evaluates only at epoch starts; the result of the run is measured
            # at its end, kept apart from the per-epoch lists so those stay the book's.
            train_acc, test_acc, _ = self.accuracies()
            history["final"] = {"iteration": done, "train_acc": train_acc, "test_acc": test_acc}
        elif history["epochs"]:
            history["final"] = dict(history["epochs"][-1])
        history["finished"] = True
        timings["total_s"] += time.perf_counter() - self.t_start
        timings["iters_per_s"] = done / timings["train_s"] if timings["train_s"] > 0 else None
        if self.out is None:
            return []
        self.checkpoint(done)
        files = [self.out / HISTORY, self.out / CHECKPOINT]
        if plot:
            pngs = plot_history(history, self.out)
            global _warned_no_matplotlib
            if not pngs and not _warned_no_matplotlib:
                _warned_no_matplotlib = True
                self.show.note(
                    "xgrad train: matplotlib is not installed, so no figures were written "
                    "(in a checkout: pip install -e '.[plot]')"
                )
            files += pngs
        return files


def _settings(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` with ``settings`` (keywords of `train`) in place of its fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(settings) - known:
        raise ArgumentTypeError(
            f"train: unknown settings {sorted(set(settings) - known)}; the settings are the "
            f"fields of TrainConfig: {sorted(known)}"
        )
    if config is not None and not isinstance(config, TrainConfig):
        raise ArgumentTypeError(f"config: expected a TrainConfig, found {config!r}")
    return dataclasses.replace(config or TrainConfig(), **settings)


def _open_out(
    out_dir: Path, resume: bool, iters: int, stack: contextlib.ExitStack[Any], show: ProgressBar
) -> Any:
    """Lock ``out_dir`` for the run; the checkpoint to resume from, if any."""
    lock, found = _checkpointer.claim_out(out_dir, bool(resume), iters, stack)
    if lock.stale_pid is not None:
        show.note(
            f"xgrad train: took over the lock of {out_dir} from pid {lock.stale_pid}, "
            "which is no longer running"
        )
    if found is None and resume:
        show.note(f"xgrad train: no checkpoint in {out_dir}; starting at iteration 0")
    return found


def _model(cfg: TrainConfig, d: TrainData, b: Backend, fdtype: Any) -> tuple[Any, Any]:
    """The book's net for the data, and the optimizer (built by name, or the one given)."""
    from xgrad.nn import TwoLayerNet

    net = TwoLayerNet(
        d.input_size,
        cfg.hidden,
        d.classes,
        cfg.weight_init_std,
        activation=cfg.activation,
        backend=b,
        dtype=fdtype,
        seed=cfg.seed,
    )
    if not isinstance(cfg.optimizer, str):
        return net, cfg.optimizer
    from xgrad.optim import get_optimizer

    return net, get_optimizer(cfg.optimizer, lr=cfg.lr)


def _check_num_classes(num_classes: Any) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ArgumentError(f"num_classes: expected an integer >= 2, found {num_classes!r}")
    if num_classes < 2:
        raise ArgumentError(f"num_classes: expected an integer >= 2, found {num_classes!r}")
    return int(num_classes)


def _check_run_options(cfg: TrainConfig, resume: bool, out: Any, workers: Any) -> None:
    """Refuse options of `train` that contradict each other, before anything is loaded."""
    if resume and out is None:
        raise ArgumentError("resume: needs out, the directory of the run to continue")
    if workers is not None and cfg.gradient != "numerical":
        raise ArgumentError(
            f"workers: only the numerical gradient runs on workers; found gradient="
            f"{cfg.gradient!r} (pass gradient='numerical', or leave workers out)"
        )


def _resumed(
    found: Any,
    out_dir: Path,
    cfg: TrainConfig,
    history: dict[str, Any],
    net: Any,
    opt: Any,
    batches: _trainloop.Minibatches,
    show: ProgressBar,
) -> dict[str, Any]:
    """The checkpointed run's history, with net, optimizer and minibatch stream restored.

    Its settings must match this run's (`TrainConfig.must_match`), and its optimizer
    state the optimizer (checked more strictly for one built by name).
    """
    by_name, must_match = isinstance(cfg.optimizer, str), TrainConfig.must_match()
    recorded = history["config"]
    history = _checkpointer.restore(
        found, out_dir, recorded, net, opt, batches.rng, by_name, must_match
    )
    show.note(f"xgrad train: resuming {out_dir} at iteration {found.iteration} of {cfg.iters}")
    return history


def train(
    config: TrainConfig | None = None,
    *,
    data: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    download: bool = True,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    plot: bool = True,
    quiet: bool = False,
    progress: bool | None = None,
    stream: IO[str] | None = None,
    callback: Callable[[TrainStep], None] | None = None,
    workers: Any = None,
    **settings: Any,
) -> TrainResult:
    """Train the book's two-layer net with minibatch gradient descent.

    ``train(iters=2000, lr=0.1)`` or ``train(TrainConfig(...))``: the settings are the
    fields of :class:`TrainConfig` (given as keywords, they override ``config``'s). The
    other arguments say where the data come from and where the run goes.

    Parameters
    ----------
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` to use instead of loading ``dataset``;
        images flattened, labels as class numbers or one-hot.
    data_dir, download
        Where to look for (and download) the data set first; whether downloading is allowed.
    num_classes : int, optional
        Outputs of the net. Default: the one-hot width, else the classes of ``dataset``
        (10), never the largest label + 1. Labels outside ``[0, num_classes)`` are refused.
    out : path-like, optional
        Directory for ``history.json``, ``loss.png``, ``accuracy.png`` and the checkpoint
        (written every epoch); locked for the run (a second writer gets `RunLockedError`).
    resume : bool
        Continue the run checkpointed in ``out``; it ends exactly where the uninterrupted
        run would have. Without it, an ``out`` holding a run is refused (`RunExistsError`).
    plot : bool
        Write the two figures at the end (needs matplotlib).
    quiet, progress, stream
        Progress goes to ``stream`` (stderr): a bar on a terminal (or ``progress=True``)
        and one line per epoch; ``quiet`` silences both.
    callback : callable, optional
        Called with a :class:`TrainStep` after every iteration; an exception raised in it
        stops the run (the last epoch's checkpoint stays). On an accelerator a callback
        costs one host synchronization per iteration (it is given each loss as a float);
        without one, losses stay on the device and are converted once per evaluation
        interval, with the same results.
    workers : int, executor, map-like, distributed.Client or list of devices, optional
        With ``gradient="numerical"``: each step's gradient is the book's per-element loop
        (two forward passes per element) in chunks on these workers (`xgrad.workers`);
        without, the closed form on this process, far faster on one machine.

    Raises
    ------
    TrainingDiverged, TrainingInterrupted, RunLockedError, RunExistsError, CheckpointError
        A non-finite loss (the last good checkpoint stays), Ctrl-C or SIGTERM (the message
        says how to resume), another writer, an ``out`` holding a run, a checkpoint that is
        damaged or does not fit.
    ValueError, TypeError
        A bad argument (named in the message), or other settings than the resumed run's.
    """
    t_start = time.perf_counter()
    cfg = _settings(config, settings)
    num_classes = _check_num_classes(num_classes)
    _check_run_options(cfg, resume, out, workers)
    from xgrad.datasets import get_spec

    spec = get_spec(cfg.dataset)
    b = get_backend(cfg.backend, cfg.device)
    fdtype = b.float_dtype(cfg.dtype)
    out_dir = Path(out).expanduser() if out is not None else None
    show = ProgressBar(cfg.iters, stream=stream, bar=progress, quiet=quiet)
    with contextlib.ExitStack() as stack:
        found = _open_out(out_dir, resume, cfg.iters, stack, show) if out_dir else None
        d = load(data, spec, data_dir, download, num_classes, b, fdtype)
        net, opt = _model(cfg, d, b, fdtype)
        batches = _trainloop.Minibatches(cfg.seed, d.train_size, cfg.batch_size, b)
        history = _new_history(cfg, d, b, spec.name if data is None else "custom")
        start = 0
        if found is not None:
            assert out_dir is not None
            history = _resumed(found, out_dir, cfg, history, net, opt, batches, show)
            start = found.iteration
        last = start if out_dir is not None and start else None
        run = _Run(cfg, net, opt, d, b, show, out_dir, batches.rng, callback, history, last)
        run.t_start = t_start
        # On an accelerator every float(loss) waits for the device: losses stay there and
        # are converted once per evaluation interval. A callback sees every loss, so it
        # keeps the per-iteration conversion.
        ipe = history["config"]["iter_per_epoch"]
        size = ipe if b.accelerator and callback is None else 1
        errstate = np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")
        try:
            with errstate:  # a non-finite loss is reported clearly, not as warnings
                _trainloop.fit(
                    _trainloop.book_step(net, opt, cfg.gradient, workers=workers),
                    batches,
                    d.x_train,
                    d.t_train,
                    _trainloop.blocks(start, cfg.iters, size, ipe),
                    run.on_block,
                )
            show.clear()
            files = run.finish(plot)
        except KeyboardInterrupt as exc:
            show.clear()
            raise _checkpointer.interrupted(exc, run.last_checkpoint, out_dir) from None
    run.summary()
    return TrainResult(net=net, optimizer=opt, history=history, out=out_dir, files=files)
