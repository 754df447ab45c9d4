"""The command line every example script shares: an optional backend, an output folder."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def example_parser(doc: str, *, figures: bool = True) -> argparse.ArgumentParser:
    """``BACKEND`` (default: $XGRAD_BACKEND, else numpy); ``--out`` for scripts with figures."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("backend", nargs="?", help="numpy, torch, jax, cupy, array_api_strict")
    if figures:
        parser.add_argument(
            "--out", default=os.environ.get("XGRAD_DOCS_OUT"), help="directory for the figures"
        )
    return parser


def output_dir(out: str | None) -> Path:
    """``out``, else a new temporary folder: examples never write into the repository."""
    path = Path(out or tempfile.mkdtemp(prefix="xgrad-docs-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class _NoFigures:
    """Stands in for ``matplotlib.pyplot`` where matplotlib is not installed: draws nothing.

    Every attribute, call and item is the stand-in again, and it unpacks as a pair, so
    ``fig, axes = plt.subplots(1, 2)`` and ``axes[0].plot(...)`` run unchanged.
    """

    def __getattr__(self, name: str) -> _NoFigures:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _NoFigures:
        return self

    def __getitem__(self, key: Any) -> _NoFigures:
        return self

    def __iter__(self) -> Any:
        return iter((self, self))


def pyplot() -> Any:
    """``matplotlib.pyplot`` drawing into files only (Agg), or, without matplotlib (it is
    the optional ``plot`` extra), a stand-in that draws nothing: the examples' numbers do
    not need their figures."""
    try:
        import matplotlib
    except ImportError:
        print(
            'matplotlib is not installed (pip install -e ".[plot]"): figures are skipped',
            file=sys.stderr,
        )
        return _NoFigures()
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def draws(plt: Any) -> bool:
    """Whether ``plt`` (from :func:`pyplot`) really writes figures."""
    return not isinstance(plt, _NoFigures)
