"""What a training run shows while it runs: a progress bar on a terminal, epoch lines."""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

__all__ = ["ProgressBar", "eta", "format_duration"]


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


def eta(done: int, iters: int, iter_per_epoch: int, rate: float, timings: dict[str, Any]) -> float:
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


class ProgressBar:
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
