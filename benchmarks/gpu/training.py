"""(a) Backprop training throughput of ``TwoLayerNet`` (784-H-10, ReLU, the book's ch. 5 net).

``loss_and_gradient`` + ``xgrad.optim.SGD`` at batch 100, 1,000 and 10,000, hidden 50 and
1,000, float64 and float32; iterations/s per backend, the ratio to NumPy, and where the
accelerator starts to win (the crossover). Synthetic MNIST-shaped data drawn on the host
and moved to the device once (a few fixed minibatches, one-hot targets as ``xgrad.train``
uses them). Warm-up iterations are excluded; timers are read after ``synchronize``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from _common import markdown_table, mnist_like

import xgrad
from xgrad.backends import Backend
from xgrad.nn import TwoLayerNet
from xgrad.optim import SGD

from .base import Topic, error, host_params, params_rel, short, synchronize, times


def _batches(
    b: Backend, dtype: str, x: np.ndarray, labels: np.ndarray, idx: np.ndarray
) -> list[tuple[Any, Any]]:
    onehot = np.eye(10)[labels]
    out = [(b.asarray(x[i], dtype=dtype), b.asarray(onehot[i], dtype=dtype)) for i in idx]
    synchronize(b, *(a for pair in out for a in pair))
    return out


def train_rate(
    b: Backend,
    dtype: str,
    hidden: int,
    batches: list[tuple[Any, Any]],
    *,
    warmup: int,
    min_time: float,
    max_iters: int,
) -> dict[str, Any]:
    """Iterations/s of loss_and_gradient + SGD after ``warmup`` iterations."""
    net = TwoLayerNet(784, hidden, 10, activation="relu", backend=b, dtype=dtype, seed=0)
    opt = SGD(lr=0.1)
    params = net.params
    k = len(batches)

    def step(i: int) -> Any:
        x, t = batches[i % k]
        loss, grads = net.loss_and_gradient(x, t)
        opt.update(params, grads)
        return loss

    for i in range(warmup):
        loss = step(i)
    synchronize(b, loss, *params.values())
    after_warmup = host_params(b, params)
    n, check = 0, 1
    t0 = time.perf_counter()
    while True:
        loss = step(warmup + n)
        n += 1
        if n == check or n >= max_iters:
            # Synchronizing only at doubling counts keeps the GPU queue full in between.
            synchronize(b, loss, *params.values())
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time or n >= max_iters:
                break
            check *= 2
    return {
        "iters": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "last_loss": float(b.to_numpy(loss)),
        "after_warmup": after_warmup,
    }


class TrainingThroughput(Topic):
    """(a): iterations/s per backend for every batch, hidden size and dtype."""

    key = "a"
    letter = "a"
    dtypes = ("float64", "float32")
    warmup = 2

    def setup(self, backends: list[Backend]) -> None:
        quick, min_time = self.quick, self.args.min_time
        self.batch_sizes = (100, 1000) if quick else (100, 1_000, 10_000)
        self.hiddens = (50,) if quick else (50, 1_000)
        self.min_time = min_time if min_time is not None else (0.2 if quick else 1.0)
        self.n_batches = 2 if quick else 4
        self.n_data = max(self.batch_sizes)
        self.x, self.labels = mnist_like(self.n_data, seed=2)

    def measure(self, backends: list[Backend], done: dict[str, Any]) -> dict[str, Any]:
        everyone = [xgrad.get_backend("numpy"), *backends]
        rng = np.random.default_rng(3)
        rows = []
        for batch in self.batch_sizes:
            idx = rng.integers(0, self.n_data, (self.n_batches, batch))
            for dtype in self.dtypes:
                # The minibatches of one batch size and dtype, on every device, freed below.
                data = {
                    b.spec: _batches(b, dtype, self.x, self.labels, idx)
                    for b in everyone
                    if dtype != "float64" or b.supports_float64
                }
                for hidden in self.hiddens:
                    rows.append(self._row(everyone, data, batch, hidden, dtype))
                del data
        return {
            "rows": rows,
            "warmup": self.warmup,
            "min_time": self.min_time,
            "n_batches": self.n_batches,
            "n_data": self.n_data,
            "specs": [b.spec for b in backends],
        }

    def _row(
        self,
        everyone: list[Backend],
        data: dict[str, list[tuple[Any, Any]]],
        batch: int,
        hidden: int,
        dtype: str,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"batch": batch, "hidden": hidden, "dtype": dtype}
        ref = None
        for b in everyone:
            if b.spec not in data:
                row[b.spec] = {"error": b.float64_error or "no float64"}
                continue
            try:
                r = train_rate(
                    b,
                    dtype,
                    hidden,
                    data[b.spec],
                    warmup=self.warmup,
                    min_time=self.min_time,
                    max_iters=100_000,
                )
            except Exception as exc:
                row[b.spec] = {"error": error(exc)}
                self.log(f"  (a) {b.spec} batch {batch} hidden {hidden} {dtype}: {exc}")
                continue
            warm = r.pop("after_warmup")
            if ref is None:
                ref = warm
            else:
                r["rel_vs_numpy_after_warmup"] = params_rel(warm, ref)
            row[b.spec] = r
        self.log(
            f"(a) batch {batch:>6} hidden {hidden:>5} {dtype}: "
            + ", ".join(
                f"{s} {v['rate']:.1f} it/s" if "rate" in v else f"{s} failed"
                for s, v in row.items()
                if isinstance(v, dict)
            )
        )
        return row

    @classmethod
    def render(cls, record: dict[str, Any]) -> list[str]:
        a = record
        lines = [
            "",
            "## (a) Backprop training throughput",
            "",
            "`TwoLayerNet(784, hidden, 10, activation='relu')`, `loss_and_gradient` +"
            " `SGD(lr=0.1)`, iterations/s after"
            f" {a['warmup']} warm-up iterations, timed for at least {a['min_time']:g} s"
            " (timer read after `Backend.synchronize`). Synthetic MNIST-shaped float32 images"
            f" ({a['n_data']:,} samples, drawn on the host), {a['n_batches']} fixed minibatches"
            " with one-hot targets moved to the device once. Ratio = backend it/s / NumPy it/s"
            " (> 1: faster than the CPU).",
            "",
            *_rates_table(a),
            "",
            "Parameters after the warm-up iterations against NumPy's (same dtype, same"
            " minibatches), max|diff| / max|NumPy| over W1, b1, W2, b2; the worst over the"
            " batch sizes and hidden sizes above:",
            "",
            *_agreement_table(a),
            "",
            "Crossover (the batch from which the backend beats NumPy):",
            "",
        ]
        specs = a["specs"]
        for s in specs:
            lines += _crossover(a, s)
        errors = [
            f"- {short(s)} batch {r['batch']} hidden {r['hidden']} {r['dtype']}: {r[s]['error']}"
            for r in a["rows"]
            for s in specs
            if "error" in r.get(s, {})
        ]
        if errors:
            lines += ["", "Failures:", "", *errors]
        return lines


def _fmt_rate(v: dict[str, Any] | None) -> str:
    if not v:
        return "-"
    if "error" in v:
        return "failed"
    r = v["rate"]
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.3f}"


def _rates_table(a: dict[str, Any]) -> list[str]:
    specs = a["specs"]
    header = ["hidden", "batch", "dtype", "NumPy it/s"]
    for s in specs:
        header += [f"{short(s)} it/s", f"{short(s)} ratio"]
    rows = []
    for r in sorted(a["rows"], key=lambda r: (r["hidden"], r["dtype"] != "float64", r["batch"])):
        cells = [str(r["hidden"]), f"{r['batch']:,}", r["dtype"], _fmt_rate(r.get("numpy:cpu"))]
        for s in specs:
            cell = r.get(s)
            cells.append(_fmt_rate(cell))
            if cell and "rate" in cell and "rate" in r.get("numpy:cpu", {}):
                cells.append(times(cell["rate"] / r["numpy:cpu"]["rate"]))
            else:
                cells.append("-")
        rows.append(cells)
    return markdown_table(header, rows)


def _agreement_table(a: dict[str, Any]) -> list[str]:
    dtypes = list(dict.fromkeys(r["dtype"] for r in a["rows"]))
    agree = []
    for s in a["specs"]:
        cells = [short(s)]
        for dt in dtypes:
            vals = [
                r[s]["rel_vs_numpy_after_warmup"]
                for r in a["rows"]
                if r["dtype"] == dt and "rel_vs_numpy_after_warmup" in r.get(s, {})
            ]
            cells.append(f"{max(vals):.1e}" if vals else "-")
        agree.append(cells)
    return markdown_table(["backend", *dtypes], agree)


def _crossover(a: dict[str, Any], spec: str) -> list[str]:
    lines = []
    combos = sorted({(r["dtype"], r["hidden"]) for r in a["rows"]}, key=lambda k: (k[0], k[1]))
    for dtype, hidden in combos:
        rows = sorted(
            (r for r in a["rows"] if r["dtype"] == dtype and r["hidden"] == hidden),
            key=lambda r: r["batch"],
        )
        wins = [
            r["batch"]
            for r in rows
            if "rate" in r.get(spec, {})
            and "rate" in r.get("numpy:cpu", {})
            and r[spec]["rate"] > r["numpy:cpu"]["rate"]
        ]
        measured = [r["batch"] for r in rows if "rate" in r.get(spec, {})]
        if not measured:
            continue
        if not wins:
            verdict = f"slower than NumPy at every batch measured ({', '.join(map(str, measured))})"
        elif wins == measured[-len(wins) :] and len(wins) == len(measured):
            verdict = f"faster than NumPy already at batch {wins[0]:,}"
        elif wins == measured[-len(wins) :]:
            below = measured[len(measured) - len(wins) - 1]
            verdict = f"crossover between batch {below:,} (slower) and {wins[0]:,} (faster)"
        else:
            verdict = f"faster at batch {', '.join(f'{w:,}' for w in wins)} only"
        lines.append(f"- {short(spec)}, {dtype}, hidden {hidden}: {verdict}.")
    return lines
