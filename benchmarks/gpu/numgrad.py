"""(b) One full ``TwoLayerNet.numerical_gradient`` (784-50-10 sigmoid, batch 100).

Several ``chunk_size`` values, against NumPy's result (goal: <= 50 ms on an H100-class GPU
and a relative difference <= 1e-9 in float64).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from _common import markdown_table, mnist_like

import xgrad
from xgrad.backends import Backend
from xgrad.nn import TwoLayerNet

from .base import KEYS, Topic, error, rel, short, synchronize, times

GOAL_MS = 50.0
GOAL_REL = 1e-9
# 784-50-10: 785 rows (W1 and b1) x 50 hidden units = 39,250 perturbation pairs. chunk_size is
# pairs per vectorized evaluation: None is the CPU default (524), 785 one hidden unit per
# chunk, 39,250 the whole gradient at once (~0.6 GB per float64 temporary).
CHUNKS = (None, 785, 3925, 9813, 19625, 39250)
CHUNKS_QUICK = (None, 3925)


def _numgrad_once(b: Backend, net: TwoLayerNet, x: Any, t: Any, chunk: int | None) -> float:
    synchronize(b, x, t, *net.params.values())
    t0 = time.perf_counter()
    g = net.numerical_gradient(x, t, chunk_size=chunk)
    synchronize(b, *g.values())
    return time.perf_counter() - t0


class NumericalGradient(Topic):
    """(b): one numerical gradient per backend, dtype and ``chunk_size``."""

    key = "b"
    letter = "b"
    dtypes = ("float64", "float32")

    def setup(self, backends: list[Backend]) -> None:
        self.chunks = CHUNKS_QUICK if self.quick else CHUNKS
        self.repeats = 2 if self.quick else 5
        x, labels = mnist_like(100, seed=1)
        self.x, self.onehot = x, np.eye(10)[labels]

    def measure(self, backends: list[Backend], done: dict[str, Any]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        refs: dict[str, dict[str, np.ndarray]] = {}
        for b in [xgrad.get_backend("numpy"), *backends]:
            for dtype in self.dtypes:
                if dtype == "float64" and not b.supports_float64:
                    continue
                row = self._one(b, dtype, rows)
                if row is None:
                    continue
                host = row.pop("gradient")
                if b.name == "numpy":
                    refs[dtype] = host
                elif dtype in refs:
                    row.update(_agreement(host, refs[dtype]))
                rows.append(row)
        return {"rows": rows, "repeats": self.repeats, "chunks": [str(c) for c in self.chunks]}

    def _one(self, b: Backend, dtype: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The timings of every chunk, failures appended to ``rows``; None if all failed."""
        net = TwoLayerNet(784, 50, 10, activation="sigmoid", backend=b, dtype=dtype, seed=0)
        xb, tb = b.asarray(self.x, dtype=dtype), b.asarray(self.onehot, dtype=dtype)
        is_numpy = b.name == "numpy"
        timings: dict[str, list[float]] = {}
        for chunk in (None,) if is_numpy else self.chunks:
            label = "default" if chunk is None else str(chunk)
            try:
                _numgrad_once(b, net, xb, tb, chunk)  # warm-up: kernels, compilation
                timings[label] = [
                    _numgrad_once(b, net, xb, tb, chunk)
                    for _ in range(1 if is_numpy else self.repeats)
                ]
            except Exception as exc:
                timings[label] = []
                rows.append({"spec": b.spec, "dtype": dtype, "chunk": label, "error": error(exc)})
                self.log(f"(b) {b.spec} {dtype} chunk {label}: {exc}")
                continue
            self.log(f"(b) {b.spec} {dtype} chunk {label}: {1e3 * min(timings[label]):.1f} ms")
        timed = {k: v for k, v in timings.items() if v}
        if not timed:
            return None
        best = min(timed, key=lambda k: min(timed[k]))
        g = net.numerical_gradient(xb, tb, chunk_size=None if best == "default" else int(best))
        return {
            "spec": b.spec,
            "device": b.info()["device_name"],
            "dtype": dtype,
            "times_ms": {k: [1e3 * t for t in v] for k, v in timed.items()},
            "best_chunk": best,
            "best_ms": 1e3 * min(timed[best]),
            "median_ms": 1e3 * statistics.median(timed[best]),
            "gradient": {k: np.asarray(b.to_numpy(g[k]), dtype=np.float64) for k in KEYS},
        }

    @classmethod
    def render(cls, record: dict[str, Any]) -> list[str]:
        b = record
        lines = [
            "",
            "## (b) One full `TwoLayerNet.numerical_gradient`",
            "",
            "784-50-10 sigmoid, batch 100 (synthetic MNIST-shaped), default step (1e-4 in"
            " float64, 1e-3 in float32), all 39,760 elements. Time of one call with"
            " `chunk_size` = perturbation pairs per vectorized evaluation (None: the CPU"
            f" default); best of {b['repeats']} after one warm-up call, median in brackets."
            f" Goal on an H100-class GPU: <= {GOAL_MS:g} ms, and in float64 a difference"
            f" <= {GOAL_REL:g} relative to NumPy's result (max|diff| / max|NumPy| per"
            " parameter; the elementwise maximum of |diff| / |NumPy| is given too).",
            "",
            *_times_table(b),
            "",
            "Agreement with NumPy's gradient (same dtype), best chunk:",
            "",
            *_agreement_table(b),
        ]
        errors = [
            f"- {r['spec']} {r['dtype']} chunk {r['chunk']}: {r['error']}"
            for r in b["rows"]
            if "error" in r
        ]
        if errors:
            lines += ["", "Failures:", "", *errors]
        return lines


def _agreement(host: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    tiny = np.finfo(np.float64).tiny
    return {
        "rel_vs_numpy": {k: rel(host[k], ref[k]) for k in KEYS},
        "elementwise_rel_vs_numpy": {
            k: float(np.max(np.abs(host[k] - ref[k]) / np.maximum(np.abs(ref[k]), tiny)))
            for k in KEYS
        },
    }


def _times_table(b: dict[str, Any]) -> list[str]:
    chunk_labels = ["default", *[c for c in b["chunks"] if c != "None"]]
    header = ["backend", "dtype", *[f"chunk {c}" for c in chunk_labels], "best", "vs NumPy"]
    rows = []
    np_ms = {r["dtype"]: r["best_ms"] for r in b["rows"] if r["spec"] == "numpy:cpu"}
    for r in b["rows"]:
        if "error" in r:
            continue
        cells = [short(r["spec"]), r["dtype"]]
        for c in chunk_labels:
            t = r["times_ms"].get(c)
            cells.append(f"{min(t):.1f} ({statistics.median(t):.1f})" if t else "-")
        speed = np_ms.get(r["dtype"], 0.0) / r["best_ms"] if r["best_ms"] else 0.0
        cells += [
            f"**{r['best_ms']:.1f} ms** (chunk {r['best_chunk']})",
            "-" if r["spec"] == "numpy:cpu" else times(speed),
        ]
        rows.append(cells)
    return markdown_table(header, rows)


def _agreement_table(b: dict[str, Any]) -> list[str]:
    rows = []
    for r in b["rows"]:
        if "rel_vs_numpy" not in r:
            continue
        rel_, elem = r["rel_vs_numpy"], r["elementwise_rel_vs_numpy"]
        goal = ""
        if r["dtype"] == "float64":
            ok = max(rel_.values()) <= GOAL_REL and r["best_ms"] <= GOAL_MS
            goal = "met" if ok else "MISSED"
        rows.append(
            [
                short(r["spec"]),
                r["dtype"],
                *(f"{rel_[k]:.1e} / {elem[k]:.1e}" for k in KEYS),
                goal,
            ]
        )
    return markdown_table(
        ["backend", "dtype", *(f"{k} (max rel / elementwise)" for k in KEYS), "goal"], rows
    )
