"""GPU benchmarks of issue 6: every figure a ratio against NumPy on the same machine, same run.

(a) Backprop training throughput of ``TwoLayerNet`` (784-H-10, ReLU, the book's ch. 5 net):
    ``loss_and_gradient`` + ``xgrad.optim.SGD`` at batch 100, 1,000 and 10,000, hidden 50
    and 1,000, float64 and float32; iterations/s per backend, the ratio to NumPy, and where
    the accelerator starts to win (the crossover). Synthetic MNIST-shaped data drawn on the
    host and moved to the device once (a few fixed minibatches, one-hot targets as
    ``xgrad.train`` uses them). Warm-up iterations are excluded; timers are read after
    ``Backend.synchronize``.
(b) One full ``TwoLayerNet.numerical_gradient`` (784-50-10 sigmoid, batch 100) for several
    ``chunk_size`` values, against NumPy's result (goal: <= 50 ms on an H100-class GPU and a
    relative difference <= 1e-9 in float64).
(c) The book's chapter 4 experiment: training by numerical gradient, 10,000 iterations,
    batch 100, lr 0.1, sigmoid, hidden 50; the loop of ``xgrad.train(gradient="numerical")``
    (same seeds, same minibatches) with a ``chunk_size`` for the device. Real MNIST or
    Fashion-MNIST IDX files when found (``--data-dir``), else synthetic data. It runs until
    done or ``--time-limit`` seconds; NumPy runs a few iterations of the same loop for the
    ratio.

Also probed: whether a training step, an SGD update and a numerical gradient with inputs
already on the device run without an implicit device synchronization or host transfer
(CuPy ``allow_synchronize(False)``, torch sync debug mode "error", JAX ``transfer_guard``).

NumPy runs with ``--numpy-threads`` BLAS threads (default 1, as every CPU table of the
project). Writes a markdown table to ``--out`` (default docs/benchmarks/gpu.md) and the raw
numbers as JSON next to it; ``--from-json`` re-renders (and merges) saved JSON files, so the
parts may run in separate device calls::

    python benchmarks/bench_gpu.py                        # every GPU backend found
    python benchmarks/bench_gpu.py --backend cupy --parts ab --out /tmp/ab.md
    python benchmarks/bench_gpu.py --parts c --time-limit 500 --data-dir DIR --out /tmp/c.md
    python benchmarks/bench_gpu.py --from-json /tmp/ab.json /tmp/c.json  # one table
    python benchmarks/bench_gpu.py --backend torch --quick --out /tmp/cpu.md  # smoke test
"""

from __future__ import annotations

import os
import sys


def _early_option(argv: list[str], name: str, default: str) -> str:
    # BLAS reads its thread count when NumPy is imported, before argparse runs.
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


_THREADS = _early_option(sys.argv, "--numpy-threads", "1")
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = _THREADS
# JAX (when its CUDA plugin is installed) takes 75% of the GPU memory at start-up unless told
# not to, leaving too little for CuPy and torch in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_ENABLE_X64", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table  # noqa: E402
from bench_nets import mnist_like  # noqa: E402

import xgrad  # noqa: E402
from xgrad.backends import Backend, registered_backends  # noqa: E402
from xgrad.nn import TwoLayerNet  # noqa: E402
from xgrad.optim import SGD  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks" / "gpu.md"
KEYS = ("W1", "b1", "W2", "b2")
GOAL_MS = 50.0
GOAL_REL = 1e-9
# 784-50-10: 785 rows (W1 and b1) x 50 hidden units = 39,250 perturbation pairs. chunk_size is
# pairs per vectorized evaluation: None is the CPU default (524), 785 one hidden unit per
# chunk, 39,250 the whole gradient at once (~0.6 GB per float64 temporary).
CHUNKS = (None, 785, 3925, 9813, 19625, 39250)
CHUNKS_QUICK = (None, 3925)


# -- backends and environment -------------------------------------------------------------
def gpu_specs() -> tuple[list[str], dict[str, str]]:
    """``name:device`` of every available non-NumPy backend on an accelerator; and reasons."""
    specs, why = [], {}
    for name, reason in sorted(xgrad.available_backends().items()):
        if name == "numpy":
            continue
        if reason is not None:
            why[name] = reason
            continue
        try:
            devices = registered_backends()[name].devices()
        except Exception as exc:  # a broken plugin is a reason, not a crash
            why[name] = f"{type(exc).__name__}: {exc}"
            continue
        gpus = [d for d in devices if d.startswith(("cuda", "gpu", "rocm"))]
        specs += [f"{name}:{d}" for d in gpus]
        if not gpus:
            why[name] = "no GPU device (" + ", ".join(devices) + ")"
    return specs, why


def _library_versions() -> dict[str, Any]:
    """Versions of the array libraries loaded in this process, by their public attributes."""
    out: dict[str, Any] = {"numpy": np.__version__}
    mods = sys.modules
    if "cupy" in mods:
        cupy = mods["cupy"]
        out["cupy"] = cupy.__version__
        with contextlib.suppress(Exception):
            rt = cupy.cuda.runtime
            out["cupy CUDA runtime"] = _cuda_version(rt.runtimeGetVersion())
            out["CUDA driver API"] = _cuda_version(rt.driverGetVersion())
    if "torch" in mods:
        torch = mods["torch"]
        out["torch"] = torch.__version__
        out["torch CUDA"] = getattr(torch.version, "cuda", None)
        with contextlib.suppress(Exception):
            out["torch cuDNN"] = torch.backends.cudnn.version()
    if "jax" in mods:
        out["jax"] = mods["jax"].__version__
        if "jaxlib" in mods:
            out["jaxlib"] = getattr(mods["jaxlib"], "__version__", None)
    if "array_api_strict" in mods:
        out["array_api_strict"] = mods["array_api_strict"].__version__
    import array_api_compat

    out["array_api_compat"] = array_api_compat.__version__
    return {k: v for k, v in out.items() if v is not None}


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_smi() -> list[str]:
    try:
        res = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def environment(backends: list[Backend]) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy_threads": int(_THREADS),
        "nvidia_smi": _nvidia_smi(),
        "versions": _library_versions(),
        "backends": {b.spec: b.info() for b in backends},
    }


# -- timing helpers -----------------------------------------------------------------------
def _sync(b: Backend, *arrays: Any) -> None:
    b.synchronize(*arrays)


def _rel(actual: np.ndarray, ref: np.ndarray) -> float:
    """max|actual - ref| / max|ref|: elementwise ratios blow up where a gradient is ~0."""
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - ref)))
    return diff / scale if scale > 0 else diff


def _host_params(b: Backend, params: dict[str, Any]) -> dict[str, np.ndarray]:
    # A copy: on CPU backends to_numpy may share memory with parameters updated in place.
    return {k: np.array(b.to_numpy(params[k]), dtype=np.float64, copy=True) for k in KEYS}


def _params_rel(a: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    return max(_rel(a[k], ref[k]) for k in KEYS)


def _error(exc: BaseException) -> str:
    """The exception's first line and the innermost xgrad frame that led to it."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if f"{os.sep}xgrad{os.sep}" in frame.filename:
            where = f" at xgrad/{frame.filename.rsplit(os.sep + 'xgrad' + os.sep, 1)[1]}"
            where += f":{frame.lineno}"
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}{where}"


# -- (a) training throughput --------------------------------------------------------------
def _batches(
    b: Backend, dtype: str, x: np.ndarray, labels: np.ndarray, idx: np.ndarray
) -> list[tuple[Any, Any]]:
    onehot = np.eye(10)[labels]
    out = [(b.asarray(x[i], dtype=dtype), b.asarray(onehot[i], dtype=dtype)) for i in idx]
    _sync(b, *(a for pair in out for a in pair))
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
    _sync(b, loss, *params.values())
    after_warmup = _host_params(b, params)
    n, check = 0, 1
    t0 = time.perf_counter()
    while True:
        loss = step(warmup + n)
        n += 1
        if n == check or n >= max_iters:
            # Synchronizing only at doubling counts keeps the GPU queue full in between.
            _sync(b, loss, *params.values())
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


def bench_training(
    backends: list[Backend],
    *,
    batch_sizes: tuple[int, ...],
    hiddens: tuple[int, ...],
    dtypes: tuple[str, ...],
    min_time: float,
    warmup: int,
    n_batches: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    numpy_b = xgrad.get_backend("numpy")
    n_data = max(batch_sizes)
    x, labels = mnist_like(n_data, seed=2)
    rng = np.random.default_rng(3)
    rows = []
    for batch in batch_sizes:
        idx = rng.integers(0, n_data, (n_batches, batch))
        for dtype in dtypes:
            data = {}
            for b in [numpy_b, *backends]:
                if dtype == "float64" and not b.supports_float64:
                    continue
                data[b.spec] = _batches(b, dtype, x, labels, idx)
            for hidden in hiddens:
                row: dict[str, Any] = {"batch": batch, "hidden": hidden, "dtype": dtype}
                ref = None
                for b in [numpy_b, *backends]:
                    if b.spec not in data:
                        row[b.spec] = {"error": b.float64_error or "no float64"}
                        continue
                    try:
                        r = train_rate(
                            b,
                            dtype,
                            hidden,
                            data[b.spec],
                            warmup=warmup,
                            min_time=min_time,
                            max_iters=100_000,
                        )
                    except Exception as exc:
                        row[b.spec] = {"error": _error(exc)}
                        log(f"  (a) {b.spec} batch {batch} hidden {hidden} {dtype}: {exc}")
                        continue
                    warm = r.pop("after_warmup")
                    if ref is None:
                        ref = warm
                    else:
                        r["rel_vs_numpy_after_warmup"] = _params_rel(warm, ref)
                    row[b.spec] = r
                rows.append(row)
                log(
                    f"(a) batch {batch:>6} hidden {hidden:>5} {dtype}: "
                    + ", ".join(
                        f"{s} {v['rate']:.1f} it/s" if "rate" in v else f"{s} failed"
                        for s, v in row.items()
                        if isinstance(v, dict)
                    )
                )
            del data
    return {
        "rows": rows,
        "warmup": warmup,
        "min_time": min_time,
        "n_batches": n_batches,
        "n_data": n_data,
        "specs": [b.spec for b in backends],
    }


# -- (b) one numerical gradient -----------------------------------------------------------
def _numgrad_once(b: Backend, net: TwoLayerNet, x: Any, t: Any, chunk: int | None) -> float:
    _sync(b, x, t, *net.params.values())
    t0 = time.perf_counter()
    g = net.numerical_gradient(x, t, chunk_size=chunk)
    _sync(b, *g.values())
    return time.perf_counter() - t0


def bench_numgrad(
    backends: list[Backend],
    *,
    chunks: tuple[int | None, ...],
    repeats: int,
    dtypes: tuple[str, ...],
    log: Callable[[str], None],
) -> dict[str, Any]:
    x, labels = mnist_like(100, seed=1)
    onehot = np.eye(10)[labels]
    rows = []
    refs = {}
    for b in [xgrad.get_backend("numpy"), *backends]:
        for dtype in dtypes:
            if dtype == "float64" and not b.supports_float64:
                continue
            net = TwoLayerNet(784, 50, 10, activation="sigmoid", backend=b, dtype=dtype, seed=0)
            xb, tb = b.asarray(x, dtype=dtype), b.asarray(onehot, dtype=dtype)
            is_numpy = b.name == "numpy"
            times: dict[str, list[float]] = {}
            for chunk in (None,) if is_numpy else chunks:
                label = "default" if chunk is None else str(chunk)
                try:
                    _numgrad_once(b, net, xb, tb, chunk)  # warm-up: kernels, compilation
                    times[label] = [
                        _numgrad_once(b, net, xb, tb, chunk)
                        for _ in range(1 if is_numpy else repeats)
                    ]
                except Exception as exc:
                    times[label] = []
                    rows.append(
                        {"spec": b.spec, "dtype": dtype, "chunk": label, "error": _error(exc)}
                    )
                    log(f"(b) {b.spec} {dtype} chunk {label}: {exc}")
                    continue
                log(f"(b) {b.spec} {dtype} chunk {label}: {1e3 * min(times[label]):.1f} ms")
            timed = {k: v for k, v in times.items() if v}
            if not timed:
                continue
            best = min(timed, key=lambda k: min(timed[k]))
            g = net.numerical_gradient(xb, tb, chunk_size=None if best == "default" else int(best))
            host = {k: np.asarray(b.to_numpy(g[k]), dtype=np.float64) for k in KEYS}
            row: dict[str, Any] = {
                "spec": b.spec,
                "device": b.info()["device_name"],
                "dtype": dtype,
                "times_ms": {k: [1e3 * t for t in v] for k, v in timed.items()},
                "best_chunk": best,
                "best_ms": 1e3 * min(timed[best]),
                "median_ms": 1e3 * statistics.median(timed[best]),
            }
            if is_numpy:
                refs[dtype] = host
            elif dtype in refs:
                row["rel_vs_numpy"] = {k: _rel(host[k], refs[dtype][k]) for k in KEYS}
                row["elementwise_rel_vs_numpy"] = {
                    k: float(
                        np.max(
                            np.abs(host[k] - refs[dtype][k])
                            / np.maximum(np.abs(refs[dtype][k]), np.finfo(np.float64).tiny)
                        )
                    )
                    for k in KEYS
                }
            rows.append(row)
    return {"rows": rows, "repeats": repeats, "chunks": [str(c) for c in chunks]}


# -- (c) the book's chapter 4 experiment --------------------------------------------------
def load_data(
    data_dir: str | None, dataset: str, quick: bool, log: Callable[[str], None]
) -> tuple[str, tuple[np.ndarray, ...]]:
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
            state["snapshot"] = _host_params(b, net.params)
        if evaluate and (done - 1) % iter_per_epoch == 0:
            evaluate_now(done - 1)
        return done == iters or state["train_s"] >= time_limit

    _sync(b, x_train, t_train, *net.params.values())
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


def bench_ch4(
    backends: list[Backend],
    data: tuple[str, tuple[np.ndarray, ...]],
    *,
    iters: int,
    time_limit: float,
    chunk: int | None,
    numpy_iters: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    name, arrays = data
    out: dict[str, Any] = {
        "dataset": name,
        "train_size": int(arrays[0].shape[0]),
        "test_size": int(arrays[2].shape[0]),
        "iters": iters,
        "time_limit": time_limit,
        "rows": [],
    }
    np_iters = min(numpy_iters, iters)
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
    log(f"(c) numpy: {ref['rate']:.3f} it/s over {np_iters} iterations")
    for b in backends:
        if not b.supports_float64:
            out["rows"].append({"spec": b.spec, "error": b.float64_error})
            continue
        try:
            r = ch4_run(
                b, arrays, iters=iters, time_limit=time_limit, chunk=chunk, snapshot_at=np_iters
            )
        except Exception as exc:
            out["rows"].append({"spec": b.spec, "error": _error(exc)})
            log(f"(c) {b.spec}: {exc}")
            continue
        snap = r.pop("snapshot")
        if snap is not None:
            r["rel_vs_numpy_at_snapshot"] = _params_rel(snap, ref_params)
            r["snapshot_iter"] = np_iters
        r["spec"] = b.spec
        r["device"] = b.info()["device_name"]
        out["rows"].append(r)
        final = r["final"] or {}
        log(
            f"(c) {b.spec}: {r['iters_done']} iterations in {r['train_s']:.1f} s"
            f" ({r['rate']:.2f} it/s), test acc {final.get('test_acc')}"
        )
    return out


# -- implicit synchronization probe -------------------------------------------------------
@contextlib.contextmanager
def _torch_sync_errors() -> Iterator[None]:
    import torch

    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def sync_guard(b: Backend) -> Any:
    """A context in which ``b``'s library raises on an implicit sync or transfer, or None.

    Library specifics on purpose: this is a diagnostic of the library's own debug modes, not
    a code path of xgrad.
    """
    if b.library == "cupy":
        import cupyx

        # CuPy warns that the detection is not exhaustive: a miss is possible, a false
        # alarm is not, which is what this probe needs.
        warnings.filterwarnings("ignore", message="cupyx.allow_synchronize will be removed")
        return cupyx.allow_synchronize(False)
    if b.library == "torch" and b.device_label.startswith("cuda"):
        warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype")
        return _torch_sync_errors()
    if b.library == "jax" and not b.device_label.startswith("cpu"):
        import jax

        return jax.transfer_guard("disallow")
    return None


def _probe_one(b: Backend, x: np.ndarray, labels: np.ndarray, log: Callable[[str], None]) -> dict:
    row: dict[str, Any] = {"spec": b.spec}
    if sync_guard(b) is None:
        row["note"] = "no sync/transfer guard for this library or device"
        return row
    dtype = "float64" if b.supports_float64 else "float32"
    net = TwoLayerNet(784, 50, 10, activation="relu", backend=b, dtype=dtype, seed=0)
    xb = b.asarray(x, dtype=dtype)
    tb = b.asarray(np.eye(10)[labels], dtype=dtype)
    lb = b.asarray(labels.astype(np.int64))
    opt = SGD(lr=0.1)
    grads = net.gradient(xb, tb)
    checks: dict[str, Callable[[], Any]] = {
        "loss_and_gradient (one-hot t)": lambda: net.loss_and_gradient(xb, tb),
        "loss_and_gradient (label t)": lambda: net.loss_and_gradient(xb, lb),
        "SGD.update": lambda: opt.update(net.params, grads),
        "numerical_gradient": lambda: net.numerical_gradient(xb, tb, chunk_size=39250),
    }
    for what, fn in checks.items():
        try:
            fn()  # unguarded first: compilation and caches are not the question
            _sync(b, *net.params.values())
            with sync_guard(b):
                fn()
            _sync(b, *net.params.values())
            row[what] = "ok"
        except Exception as exc:
            row[what] = _error(exc)
        log(f"(sync) {b.spec} {what}: {row[what]}")
    return row


def probe_syncs(backends: list[Backend], log: Callable[[str], None]) -> list[dict[str, Any]]:
    x, labels = mnist_like(100, seed=1)
    return [_probe_one(b, x, labels, log) for b in backends]


# -- report -------------------------------------------------------------------------------
def _short(spec: str) -> str:
    return spec.replace(":cuda:0", "").replace(":", " ")


def _fmt_rate(v: dict[str, Any] | None) -> str:
    if not v:
        return "-"
    if "error" in v:
        return "failed"
    r = v["rate"]
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.3f}"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
        lines.append(f"- {_short(spec)}, {dtype}, hidden {hidden}: {verdict}.")
    return lines


def render(result: dict[str, Any]) -> str:
    env = result["env"]
    parts = result["parts"]
    v = env.get("versions", {})
    gpu = "; ".join(env.get("nvidia_smi") or []) or "no nvidia-smi"
    lines = [
        "# GPU: training throughput, numerical gradient, the book's chapter 4 experiment",
        "",
        f"`benchmarks/bench_gpu.py`, {env['date']}. GPU (nvidia-smi: name, driver, memory,"
        f" max SM clock): {gpu}. Python {env['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f". NumPy baseline: {env['cpu_count']}-core {env['cpu']} host,"
        f" {env['numpy_threads']} BLAS thread(s). Total run {result.get('elapsed_s', 0):.0f} s.",
        "",
        "| backend | library | version | device | default dtype |",
        "|---|---|---|---|---|",
        *(
            f"| {s} | {i['library']} | {i['version']} | {i['device_name']} | {i['default_dtype']} |"
            for s, i in env["backends"].items()
        ),
    ]
    if "a" in parts:
        a = parts["a"]
        specs = a["specs"]
        lines += [
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
        ]
        header = ["hidden", "batch", "dtype", "NumPy it/s"]
        for s in specs:
            header += [f"{_short(s)} it/s", f"{_short(s)} ratio"]
        rows = []
        for r in sorted(
            a["rows"], key=lambda r: (r["hidden"], r["dtype"] != "float64", r["batch"])
        ):
            cells = [str(r["hidden"]), f"{r['batch']:,}", r["dtype"], _fmt_rate(r.get("numpy:cpu"))]
            for s in specs:
                cell = r.get(s)
                cells.append(_fmt_rate(cell))
                if cell and "rate" in cell and "rate" in r.get("numpy:cpu", {}):
                    cells.append(_times(cell["rate"] / r["numpy:cpu"]["rate"]))
                else:
                    cells.append("-")
            rows.append(cells)
        lines += markdown_table(header, rows)
        lines += [
            "",
            "Parameters after the warm-up iterations against NumPy's (same dtype, same"
            " minibatches), max|diff| / max|NumPy| over W1, b1, W2, b2; the worst over the"
            " batch sizes and hidden sizes above:",
            "",
        ]
        dtypes = list(dict.fromkeys(r["dtype"] for r in a["rows"]))
        agree = []
        for s in specs:
            cells = [_short(s)]
            for dt in dtypes:
                vals = [
                    r[s]["rel_vs_numpy_after_warmup"]
                    for r in a["rows"]
                    if r["dtype"] == dt and "rel_vs_numpy_after_warmup" in r.get(s, {})
                ]
                cells.append(f"{max(vals):.1e}" if vals else "-")
            agree.append(cells)
        lines += markdown_table(["backend", *dtypes], agree)
        lines += ["", "Crossover (the batch from which the backend beats NumPy):", ""]
        for s in specs:
            lines += _crossover(a, s)
        errors = [
            f"- {_short(s)} batch {r['batch']} hidden {r['hidden']} {r['dtype']}: {r[s]['error']}"
            for r in a["rows"]
            for s in specs
            if "error" in r.get(s, {})
        ]
        if errors:
            lines += ["", "Failures:", "", *errors]
    if "b" in parts:
        b = parts["b"]
        lines += [
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
        ]
        chunk_labels = ["default", *[c for c in b["chunks"] if c != "None"]]
        header = ["backend", "dtype", *[f"chunk {c}" for c in chunk_labels], "best", "vs NumPy"]
        rows = []
        np_ms = {r["dtype"]: r["best_ms"] for r in b["rows"] if r["spec"] == "numpy:cpu"}
        for r in b["rows"]:
            if "error" in r:
                continue
            cells = [_short(r["spec"]), r["dtype"]]
            for c in chunk_labels:
                t = r["times_ms"].get(c)
                cells.append(f"{min(t):.1f} ({statistics.median(t):.1f})" if t else "-")
            speed = np_ms.get(r["dtype"], 0.0) / r["best_ms"] if r["best_ms"] else 0.0
            cells += [
                f"**{r['best_ms']:.1f} ms** (chunk {r['best_chunk']})",
                "-" if r["spec"] == "numpy:cpu" else _times(speed),
            ]
            rows.append(cells)
        lines += markdown_table(header, rows)
        lines += ["", "Agreement with NumPy's gradient (same dtype), best chunk:", ""]
        rows = []
        for r in b["rows"]:
            if "rel_vs_numpy" not in r:
                continue
            rel, elem = r["rel_vs_numpy"], r["elementwise_rel_vs_numpy"]
            goal = ""
            if r["dtype"] == "float64":
                ok = max(rel.values()) <= GOAL_REL and r["best_ms"] <= GOAL_MS
                goal = "met" if ok else "MISSED"
            rows.append(
                [
                    _short(r["spec"]),
                    r["dtype"],
                    *(f"{rel[k]:.1e} / {elem[k]:.1e}" for k in KEYS),
                    goal,
                ]
            )
        lines += markdown_table(
            ["backend", "dtype", *(f"{k} (max rel / elementwise)" for k in KEYS), "goal"], rows
        )
        errors = [
            f"- {r['spec']} {r['dtype']} chunk {r['chunk']}: {r['error']}"
            for r in b["rows"]
            if "error" in r
        ]
        if errors:
            lines += ["", "Failures:", "", *errors]
    if "c" in parts:
        c = parts["c"]
        ref = c["numpy"]
        lines += [
            "",
            "## (c) The book's chapter 4 experiment: training by numerical gradient",
            "",
            f"784-50-10 sigmoid, batch 100, lr 0.1, SGD, {c['iters']:,} iterations, float64,"
            f" on {c['dataset']} ({c['train_size']:,} train / {c['test_size']:,} test"
            " images); the loop of `xgrad.train(gradient='numerical')` with the same seeds and"
            " minibatches. Train and test accuracy every epoch as the book (evaluation time"
            f" not in the rate); stopped after {c['time_limit']:g} s of training if not done."
            f" NumPy ran {ref['iters_done']} iterations of the same loop:"
            f" {ref['rate']:.3f} it/s, i.e. {_duration(c['iters'] / ref['rate'])} for"
            f" {c['iters']:,} iterations.",
            "",
        ]
        rows = []
        for r in c["rows"]:
            if "error" in r:
                rows.append([_short(r["spec"]), "failed: " + str(r["error"]), *["-"] * 7])
                continue
            final = r["final"] or {}
            rows.append(
                [
                    _short(r["spec"]),
                    f"{r['iters_done']:,} / {c['iters']:,}"
                    + ("" if r["finished"] else " (time limit)"),
                    f"{r['train_s']:.1f}",
                    f"{r['rate']:.2f}",
                    _times(r["rate"] / ref["rate"]),
                    _duration(c["iters"] / r["rate"]),
                    f"{r['loss_first']:.3f} -> {r['loss_last_100_mean']:.3f}",
                    f"{final.get('train_acc', math.nan):.4f}"
                    f" / {final.get('test_acc', math.nan):.4f}",
                    f"{r.get('rel_vs_numpy_at_snapshot', float('nan')):.1e}",
                ]
            )
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
            rows,
        )
        for r in c["rows"]:
            if r.get("epochs"):
                accs = ", ".join(f"{e['test_acc']:.3f}" for e in r["epochs"])
                lines += [
                    "",
                    f"{_short(r['spec'])} test accuracy per epoch (chunk {r['chunk']}): {accs}.",
                ]
    if "sync" in parts:
        rows = parts["sync"]
        checks = list(dict.fromkeys(k for r in rows for k in r if k not in ("spec", "note")))
        checks = checks or ["note"]
        lines += [
            "",
            "## Implicit synchronization / host transfers",
            "",
            "Each operation, inputs already on the device, run under the library's guard (CuPy"
            " `allow_synchronize(False)`, torch `set_sync_debug_mode('error')`, JAX"
            " `transfer_guard('disallow')`): `ok` means no implicit device synchronization"
            " or transfer.",
            "",
        ]
        lines += markdown_table(
            ["backend", *checks],
            [[_short(r["spec"]), *(r.get(k, r.get("note", "-")) for k in checks)] for r in rows],
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (out, render(result)),
        (out.with_suffix(".json"), json.dumps(result, indent=1, default=_json_default)),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def merge(paths: list[str]) -> dict[str, Any]:
    """Saved results combined: the parts of later files replace those of earlier ones."""
    result: dict[str, Any] = {"parts": {}, "elapsed_s": 0.0}
    for p in paths:
        data = json.loads(Path(p).read_text())
        result.setdefault("env", data["env"])
        result["env"]["backends"] = {**result["env"]["backends"], **data["env"]["backends"]}
        result["parts"].update(data["parts"])
        result["elapsed_s"] += data.get("elapsed_s", 0.0)
    return result


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--backend",
        action="append",
        default=[],
        help="NAME[:DEVICE] to compare with NumPy (repeatable, comma-separated); default:"
        " every available non-NumPy backend on a GPU",
    )
    ap.add_argument("--parts", default="abcs", help="a, b, c and s (sync probe); default all")
    ap.add_argument("--quick", action="store_true", help="a small version of everything")
    ap.add_argument(
        "--time-limit", type=float, default=480.0, help="seconds of training for (c) at most"
    )
    ap.add_argument("--iters", type=int, default=10_000, help="(c) iterations")
    ap.add_argument(
        "--ch4-chunk",
        default="best",
        help="(c) chunk_size: an int, 'default' (the CPU default) or 'best' (fastest in (b),"
        " else 39250)",
    )
    ap.add_argument(
        "--ch4-backend",
        default=None,
        help="(c) the backend(s) to train on, comma-separated (default: the first selected)",
    )
    ap.add_argument("--numpy-iters", type=int, default=3, help="(c) NumPy iterations timed")
    ap.add_argument("--data-dir", default=None, help="(c) directory with MNIST/Fashion-MNIST")
    ap.add_argument("--dataset", default="auto", choices=("auto", "mnist", "fashion-mnist"))
    ap.add_argument("--min-time", type=float, default=None, help="(a) seconds per cell")
    ap.add_argument("--numpy-threads", default=_THREADS, help="BLAS threads for NumPy")
    ap.add_argument("--out", default=str(OUT), help="markdown file; JSON goes next to it")
    ap.add_argument(
        "--from-json", nargs="+", metavar="JSON", help="render (and merge) saved results only"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.from_json:
        result = merge(args.from_json)
        write_outputs(result, out)
        sys.stdout.write(render(result))
        return 0

    t_start = time.perf_counter()
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(int(_THREADS))
    specs = [s.strip() for item in args.backend for s in item.split(",") if s.strip()]
    if not specs:
        specs, why = gpu_specs()
        if not specs:
            log(
                "bench_gpu: no GPU backend is available here ("
                + "; ".join(f"{k}: {v}" for k, v in why.items())
                + "). Pass --backend NAME[:DEVICE] to run against another one,"
                " e.g. --backend torch --quick for a CPU smoke test."
            )
            return 2
    backends = [xgrad.get_backend(s) for s in specs]
    log("bench_gpu: " + ", ".join(repr(b) for b in backends))
    quick = args.quick
    parts: dict[str, Any] = {}
    result = {"env": environment(backends), "parts": parts, "args": vars(args)}

    def save() -> None:
        result["elapsed_s"] = time.perf_counter() - t_start
        result["env"]["versions"] = _library_versions()
        write_outputs(result, out)

    if args.ch4_backend:
        ch4_backends = [xgrad.get_backend(s.strip()) for s in args.ch4_backend.split(",")]
    else:
        ch4_backends = backends[:1]
    best_chunk: int | None = 39250
    if "s" in args.parts:
        parts["sync"] = probe_syncs(backends, log)
        save()
    if "b" in args.parts:
        parts["b"] = bench_numgrad(
            backends,
            chunks=CHUNKS_QUICK if quick else CHUNKS,
            repeats=2 if quick else 5,
            dtypes=("float64", "float32"),
            log=log,
        )
        best = [
            r["best_chunk"]
            for r in parts["b"]["rows"]
            if r["spec"] == ch4_backends[0].spec and r["dtype"] == "float64" and "best_chunk" in r
        ]
        if best:
            best_chunk = None if best[0] == "default" else int(best[0])
        save()
    if "a" in args.parts:
        parts["a"] = bench_training(
            backends,
            batch_sizes=(100, 1000) if quick else (100, 1_000, 10_000),
            hiddens=(50,) if quick else (50, 1_000),
            dtypes=("float64", "float32"),
            min_time=args.min_time if args.min_time is not None else (0.2 if quick else 1.0),
            warmup=2,
            n_batches=2 if quick else 4,
            log=log,
        )
        save()
    if "c" in args.parts:
        if args.ch4_chunk == "best":
            chunk = best_chunk
        elif args.ch4_chunk == "default":
            chunk = None
        else:
            chunk = int(args.ch4_chunk)
        parts["c"] = bench_ch4(
            ch4_backends,
            load_data(args.data_dir, args.dataset, quick, log),
            iters=min(args.iters, 3) if quick else args.iters,
            time_limit=min(args.time_limit, 30.0) if quick else args.time_limit,
            chunk=chunk,
            numpy_iters=2 if quick else args.numpy_iters,
            log=log,
        )
        save()
    save()
    sys.stdout.write(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
