"""``xgrad train`` and ``xgrad gradcheck`` through xgrad.cli.main, and one real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xgrad.cli import main
from xgrad.datasets import write_idx

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def make_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """6x6 images: class c lights up row c (an easy, MNIST-format task)."""
    t = rng.integers(0, 4, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, 6, 6))
    x[np.arange(n), t, :] += 180
    return x.astype(np.uint8), t


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (x, t), (xt, tt) = make_images(rng, 200), make_images(rng, 50)
    (d / "mnist").mkdir()
    for part, array in (
        ("train_images", x),
        ("train_labels", t),
        ("test_images", xt),
        ("test_labels", tt),
    ):
        write_idx(d / "mnist" / NAMES[part], array)
    return d


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XGRAD_DATA", raising=False)
    monkeypatch.delenv("XGRAD_BACKEND", raising=False)


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-dir",
        str(data_dir),
        "--no-download",
        "--iters",
        "40",
        "--batch-size",
        "20",
        "--lr",
        "0.5",
        "--hidden",
        "10",
        "--activation",
        "relu",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_train(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="the figures need the plot extra")
    assert main(train_args(data_dir, tmp_path / "run")) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("test accuracy ") and "after 40 iterations" in out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["config"]["iter_per_epoch"] == 10 and len(history["test_acc"]) == 4
    assert float(out.split()[2]) == round(history["final"]["test_acc"], 4)
    assert history["final"]["test_acc"] >= 0.9
    assert (tmp_path / "run" / "accuracy.png").exists()


def test_train_options_reach_the_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(
        data_dir,
        tmp_path / "run",
        "--backend",
        "torch",
        "--dtype",
        "float32",
        "--activation",
        "relu",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--seed",
        "7",
        "--no-plot",
    )
    pytest.importorskip("torch")
    assert main(args) == 0
    cfg = json.loads((tmp_path / "run" / "history.json").read_text())["config"]
    assert (
        cfg["backend"],
        cfg["dtype"],
        cfg["activation"],
        cfg["optimizer"],
        cfg["lr"],
        cfg["seed"],
    ) == ("torch:cpu", "float32", "relu", "adam", 0.01, 7)
    assert not (tmp_path / "run" / "loss.png").exists()
    capsys.readouterr()


def test_resume(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(data_dir, tmp_path / "whole")) == 0
    assert main([*train_args(data_dir, tmp_path / "part"), "--iters", "25"]) == 0
    assert main([*train_args(data_dir, tmp_path / "part"), "--resume"]) == 0
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    part = json.loads((tmp_path / "part" / "history.json").read_text())
    assert part["train_loss"] == whole["train_loss"] and part["final"] == whole["final"]
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume", "--out", ""], "--resume needs --out"),
        (["--backend", "nope"], "backend: unknown name 'nope'"),
        (["--iters", "0"], "iters: expected an integer >= 1"),
        (["--lr", "1e308"], "training diverged"),
    ],
)
def test_errors_are_one_line(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main([*train_args(data_dir, tmp_path / "run"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xgrad train: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_data_says_how_to_get_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(tmp_path / "empty"),
            "--no-download",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "mnist data not found" in err and "XGRAD_DATA" in err and "--data-dir" in err
    assert "dataset-fashion-mnist" in err and err.count("\n") == 1


def test_refuses_to_overwrite_a_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(train_args(data_dir, tmp_path / "run")) == 0
    assert main(train_args(data_dir, tmp_path / "run")) == 1
    assert "--resume" in capsys.readouterr().err


def test_default_out_is_a_new_directory(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a for a in train_args(data_dir, tmp_path) if a not in ("--out", str(tmp_path))]
    assert main(args) == 0
    assert main(args) == 0
    runs = sorted(p.name for p in (tmp_path / "xgrad-runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("mnist-") for r in runs)
    capsys.readouterr()


def test_subprocess_smoke(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", *train_args(data_dir, tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test accuracy")
    assert (tmp_path / "run" / "checkpoint.json").exists()


def test_numerical_gradient_on_workers_in_a_subprocess(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    runs = {}
    for name, extra in (("here", []), ("pool", ["--workers", "2"])):
        args = train_args(data_dir, tmp_path / name, "--gradient", "numerical", "--no-plot")
        args[args.index("--iters") + 1] = "3"
        proc = subprocess.run(
            [sys.executable, "-m", "xgrad.cli", *args, *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((tmp_path / name / "history.json").read_text())
    # The loop on workers vs the closed form here: equal up to the loop's rounding.
    np.testing.assert_allclose(runs["pool"]["train_loss"], runs["here"]["train_loss"], rtol=1e-9)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "xgrad.cli",
            *train_args(data_dir, tmp_path / "b"),
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode != 0 and "workers: expected" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_numerical_training_on_a_dask_scheduler_resumes(data_dir: Path, tmp_path: Path) -> None:
    """``--scheduler tcp://...``: a real cluster's workers take each step's perturbations;
    the run checkpoints, resumes, and ends where a whole run in this process does."""
    distributed = pytest.importorskip("distributed")
    numerical = ("--gradient", "numerical", "--no-plot")
    assert main([*train_args(data_dir, tmp_path / "here", *numerical), "--iters", "6"]) == 0
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        part = tmp_path / "part"
        for extra in (["--iters", "4"], ["--iters", "6", "--resume"]):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "xgrad.cli",
                    *train_args(data_dir, part, *numerical),
                    "--scheduler",
                    address,
                    *extra,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            assert (part / "checkpoint.json").exists()
        # The perturbations ran on this cluster, as xgrad's tasks.
        prefix = cluster.scheduler.task_prefixes.get("run_task")
        assert prefix is not None and sum(prefix.state_counts.values()) > 0
        both = subprocess.run(
            [
                sys.executable,
                "-m",
                "xgrad.cli",
                *train_args(data_dir, tmp_path / "b"),
                *("--scheduler", address, "--workers", "2"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    here = json.loads((tmp_path / "here" / "history.json").read_text())
    resumed = json.loads((part / "history.json").read_text())
    assert len(resumed["train_loss"]) == len(here["train_loss"]) == 6
    # The loop on the cluster against the closed form here: equal up to the loop's rounding.
    np.testing.assert_allclose(resumed["train_loss"], here["train_loss"], rtol=1e-9)
    # A cluster brings its own workers: --workers beside an address is refused by name.
    assert both.returncode != 0 and "--workers" in both.stderr.strip().splitlines()[-1]
    assert "Traceback" not in both.stderr


def test_killed_process_resumes_to_the_same_end(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL a real run after its first checkpoints, resume it, compare with a whole run."""
    args = [*train_args(data_dir, tmp_path / "killed"), "--iters", "800", "--no-plot"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xgrad.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = tmp_path / "killed" / "checkpoint.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists() and json.loads(checkpoint.read_text())["iteration"] > 50:
                break
            time.sleep(0.02)
        proc.kill()
    finally:
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    record = json.loads(checkpoint.read_text())
    if record["history"]["finished"]:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    assert main([*args, "--resume"]) == 0
    assert main([*train_args(data_dir, tmp_path / "whole"), "--iters", "800", "--no-plot"]) == 0
    killed = json.loads((tmp_path / "killed" / "history.json").read_text())
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert killed["train_loss"] == whole["train_loss"]
    assert killed["epochs"] == whole["epochs"] and killed["final"] == whole["final"]
    # No temporary file of the killed process is left behind, and one npz.
    assert not list((tmp_path / "killed").glob(".*"))
    assert len(list((tmp_path / "killed").glob("*.npz"))) == 1
    capsys.readouterr()


# -- xgrad gradcheck ---------------------------------------------------------------------------
def gradcheck_args(data_dir: Path, *extra: str) -> list[str]:
    return ["gradcheck", "--data-dir", str(data_dir), "--no-download", "--hidden", "6", *extra]


def test_gradcheck(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(gradcheck_args(data_dir, "--backend", "numpy")) == 0
    out = capsys.readouterr().out
    assert "the first 3 training samples" in out and "TwoLayerNet(36, 6, 10, relu" in out
    assert "gradcheck on numpy:cpu, float64" in out and "PASSED" in out
    book_line = next(line for line in out.splitlines() if line.startswith("W1:"))
    diffs = dict(item.split(":") for item in book_line.split())
    assert set(diffs) == {"W1", "b1", "W2", "b2"}
    assert all(float(v) < 1e-6 for v in diffs.values())


def test_gradcheck_float32_and_all_backends(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(gradcheck_args(data_dir, "--all-backends", "--dtype", "float32")) == 0
    out = capsys.readouterr().out
    from xgrad.backends import available_backends

    for name, reason in available_backends().items():
        if reason is None:
            assert f"gradcheck on {name}:" in out
        else:
            assert f"{name}: skipped: {reason}" in out
    assert "FAILED" not in out and "float32" in out


def test_gradcheck_catches_a_wrong_gradient(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xgrad.nn import TwoLayerNet

    right = TwoLayerNet.gradient

    def wrong(self: TwoLayerNet, x: object, t: object) -> dict[str, object]:
        grads = right(self, x, t)
        return {**grads, "b2": grads["b2"] * 1.01}

    monkeypatch.setattr(TwoLayerNet, "gradient", wrong)
    assert main(gradcheck_args(data_dir)) == 1
    out = capsys.readouterr().out
    assert "b2" in out and "FAIL (" in out and "gradcheck FAILED on: numpy:cpu" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch", "0"], "--batch: expected an integer >= 1"),
        (["--batch", "1000"], "more than the 200 training samples"),
        (["--all-backends", "--device", "cpu"], "--device goes with --backend"),
        (["--backend", "nope"], "backend: unknown name"),
    ],
)
def test_gradcheck_errors(
    data_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(gradcheck_args(data_dir, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("xgrad gradcheck: error: ") and message in err
    assert err.count("\n") == 1


# -- run directories through real processes (issue 11) ----------------------------------------
# The CLI as `python -m xgrad.cli` would run it, with Ctrl-C's handler in place even where the
# test runner was started with SIGINT ignored (a background job), which a child inherits.
CLI = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from xgrad.cli import main; sys.exit(main())",
]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cli_env(), timeout=timeout, check=False
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen[str], run: Path, after: int = 0) -> int:
    """Wait until the run in ``run`` has checkpointed past iteration ``after``."""
    record = run / "checkpoint.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it was interrupted"
        try:
            done = json.loads(record.read_text())["iteration"]
        except (OSError, ValueError, KeyError):
            done = -1
        if done > after:
            return int(done)
        time.sleep(0.02)
    raise AssertionError("no checkpoint within 90 s")


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("xgrad train: error: ")
    return proc.stderr


def run_state(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_one_writer_per_out_and_sigterm_sigint_keep_the_checkpoint(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    long = [*train_args(data_dir, run), "--iters", "1000000", "--no-plot"]
    long.remove("--quiet")
    first = start(*long)
    try:
        wait_for_checkpoint(first, run, after=1)
        # Today both of these wrote into the running run and exited 0.
        for extra in (["--resume"], []):
            err = one_error_line(cli(*long, *extra, "--quiet"))
            assert f"out: {run} is being written by another xgrad train (pid {first.pid};" in err
            assert "--out" in err
        first.send_signal(signal.SIGTERM)  # today: killed outright, no resume hint
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.count("interrupted") == 1 and "Traceback" not in stderr
    # (Searched for, not taken as the last line: the signal may cut an epoch line short.)
    last = stderr[stderr.index("xgrad train: interrupted") :].strip()
    assert last.startswith("xgrad train: interrupted (SIGTERM); the checkpoint at iteration ")
    assert "\n" not in last
    done = int(last.split("iteration ")[1].split()[0])
    assert last.endswith(f"(--resume --out {run})")
    assert json.loads((run / "checkpoint.json").read_text())["iteration"] == done
    assert not (run / ".xgrad-train.lock").exists()

    second = start(*long, "--resume")  # Ctrl-C: one "interrupted" line (today two)
    try:
        wait_for_checkpoint(second, run, after=done)
        second.send_signal(signal.SIGINT)
        _, stderr = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 130, stderr
    assert stderr.count("interrupted") == 1 and "Traceback" not in stderr
    assert f"xgrad train: resuming {run} at iteration {done} of 1000000" in stderr
    assert "xgrad train: interrupted (SIGINT); the checkpoint at iteration" in stderr


def test_two_runs_started_at_once_one_wins(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*train_args(data_dir, run), "--iters", "400", "--no-plot"]
    procs = [start(*args) for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    (loser,) = [err for code, err in results if code == 1]
    assert "Traceback" not in loser and loser.count("\n") == 1
    assert ("is being written by another" in loser) or ("holds an earlier run" in loser)
    history = json.loads((run / "history.json").read_text())
    assert history["finished"] and history["iterations_done"] == 400
    assert len(history["train_loss"]) == 400


def test_a_run_without_checkpoint_json_is_not_overwritten(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(*train_args(data_dir, run), "--no-plot").returncode == 0
    (run / "checkpoint.json").unlink()
    before = run_state(run)
    err = one_error_line(cli(*train_args(data_dir, run), "--no-plot", "--seed", "1"))
    assert f"out: {run} holds an earlier run (checkpoint-000000040.npz, history.json)" in err
    err = one_error_line(cli(*train_args(data_dir, run), "--no-plot", "--resume"))
    assert "no checkpoint.json to continue it from" in err
    assert run_state(run) == before


def test_resume_errors_are_one_line(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(*train_args(data_dir, run), "--no-plot", "--iters", "80").returncode == 0
    before = run_state(run)
    # Today: "resuming ... at iteration 80 of 30", rc 0.
    err = one_error_line(cli(*train_args(data_dir, run), "--iters", "30", "--resume"))
    assert "iters: the run in" in err and "has done 80 iterations" in err and "--iters 30" in err
    npz = run / "checkpoint-000000080.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # today: a zipfile.BadZipFile traceback
    err = one_error_line(cli(*train_args(data_dir, run), "--iters", "80", "--resume"))
    assert f"resume: cannot use the checkpoint {npz}: " in err
    assert {k: v for k, v in run_state(run).items() if k != npz.name} == {
        k: v for k, v in before.items() if k != npz.name
    }


def test_a_label_outside_the_classes_is_refused(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "mnist"
    shutil.copytree(data_dir / "mnist", bad)
    from xgrad.datasets import read_idx

    labels = read_idx(bad / NAMES["test_labels"])
    labels[3] = 12  # today: a 13-output net, rc 0
    write_idx(bad / NAMES["test_labels"], labels)
    err = one_error_line(cli(*train_args(tmp_path / "bad", tmp_path / "run")))
    assert NAMES["test_labels"] in err and "12" in err
    assert not (tmp_path / "run" / "history.json").exists()


@pytest.mark.parametrize("bad", [["--iters", "0"], ["--data-dir", "/nonexistent/xgrad-data"]])
def test_failed_run_leaves_no_default_directory(data_dir: Path, tmp_path: Path, bad) -> None:
    """Each refused attempt used to leave an empty xgrad-runs/<dataset>-<time> behind."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    args = ["train", "--data-dir", str(data_dir), "--no-download", "--no-plot", *bad]
    proc = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    runs = tmp_path / "xgrad-runs"
    assert not runs.exists() or list(runs.iterdir()) == []
