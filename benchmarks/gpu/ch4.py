"""(c) The book's chapter 4 experiment: training by numerical gradient.

10,000 iterations, batch 100, lr 0.1, sigmoid, hidden 50; the loop of
``xgrad.train(gradient="numerical")`` (same seeds, same minibatches) with a ``chunk_size``
for the device. Real MNIST or Fashion-MNIST IDX files when found (``--data-dir``), else
synthetic data. It runs until done or ``--time-limit`` seconds; NumPy runs a few iterations
of the same loop for the ratio.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from _common import markdown_table, mnist_like

import xgrad
from xgrad.backends import Backend
from xgrad.nn import TwoLayerNet
from xgrad.optim import SGD

from .base import Log, Topic, duration, error, host_params, params_rel, short, synchronize, times


def load_data(
    data_dir: str | None, dataset: str, quick: bool, log: Log
) -> tuple[str, tuple[np.ndarray, ...]]:
    """The data set's name and its train and test images and labels."""
    from xgrad.datasets import find_files, load_mnist

    names = ("mnist", "fashion-mnist") if dataset == "auto" else (dataset,)
    for name in names:
        if find_files(name, data_dir) is not None:
            (x, t), (xt, tt) = load_mnist(dataset=name, data_dir=data_dir, download=False)
            return name, (x, t, xt, tt)
    log(f"(c) no {' or '.join(names)} IDX files found (data_dir={data_dir}): synthetic data")
    n_train, n_test = (6_000, 1_000) if quick else (60_000, 10_000)
    x, t = mnist_like(n_train + n_test, seed=4)
    return "synthetic", (x[:n_train], t[:n_train], x[n_train:], t[n_train:])


def ch4_run(
    b: Backend,
    data: tuple[np.ndarray, ...],
    *,
    iters: int,
    time_limit: float,
    chunk: int | None,
    batch_size: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    evaluate: bool = True,
    snapshot_at: int = 0,
) -> dict[str, Any]:
    """``xgrad.train(gradient="numerical")``'s loop: the library's own core
    (`xgrad._trainloop.fit`: same net, seeds, minibatches and steps), synchronized every 20
    iterations (the time limit needs honest clocks, the GPU a queue)."""
    from xgrad._trainloop import Minibatches, blocks, book_step, fit

    x_host, t_host, xt_host, tt_host = data
    fdtype = b.float_dtype("float64")
    eye = np.eye(10)
    x_train, x_test = b.asarray(x_host, dtype=fdtype), b.asarray(xt_host, dtype=fdtype)
    t_train = b.asarray(eye[t_host], dtype=fdtype)
    t_test = b.asarray(eye[tt_host], dtype=fdtype)
    net = TwoLayerNet(784, 50, 10, 0.01, activation="sigmoid", backend=b, dtype=fdtype, seed=seed)
    opt = SGD(lr=lr)
    train_size = int(x_host.shape[0])
    batches = Minibatches(seed, train_size, batch_size, b)
    iter_per_epoch = max(train_size // batch_size, 1)
    loss_values: list[float] = []
    epochs: list[dict[str, Any]] = []
    state: dict[str, Any] = {"snapshot": None, "eval_s": 0.0, "train_s": 0.0, "done": 0}

    def evaluate_now(i: int) -> None:
        t1 = time.perf_counter()
        epochs.append(
            {
                "iteration": i,
                "train_acc": net.accuracy(x_train, t_train),
                "test_acc": net.accuracy(x_test, t_test),
            }
        )
        state["eval_s"] += time.perf_counter() - t1

    def on_block(first: int, losses: list[float], seconds: float) -> bool:
        done = first + len(losses)
        loss_values.extend(losses)
        state["train_s"] += seconds
        state["done"] = done
        if done == snapshot_at:
            state["snapshot"] = host_params(b, net.params)
        if evaluate and (done - 1) % iter_per_epoch == 0:
            evaluate_now(done - 1)
        return done == iters or state["train_s"] >= time_limit

    synchronize(b, x_train, t_train, *net.params.values())
    schedule = blocks(0, iters, 20, iter_per_epoch, stops=(snapshot_at,) if snapshot_at else ())
    step = book_step(net, opt, "numerical", chunk_size=chunk)
    fit(step, batches, x_train, t_train, schedule, on_block)
    done, train_s = state["done"], state["train_s"]
    if evaluate and (not epochs or epochs[-1]["iteration"] != done - 1):
        evaluate_now(done - 1)
    eval_s, snapshot = state["eval_s"], state["snapshot"]
    return {
        "iters_done": done,
        "train_s": train_s,
        "eval_s": eval_s,
        "rate": done / train_s if train_s > 0 else None,
        "finished": done == iters,
        "loss_first": loss_values[0] if loss_values else None,
        "loss_last": loss_values[-1] if loss_values else None,
        "loss_last_100_mean": float(np.mean(loss_values[-100:])) if loss_values else None,
        "epochs": epochs,
        "final": epochs[-1] if epochs else None,
        "snapshot": snapshot,
        "chunk": "default" if chunk is None else chunk,
    }


class Chapter4(Topic):
    """(c): the chapter 4 experiment on ``--ch4-backend`` (default: the first backend)."""

    key = "c"
    letter = "c"

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        super().__init__(args, log)
        # Resolved before any part runs: a misspelt backend fails at once, not after (a).
        specs = args.ch4_backend.split(",") if args.ch4_backend else []
        self.chosen = [xgrad.get_backend(s.strip()) for s in specs]

    def setup(self, backends: list[Backend]) -> None:
        args, quick = self.args, self.quick
        self.backends = self.chosen or backends[:1]
        self.data = load_data(args.data_dir, args.dataset, quick, self.log)
        self.iters = min(args.iters, 3) if quick else args.iters
        self.time_limit = min(args.time_limit, 30.0) if quick else args.time_limit
        self.numpy_iters = 2 if quick else args.numpy_iters

    def chunk(self, done: dict[str, Any]) -> int | None:
        """``--ch4-chunk``; ``best``: the fastest float64 chunk of (b), else 39,250."""
        if self.args.ch4_chunk == "default":
            return None
        if self.args.ch4_chunk != "best":
            return int(self.args.ch4_chunk)
        best = [
            r["best_chunk"]
            for r in done.get("b", {}).get("rows", [])
            if r["spec"] == self.backends[0].spec and r["dtype"] == "float64" and "best_chunk" in r
        ]
        if not best:
            return 39250
        return None if best[0] == "default" else int(best[0])

    def measure(self, backends: list[Backend], done: dict[str, Any]) -> dict[str, Any]:
        name, arrays = self.data
        iters, chunk = self.iters, self.chunk(done)
        out: dict[str, Any] = {
            "dataset": name,
            "train_size": int(arrays[0].shape[0]),
            "test_size": int(arrays[2].shape[0]),
            "iters": iters,
            "time_limit": self.time_limit,
            "rows": [],
        }
        np_iters = min(self.numpy_iters, iters)
        ref = ch4_run(
            xgrad.get_backend("numpy"),
            arrays,
            iters=np_iters,
            time_limit=math.inf,
            chunk=None,
            evaluate=False,
            snapshot_at=np_iters,
        )
        ref_params = ref.pop("snapshot")
        out["numpy"] = ref
        self.log(f"(c) numpy: {ref['rate']:.3f} it/s over {np_iters} iterations")
        for b in self.backends:
            if not b.supports_float64:
                out["rows"].append({"spec": b.spec, "error": b.float64_error})
                continue
            try:
                r = ch4_run(
                    b,
                    arrays,
                    iters=iters,
                    time_limit=self.time_limit,
                    chunk=chunk,
                    snapshot_at=np_iters,
                )
            except Exception as exc:
                out["rows"].append({"spec": b.spec, "error": error(exc)})
                self.log(f"(c) {b.spec}: {exc}")
                continue
            snap = r.pop("snapshot")
            if snap is not None:
                r["rel_vs_numpy_at_snapshot"] = params_rel(snap, ref_params)
                r["snapshot_iter"] = np_iters
            r["spec"] = b.spec
            r["device"] = b.info()["device_name"]
            out["rows"].append(r)
            final = r["final"] or {}
            self.log(
                f"(c) {b.spec}: {r['iters_done']} iterations in {r['train_s']:.1f} s"
                f" ({r['rate']:.2f} it/s), test acc {final.get('test_acc')}"
            )
        return out

    @classmethod
    def render(cls, record: dict[str, Any]) -> list[str]:
        c = record
        ref = c["numpy"]
        lines = [
            "",
            "## (c) The book's chapter 4 experiment: training by numerical gradient",
            "",
            f"784-50-10 sigmoid, batch 100, lr 0.1, SGD, {c['iters']:,} iterations, float64,"
            f" on {c['dataset']} ({c['train_size']:,} train / {c['test_size']:,} test"
            " images); the loop of `xgrad.train(gradient='numerical')` with the same seeds and"
            " minibatches. Train and test accuracy every epoch as the book (evaluation time"
            f" not in the rate); stopped after {c['time_limit']:g} s of training if not done."
            f" NumPy ran {ref['iters_done']} iterations of the same loop:"
            f" {ref['rate']:.3f} it/s, i.e. {duration(c['iters'] / ref['rate'])} for"
            f" {c['iters']:,} iterations.",
            "",
        ]
        lines += markdown_table(
            [
                "backend",
                "iterations",
                "training s",
                "it/s",
                "vs NumPy",
                f"time for {c['iters']:,} at this rate",
                "loss first -> mean of last 100",
                "final train / test acc",
                f"params vs NumPy after {ref['iters_done']} it",
            ],
            [_row(c, r) for r in c["rows"]],
        )
        for r in c["rows"]:
            if r.get("epochs"):
                accs = ", ".join(f"{e['test_acc']:.3f}" for e in r["epochs"])
                lines += [
                    "",
                    f"{short(r['spec'])} test accuracy per epoch (chunk {r['chunk']}): {accs}.",
                ]
        return lines


def _row(c: dict[str, Any], r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [short(r["spec"]), "failed: " + str(r["error"]), *["-"] * 7]
    final = r["final"] or {}
    return [
        short(r["spec"]),
        f"{r['iters_done']:,} / {c['iters']:,}" + ("" if r["finished"] else " (time limit)"),
        f"{r['train_s']:.1f}",
        f"{r['rate']:.2f}",
        times(r["rate"] / c["numpy"]["rate"]),
        duration(c["iters"] / r["rate"]),
        f"{r['loss_first']:.3f} -> {r['loss_last_100_mean']:.3f}",
        f"{final.get('train_acc', math.nan):.4f} / {final.get('test_acc', math.nan):.4f}",
        f"{r.get('rel_vs_numpy_at_snapshot', float('nan')):.1e}",
    ]
