"""The shared base of the GPU suite: the ``Topic`` shape, the clock barrier, comparisons with
NumPy's results and the formatting every topic's table uses."""

from __future__ import annotations

import argparse
import os
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from xgrad.backends import Backend

KEYS = ("W1", "b1", "W2", "b2")
Log = Callable[[str], None]


class Topic:
    """One measurement of the suite, in the shape of an asv benchmark class.

    ``setup`` draws the host data (and moves what it can to the devices), ``measure`` runs
    the measurement and returns its record (the part's entry in gpu.json), and ``render``
    turns a record back into markdown; ``render`` needs nothing but the record, so
    ``--from-json`` re-renders saved runs without a GPU. Every timer is read after
    ``synchronize``.

    Parameters
    ----------
    args : argparse.Namespace
        The command line of ``bench_gpu.py``; each topic reads its own options (and
        ``--quick``) from it.
    log : callable
        Progress lines (to stderr).
    """

    key: ClassVar[str]
    """The record's name under ``parts`` in gpu.json."""
    letter: ClassVar[str]
    """The topic's letter in ``--parts``."""

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.log = log

    def setup(self, backends: list[Backend]) -> None:
        """Prepare the inputs (nothing by default)."""

    def measure(self, backends: list[Backend], done: dict[str, Any]) -> Any:
        """The part's record (JSON-able); ``done`` holds those of the topics run before."""
        raise NotImplementedError

    @classmethod
    def render(cls, record: Any) -> list[str]:
        """The part's markdown section, lines without their newlines."""
        raise NotImplementedError


def synchronize(b: Backend, *arrays: Any) -> None:
    """Wait until ``b`` has computed ``arrays``: the only barrier before a clock is read."""
    b.synchronize(*arrays)


def rel(actual: np.ndarray, ref: np.ndarray) -> float:
    """max|actual - ref| / max|ref|: elementwise ratios blow up where a gradient is ~0."""
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - ref)))
    return diff / scale if scale > 0 else diff


def host_params(b: Backend, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The parameters as float64 host arrays."""
    # A copy: on CPU backends to_numpy may share memory with parameters updated in place.
    return {k: np.array(b.to_numpy(params[k]), dtype=np.float64, copy=True) for k in KEYS}


def params_rel(a: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """The worst ``rel`` over the four parameters."""
    return max(rel(a[k], ref[k]) for k in KEYS)


def error(exc: BaseException) -> str:
    """The exception's first line and the innermost xgrad frame that led to it."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if f"{os.sep}xgrad{os.sep}" in frame.filename:
            where = f" at xgrad/{frame.filename.rsplit(os.sep + 'xgrad' + os.sep, 1)[1]}"
            where += f":{frame.lineno}"
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}{where}"


# -- formatting -----------------------------------------------------------------------------
def short(spec: str) -> str:
    """``cupy:cuda:0`` -> ``cupy``, ``torch:cpu`` -> ``torch cpu``."""
    return spec.replace(":cuda:0", "").replace(":", " ")


def times(ratio: float) -> str:
    """A speed ratio: ``0.69x``, ``51x``."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
