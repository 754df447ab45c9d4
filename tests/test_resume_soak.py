"""Kill and resume soak: a real ``xgrad train`` killed at random points, resumed each time.

Each round starts the run (``--resume`` after the first), waits until it has written a new
checkpoint, waits a random moment more (so the signal lands anywhere: in a step, an
evaluation, between the npz and the record that commits it, in the history write) and
sends SIGKILL, SIGTERM or SIGINT. After the last round the run is resumed to its end, and
its history, parameters, optimizer state and generator state must be bit-identical to
those of an uninterrupted run.

The default is bounded for CI (3 kills, one of each signal); the ``slow`` variant kills
12 times. ``XGRAD_SOAK_SEED`` replays a sequence of kill delays and signals (the seed is in
every failure message); timing still varies from run to run, which is the point.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xgrad.datasets import write_idx

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# The CLI, with Ctrl-C's handler in place even if the test runner ignores SIGINT (a
# background job), which a child would inherit.
CLI = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from xgrad.cli import main; sys.exit(main())",
]
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-format data set: 6x6 images, class c lights up row c."""
    d = tmp_path_factory.mktemp("soak-data")
    rng = np.random.default_rng(1)
    (d / "mnist").mkdir()
    for prefix, n in (("train", 400), ("test", 50)):
        t = rng.integers(0, 4, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 6, 6))
        x[np.arange(n), t, :] += 180
        write_idx(d / "mnist" / NAMES[f"{prefix}_images"], x.astype(np.uint8))
        write_idx(d / "mnist" / NAMES[f"{prefix}_labels"], t)
    return d


def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    e.pop("XGRAD_DATA", None)
    e.pop("XGRAD_BACKEND", None)
    return e


def args(data_dir: Path, out: Path, iters: int) -> list[str]:
    # Adam: optimizer state that must come back exactly too. 400 // 10 = 40 iterations per
    # epoch, so a checkpoint every 40 iterations.
    return [
        "train",
        "--data-dir",
        str(data_dir),
        "--no-download",
        "--iters",
        str(iters),
        "--batch-size",
        "10",
        "--hidden",
        "8",
        "--activation",
        "relu",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--seed",
        "5",
        "--no-plot",
        "--quiet",
        "--out",
        str(out),
    ]


def committed(run: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None  # not written yet


def comparable(history: dict[str, Any]) -> dict[str, Any]:
    h = {k: v for k, v in history.items() if k != "timings"}
    h["config"] = {k: v for k, v in h["config"].items() if k != "device_name"}
    return h


def final_state(run: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    record = json.loads((run / "checkpoint.json").read_text())
    history = json.loads((run / "history.json").read_text())
    with np.load(run / record["arrays"]) as npz:
        arrays = {k: npz[k].dtype.str.encode() + npz[k].tobytes() for k in npz.files}
    return record, history, arrays


def soak(data_dir: Path, tmp_path: Path, kills: int, iters: int) -> None:
    seed = int(os.environ.get("XGRAD_SOAK_SEED") or random.SystemRandom().randrange(2**32))
    rnd = random.Random(seed)
    where = f"(XGRAD_SOAK_SEED={seed})"
    e = env(tmp_path)
    whole = subprocess.run(
        [*CLI, *args(data_dir, tmp_path / "whole", iters)],
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert whole.returncode == 0, whole.stderr

    run = tmp_path / "killed"
    base = args(data_dir, run, iters)
    # Every signal at least once, in a random order, then random ones.
    plan = [*rnd.sample(SIGNALS, len(SIGNALS)), *(rnd.choice(SIGNALS) for _ in range(kills))]
    plan = plan[:kills]
    log: list[str] = []
    done = 0
    for k, sig in enumerate(plan):
        proc = subprocess.Popen(
            [*CLI, *base, *(["--resume"] if k else [])],
            env=e,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                record = committed(run)
                if record is not None and record["iteration"] > done:
                    break
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.1))
            if proc.poll() is None:
                proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        record = committed(run)
        assert record is not None, f"round {k}: no checkpoint {where}: {stderr}"
        finished = record["history"]["finished"]
        log.append(f"{signal.Signals(sig).name} at {record['iteration']} rc {proc.returncode}")
        assert "Traceback" not in stderr, f"round {k} {where} {log}: {stderr}"
        if proc.returncode == 0:
            assert finished, f"round {k} {where} {log}"
            break  # ended before the signal: nothing left to interrupt
        expected = {
            signal.SIGKILL: {-signal.SIGKILL},
            signal.SIGTERM: {128 + signal.SIGTERM},
            signal.SIGINT: {128 + signal.SIGINT},
        }[sig]
        if finished:
            # A SIGTERM after the run had put its handler back is the default kill.
            expected = {*expected, -signal.SIGTERM}
        assert proc.returncode in expected, f"round {k} {where} {log}: {stderr}"
        if sig != signal.SIGKILL:
            assert stderr.count("interrupted") == 1, f"round {k} {where}: {stderr}"
            assert "--resume" in stderr or "before the first checkpoint" in stderr, stderr
        done = record["iteration"]
        if finished:
            break

    last = subprocess.run(
        [*CLI, *base, "--resume"], env=e, capture_output=True, text=True, timeout=300, check=False
    )
    assert last.returncode == 0, f"{where} {log}: {last.stderr}"
    rec_k, hist_k, arrays_k = final_state(run)
    rec_w, hist_w, arrays_w = final_state(tmp_path / "whole")
    assert comparable(hist_k) == comparable(hist_w), f"history differs {where} {log}"
    assert arrays_k == arrays_w, f"parameters or optimizer state differ {where} {log}"
    assert (rec_k["iteration"], rec_k["rng"], rec_k["params"], rec_k["optimizer"]) == (
        rec_w["iteration"],
        rec_w["rng"],
        rec_w["params"],
        rec_w["optimizer"],
    ), f"{where} {log}"
    assert hist_k["iterations_done"] == iters and len(hist_k["train_loss"]) == iters
    # Nothing of the killed processes is left: no temporary files, no lock, one npz.
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoint.json", "history.json", rec_k["arrays"]]
    ), f"{where} {log}"


def test_kill_and_resume_is_bit_identical(data_dir: Path, tmp_path: Path) -> None:
    soak(data_dir, tmp_path, kills=3, iters=1200)


@pytest.mark.slow
def test_kill_and_resume_soak_long(data_dir: Path, tmp_path: Path) -> None:
    soak(data_dir, tmp_path, kills=12, iters=4000)
