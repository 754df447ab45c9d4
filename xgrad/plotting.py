"""The book's two training figures, drawn from a run's history."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xgrad._rundir import atomic_write

__all__ = ["plot_history"]


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
    atomic_write(written[-1], lambda f: fig.savefig(f, format="png", dpi=100))

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
    atomic_write(written[-1], lambda f: fig.savefig(f, format="png", dpi=100))
    return written
