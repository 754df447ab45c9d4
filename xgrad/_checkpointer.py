"""The run directory of a training run: claimed under a lock, checkpointed, resumed."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np

from xgrad._rundir import (
    CHECKPOINT,
    HISTORY,
    Checkpoint,
    CheckpointError,
    RunExistsError,
    RunLock,
    TrainingInterrupted,
    read_checkpoint,
    remove_temporary_files,
    remove_unnamed_npz,
    run_files,
    save_checkpoint,
    signal_of,
    write_json,
)
from xgrad.errors import ArgumentError

__all__ = ["claim_out", "interrupted", "restore", "save"]


def claim_out(
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


def optimizer_mismatch(
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


def restore(
    found: Checkpoint,
    out_dir: Path,
    config: dict[str, Any],
    net: Any,
    opt: Any,
    rng: Any,
    by_name: bool,
    must_match: tuple[str, ...],
) -> dict[str, Any]:
    """The history of the checkpointed run, with the net, optimizer and generator restored.

    ``must_match``: the settings the run must share with the one it continues.
    """
    old = found.history["config"]
    diff = [f"{k}: {old.get(k)!r} -> {config[k]!r}" for k in must_match if old.get(k) != config[k]]
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
        problem = optimizer_mismatch(fresh, loaded, net, found.iteration, by_name)
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


def interrupted(exc: KeyboardInterrupt, last: int | None, out: Path | None) -> TrainingInterrupted:
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


def save(out_dir: Path, done: int, net: Any, opt: Any, rng: Any, history: dict[str, Any]) -> None:
    """The checkpoint at ``done`` iterations, then the history beside it (both atomic)."""
    save_checkpoint(
        out_dir,
        iteration=done,
        params=net.state_dict(),
        optimizer=opt.state_dict(),
        rng=rng,
        history=history,
    )
    write_json(out_dir / HISTORY, history)
