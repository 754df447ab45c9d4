"""Run directories of :func:`xgrad.train`: one writer at a time, atomic files, checkpoints.

A run directory (``out=``, ``--out``) holds ``history.json``, the two figures and a
checkpoint: ``checkpoint.json`` (the commit record) and the ``checkpoint-<n>.npz`` it
names. This module owns everything that touches those files:

* :class:`RunLock` -- an advisory lock file held for the whole run, so two processes never
  write the same directory; a lock left by a dead process is taken over.
* :func:`atomic_write` -- temporary file, ``fsync``, ``os.replace``, with the mode a plain
  ``open`` would have given (the umask's), not ``mkstemp``'s 0600.
* :func:`save_checkpoint` / :func:`read_checkpoint` -- the checkpoint format, with SHA-256
  digests of the record and of the npz, and a reader that turns every kind of damage into
  :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np

from xgrad.errors import ArgumentError, XgradError

try:  # POSIX; elsewhere the lock falls back to the pid written in the lock file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CHECKPOINT",
    "HISTORY",
    "LOCK",
    "RUN_FILES",
    "CheckpointError",
    "RunExistsError",
    "RunLock",
    "RunLockedError",
    "TrainingInterrupted",
    "atomic_write",
    "read_checkpoint",
    "save_checkpoint",
    "sigterm_as_interrupt",
]

CHECKPOINT = "checkpoint.json"
HISTORY = "history.json"
LOCK = ".xgrad-train.lock"
FIGURES = ("loss.png", "accuracy.png")
# Files a run writes; an out directory holding any of them holds a run.
RUN_FILES = (HISTORY, CHECKPOINT, *FIGURES)
_NPZ = re.compile(r"checkpoint-[0-9]{9}\.npz")
_FORMAT = "xgrad-train-checkpoint"
# 1: no digests, epoch "iteration" 0-based. 2: digests, every iteration is a count.
_VERSION = 2
_READS = (1, 2)


# -- errors ----------------------------------------------------------------------------------
class RunLockedError(XgradError, RuntimeError):
    """Another process is writing the run directory (it holds the directory's lock).

    Attributes
    ----------
    out : pathlib.Path
        The run directory.
    pid : int or None
        The process holding the lock (None if it had not written its pid yet).
    """

    def __init__(self, message: str, *, out: Path, pid: int | None) -> None:
        super().__init__(message)
        self.out = out
        self.pid = pid


class RunExistsError(ArgumentError):
    """``out`` already holds the files of a run, and ``resume`` was not asked for."""


class CheckpointError(XgradError, ValueError):
    """The checkpoint of a run directory is unreadable, damaged or does not fit the run."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or, under ``xgrad train``, SIGTERM stopped a run.

    A ``KeyboardInterrupt`` (not an ``Exception``), so ``except Exception`` does not swallow
    a user's Ctrl-C. The message says where the run can be continued from.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
    iteration : int or None
        Iterations in the last checkpoint (None: no checkpoint was written).
    out : pathlib.Path or None
        The run directory.
    """

    def __init__(
        self, message: str, *, signum: int, iteration: int | None, out: Path | None
    ) -> None:
        super().__init__(message)
        self.signum = signum
        self.iteration = iteration
        self.out = out


class _Signalled(KeyboardInterrupt):
    """Raised by the SIGTERM handler of :func:`sigterm_as_interrupt`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the program like Ctrl-C (a ``KeyboardInterrupt``).

    Only in the main thread (the only one that can set handlers); the previous handler is
    restored afterwards.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_signalled)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_signalled(signum: int, frame: Any) -> None:
    if _held:
        _hold(signum, frame)
        return
    raise _Signalled(signum)


# Signals received inside `signals_held` blocks (at most the first), and their depth.
_held: list[int] = []
_pending: list[int] = []


def _hold(signum: int, frame: Any) -> None:
    if not _pending:
        _pending.append(signum)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Within the block, SIGINT and `sigterm_as_interrupt`'s SIGTERM wait for its end.

    For library code that a KeyboardInterrupt must not cut: raised inside
    ``zipfile.ZipFile``'s constructor (np.savez, np.load), it leaves a half-built object
    whose ``__del__`` prints a traceback ("'ZipFile' object has no attribute '_writing'")
    after the run's own message. Only in the main thread, the one that receives signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    hold_int = previous is signal.default_int_handler
    if hold_int:
        signal.signal(signal.SIGINT, _hold)
    _held.append(1)
    try:
        yield
    finally:
        _held.pop()
        if hold_int:
            signal.signal(signal.SIGINT, previous)
    if _pending and not _held:
        signum = _pending.pop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Signalled(signum)


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind a ``KeyboardInterrupt`` (SIGINT unless SIGTERM was converted)."""
    return int(getattr(exc, "signum", signal.SIGINT))


# -- files -----------------------------------------------------------------------------------
def _umask() -> int:
    # /proc reads it without changing it; os.umask can only be read by setting it, which
    # would briefly change the mask of every other thread.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it.

    A reader (or a run killed at any moment) sees the old file or the new one, never a
    part. The file gets the umask's mode like any new file, not ``mkstemp``'s 0600.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), file_mode())
        if not hasattr(os, "fchmod"):  # pragma: no cover - Windows
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1, allow_nan=False).encode()
    atomic_write(path, lambda f: f.write(data))


def remove_temporary_files(out: Path) -> None:
    """Temporary files of a run killed while writing (only call it holding the lock)."""
    for name in (CHECKPOINT, HISTORY, *FIGURES, "checkpoint"):
        for path in out.glob(f".{name}*.tmp"):
            path.unlink(missing_ok=True)


def remove_unnamed_npz(out: Path, keep: str | None) -> None:
    """Checkpoint npz files the record does not name (left by a kill between two writes)."""
    if keep is None:
        return
    for path in out.glob("checkpoint-*.npz"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def run_files(out: Path) -> list[str]:
    """Names of the run files in ``out`` (sorted; empty if it holds no run)."""
    names = [n for n in RUN_FILES if (out / n).exists()]
    names += [p.name for p in out.glob("checkpoint-*.npz")]
    return sorted(names)


# -- the lock --------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:  # pragma: no cover - platforms without signal 0
        return True
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0) if hasattr(os, "pread") else b""
        return int(text.split()[0]) if text.split() else None
    except (OSError, ValueError):
        return None


class RunLock:
    """An advisory lock on a run directory, held from :meth:`acquire` to :meth:`release`.

    The lock file ``.xgrad-train.lock`` holds the pid of the process that writes the run,
    and is locked with ``flock``, which the kernel releases when that process ends, however
    it ends: a lock file left by a killed run is therefore free, and is taken over (its
    pid is kept in :attr:`stale_pid`). A second writer gets :class:`RunLockedError`.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / LOCK
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _locked(self, pid: int | None) -> RunLockedError:
        who = f"pid {pid}" if pid is not None else "a process that has not written its pid yet"
        return RunLockedError(
            f"out: {self.out} is being written by another xgrad train ({who}; lock file "
            f"{self.path}); wait for it to end or choose another out (--out)",
            out=self.out,
            pid=pid,
        )

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("RunLock.acquire: already held")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        while True:
            fd = os.open(self.path, flags, 0o666)
            try:
                held = self._try_lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not held:
                pid = _read_pid(fd)
                for _ in range(20):  # the holder may be between its open and its write
                    if pid is not None:
                        break
                    time.sleep(0.005)
                    pid = _read_pid(fd)
                os.close(fd)
                raise self._locked(pid)
            # The holder unlinks the file before it unlocks; if that happened between our
            # open and our flock, we locked a file nobody else will see: start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_pid(fd)
            if previous is not None and previous != os.getpid():
                self.stale_pid = previous
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return

    @staticmethod
    def _try_lock(fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
        # No flock here (or on this file system): the pid in the file decides.
        pid = _read_pid(fd)
        return pid is None or pid == os.getpid() or not _pid_alive(pid)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Unlinked while still locked: see the inode check in acquire.
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


# -- checkpoint state ------------------------------------------------------------------------
def split_state(state: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON part of a (nested) state dict; its arrays go to ``arrays`` under path keys."""
    if isinstance(state, dict):
        return {str(k): split_state(v, f"{prefix}/{k}", arrays) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [split_state(v, f"{prefix}/{i}", arrays) for i, v in enumerate(state)]
    if state is None or isinstance(state, bool | int | float | str):
        return state
    if isinstance(state, np.generic):
        return state.item()
    from xgrad._arrays import to_numpy

    arrays[prefix] = np.asarray(to_numpy(state))
    return {"__array__": prefix}


def join_state(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if not isinstance(key, str) or key not in arrays:
                raise KeyError(f"array {key!r} is not in the npz")
            return np.array(arrays[key])
        return {k: join_state(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_state(v, arrays) for v in obj]
    return obj


def _canonical(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


def npz_name(iteration: int) -> str:
    return f"checkpoint-{iteration:09d}.npz"


def save_checkpoint(
    out: Path,
    *,
    iteration: int,
    params: Any,
    optimizer: Any,
    rng: np.random.Generator,
    history: dict[str, Any],
) -> Path:
    """Write ``checkpoint-<iteration>.npz`` and then ``checkpoint.json``, which commits it."""
    arrays: dict[str, np.ndarray] = {}
    params_json = split_state(params, "params", arrays)
    opt_json = split_state(optimizer, "optimizer", arrays)
    buffer = io.BytesIO()
    with signals_held():
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs: no **kwargs overload
    data = buffer.getvalue()
    npz = out / npz_name(iteration)
    atomic_write(npz, lambda f: f.write(data))
    record: dict[str, Any] = {
        "format": _FORMAT,
        "version": _VERSION,
        "iteration": iteration,
        "arrays": npz.name,
        "arrays_sha256": hashlib.sha256(data).hexdigest(),
        "params": params_json,
        "optimizer": opt_json,
        "rng": rng.bit_generator.state,
        "history": history,
    }
    # Serialised once: the canonical text is both what is hashed and what is written, with
    # the digest spliced in as the first key (a reader recomputes it from the parsed record).
    text = _canonical(record)
    digest = hashlib.sha256(text.encode()).hexdigest()
    committed = f'{{"sha256":"{digest}",{text[1:]}'.encode()
    # The JSON record is the commit point: it names the npz it belongs to, so a run killed
    # between the two writes still finds a consistent pair.
    atomic_write(out / CHECKPOINT, lambda f: f.write(committed))
    remove_unnamed_npz(out, npz.name)
    return npz


@dataclass
class Checkpoint:
    """A checkpoint as read back: the iteration count, states and history, all checked."""

    iteration: int
    params: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    history: dict[str, Any]
    arrays: str


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_HISTORY_KEYS = {
    "config",
    "train_loss",
    "train_acc",
    "test_acc",
    "epochs",
    "timings",
    "iterations_done",
    "finished",
}
_EPOCH_KEYS = {"iteration", "train_acc", "test_acc"}
_TIMING_KEYS = {"load_s", "train_s", "eval_s", "total_s", "epoch_eval_s"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def check_history(history: Any, iteration: int, *, first: int = 1) -> None:
    """Check a run's history as :func:`xgrad.train` writes it after ``iteration`` iterations.

    ``first`` is the number the first evaluation carries (1; 0 in version 1 checkpoints).
    Raises ValueError naming the first thing that is not as a run writes it.
    """
    if not isinstance(history, dict):
        raise ValueError(f"history is {type(history).__name__}, not an object")
    keys = set(history) - {"final"}
    if keys != _HISTORY_KEYS:
        raise ValueError(f"history has keys {sorted(keys)}, expected {sorted(_HISTORY_KEYS)}")
    config = history["config"]
    per_epoch = config.get("iter_per_epoch") if isinstance(config, dict) else None
    if not _is_count(per_epoch) or per_epoch < 1:
        raise ValueError("history: config is missing or has no iter_per_epoch")
    if history["iterations_done"] != iteration or not _is_count(history["iterations_done"]):
        raise ValueError(
            f"the record says {iteration} iterations, the history {history['iterations_done']!r}"[
                :200
            ]
        )
    losses = history["train_loss"]
    if not isinstance(losses, list) or len(losses) != iteration:
        raise ValueError(f"history: expected {iteration} losses")
    if not all(_is_number(v) for v in losses):
        raise ValueError("history['train_loss'] holds something other than finite numbers")
    epochs = history["epochs"]
    if not isinstance(epochs, list) or not all(
        isinstance(e, dict)
        and set(e) == _EPOCH_KEYS
        and _is_fraction(e["train_acc"])
        and _is_fraction(e["test_acc"])
        for e in epochs
    ):
        raise ValueError("history['epochs'] is damaged")
    # The book's schedule: an evaluation after iterations 1, 1 + iter_per_epoch, ...
    schedule = list(range(first, first + iteration, per_epoch))
    if [e["iteration"] for e in epochs] != schedule:
        raise ValueError("history: the evaluations are not at the epochs of the run")
    for key in ("train_acc", "test_acc"):
        if history[key] != [e[key] for e in epochs]:
            raise ValueError(f"history[{key!r}] does not match the epochs")
    timings = history["timings"]
    if (
        not isinstance(timings, dict)
        or not _TIMING_KEYS <= set(timings) <= {*_TIMING_KEYS, "iters_per_s", "iter_s"}
        or not all(_is_number(timings[k]) for k in _TIMING_KEYS - {"epoch_eval_s"})
        or not isinstance(timings["epoch_eval_s"], list)
        or len(timings["epoch_eval_s"]) != len(epochs)
        or not all(_is_number(v) for v in timings["epoch_eval_s"])
        or not (timings.get("iters_per_s") is None or _is_number(timings["iters_per_s"]))
        # Per-iteration seconds; older runs have none, so fewer than the iterations done.
        or not isinstance(timings.get("iter_s", []), list)
        or len(timings.get("iter_s", [])) > len(losses)
        or not all(_is_number(v) and v >= 0 for v in timings.get("iter_s", []))
    ):
        raise ValueError("history['timings'] is damaged")
    finished = history["finished"]
    if not isinstance(finished, bool) or finished != ("final" in history):
        raise ValueError("history: 'finished' and 'final' disagree")
    final = history.get("final")
    if final is not None and (
        not isinstance(final, dict)
        or set(final) != _EPOCH_KEYS
        or final["iteration"] != iteration - 1 + first
        or not _is_fraction(final["train_acc"])
        or not _is_fraction(final["test_acc"])
    ):
        raise ValueError("history['final'] is damaged")


def _migrate_v1(history: dict[str, Any]) -> None:
    # Version 1 numbered evaluations by the 0-based index of the iteration before them.
    for e in history["epochs"]:
        e["iteration"] += 1
    if isinstance(history.get("final"), dict):
        history["final"]["iteration"] += 1


def _load_npz(data: bytes) -> dict[str, np.ndarray]:
    with warnings.catch_warnings(), signals_held():
        warnings.simplefilter("error")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def read_checkpoint(out: Path) -> Checkpoint | None:
    """The checkpoint in ``out``, checked; None if there is no ``checkpoint.json``.

    Raises
    ------
    CheckpointError
        The record or its npz is unreadable, truncated, damaged (digest mismatch),
        of another format or version, or inconsistent; the message names the file.
    """
    path = out / CHECKPOINT
    if not path.exists():
        return None

    def bad(what: str, file: Path = path) -> CheckpointError:
        return CheckpointError(
            f"resume: cannot use the checkpoint {file}: {what}. Start a new run in another "
            "out (--out), or remove the run's files to start this one afresh"
        )

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise bad(f"cannot read it ({exc.strerror or exc})") from None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad(f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise bad("not an xgrad training checkpoint")
    version = record.get("version")
    if type(version) is not int or version not in _READS:
        raise bad(f"format version {version!r}; this xgrad reads versions {_READS}")
    if version >= 2:
        try:
            digest = _digest(record)
        except (ValueError, TypeError) as exc:
            raise bad(f"damaged record ({exc})") from None
        if record.get("sha256") != digest:
            raise bad("the record does not match its SHA-256 digest (damaged or edited)")
    iteration = record.get("iteration")
    if not _is_count(iteration):
        raise bad(f"bad iteration {iteration!r}"[:200])
    name = record.get("arrays")
    if not isinstance(name, str) or not _NPZ.fullmatch(name):
        raise bad(f"bad npz name {name!r}"[:200])
    npz_path = out / name
    try:
        data = npz_path.read_bytes()
    except OSError as exc:
        raise bad(f"its arrays cannot be read ({exc.strerror or exc})", npz_path) from None
    if version >= 2 and hashlib.sha256(data).hexdigest() != record.get("arrays_sha256"):
        raise bad("the file does not match the SHA-256 digest in checkpoint.json", npz_path)
    try:
        arrays = _load_npz(data)
    except Exception as exc:
        # NumPy's and zipfile's parsers raise many types on damaged bytes (BadZipFile,
        # EOFError, ValueError, zlib.error, MemoryError for a huge stated shape, ...).
        raise bad(f"not a readable npz ({type(exc).__name__}: {str(exc)[:80]})", npz_path) from None
    odd = sorted(k for k, a in arrays.items() if a.dtype.kind != "f")
    if odd:
        raise bad(f"arrays that are not floating point: {', '.join(odd)}"[:200], npz_path)
    try:
        params = join_state(record.get("params"), arrays)
        optimizer = join_state(record.get("optimizer"), arrays)
    except (KeyError, TypeError, RecursionError) as exc:
        raise bad(f"the record and the npz do not match ({exc})") from None
    if not isinstance(params, dict) or not isinstance(optimizer, dict):
        raise bad("no parameter or optimizer state")
    state: Any = record.get("rng")
    try:
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise bad(f"bad random generator state ({type(exc).__name__})") from None
    history: Any = record.get("history")
    try:
        check_history(history, iteration, first=0 if version == 1 else 1)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if version == 1:
        _migrate_v1(history)
    return Checkpoint(iteration, params, optimizer, state, history, name)
