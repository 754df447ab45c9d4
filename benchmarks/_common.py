"""What every benchmark script shares: the commit measured, the environment line, timing,
markdown tables and atomic output.

The scripts run as ``python benchmarks/bench_<topic>.py``, so this directory is first on
``sys.path`` and ``import _common`` finds this file.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import xgrad

__all__ = [
    "Counted",
    "best_time",
    "environment",
    "markdown_table",
    "mnist_like",
    "revision",
    "write_atomic",
]


class Counted:
    """f with a count of the points it was evaluated at (a stack of k points counts k)."""

    def __init__(self, f: Callable[[Any], Any]) -> None:
        self.f, self.points = f, 0

    def __call__(self, v: Any) -> Any:
        self.points += int(np.size(v))
        return self.f(v)


def revision() -> str:
    """The commit of the xgrad that was imported (which may not be this script's tree)."""
    where = Path(xgrad.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "xgrad"], cwd=where, capture_output=True, text=True
        )
    except OSError:
        return f"unknown, xgrad from {where}"
    if head.returncode != 0:
        return f"unknown, xgrad from {where}"
    changed = " with uncommitted changes in xgrad/" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changed


def environment(*libraries: str) -> str:
    """``xgrad 0.1.0 (commit abc), NumPy 2.4, <libraries>, Python 3.11, x86_64 with 2 CPUs,
    OPENBLAS_NUM_THREADS=1``: what a table was measured with."""
    versions = [f"NumPy {np.__version__}"]
    for name in libraries:
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            versions.append(f"{name} (not installed)")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    return (
        f"xgrad {xgrad.__version__} (commit {revision()}), {', '.join(versions)}, Python "
        f"{platform.python_version()}, {platform.machine()} with {os.cpu_count()} CPUs, "
        f"OPENBLAS_NUM_THREADS={threads}"
    )


def best_time(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images of MNIST's shape and their labels.

    Float32 "images" in [0, 1] with ~20% non-zero pixels, labels from a random linear
    teacher: the same data for every backend and every run with the same ``seed``.
    """
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)).astype(np.float32)
    teacher = rng.standard_normal((784, 10))
    return x, np.argmax(x @ teacher, axis=1)


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
