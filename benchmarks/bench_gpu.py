"""GPU benchmarks of issue 6: every figure a ratio against NumPy on the same machine, same run.

The suite lives in ``benchmarks/gpu/``, one topic per module on ``gpu.base.Topic`` (setup,
synchronize, measure, render):

(a) ``gpu/training.py``: backprop training throughput of ``TwoLayerNet`` (784-H-10, ReLU)
    at batch 100, 1,000 and 10,000, hidden 50 and 1,000, float64 and float32, and where the
    accelerator starts to win (the crossover).
(b) ``gpu/numgrad.py``: one full ``TwoLayerNet.numerical_gradient`` (784-50-10 sigmoid,
    batch 100) for several ``chunk_size`` values, against NumPy's result (goal: <= 50 ms
    on an H100-class GPU and a relative difference <= 1e-9 in float64).
(c) ``gpu/ch4.py``: the book's chapter 4 experiment, training by numerical gradient through
    the loop of ``xgrad.train(gradient="numerical")``, 10,000 iterations or
    ``--time-limit`` seconds, on MNIST or Fashion-MNIST when found (``--data-dir``).
(s) ``gpu/sync.py``: whether a training step, an SGD update and a numerical gradient with
    inputs already on the device run without an implicit synchronization or host transfer.

This script sets the environment (BLAS threads, JAX's GPU memory) before NumPy is imported,
selects the backends and runs the parts in the order s, b, a, c. NumPy runs with
``--numpy-threads`` BLAS threads (default 1, as every CPU table of the project). Writes a
markdown table to ``--out`` (default docs/benchmarks/gpu.md) and the raw numbers as JSON
next to it, after each part; ``--from-json`` re-renders (and merges) saved JSON files, so
the parts may run in separate device calls::

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
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from gpu import TOPICS  # noqa: E402
from gpu.environment import environment, gpu_specs, library_versions  # noqa: E402
from gpu.report import merge, render, write_outputs  # noqa: E402

import xgrad  # noqa: E402
from xgrad.backends import Backend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks" / "gpu.md"


def log(msg: str) -> None:
    """A progress line on stderr (stdout gets the table)."""
    print(msg, file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    """The command line; every topic reads its own options from the parsed namespace."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
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
    return ap


def select_backends(requested: list[str]) -> list[Backend] | None:
    """``--backend`` (repeatable, comma-separated), else every GPU backend; None if none."""
    specs = [s.strip() for item in requested for s in item.split(",") if s.strip()]
    if not specs:
        specs, why = gpu_specs()
        if not specs:
            log(
                "bench_gpu: no GPU backend is available here ("
                + "; ".join(f"{k}: {v}" for k, v in why.items())
                + "). Pass --backend NAME[:DEVICE] to run against another one,"
                " e.g. --backend torch --quick for a CPU smoke test."
            )
            return None
    return [xgrad.get_backend(s) for s in specs]


def run(args: argparse.Namespace, backends: list[Backend], out: Path, t_start: float) -> None:
    """Each selected topic: setup, measure, and the outputs rewritten after it, so that a
    device call cut short still returns the parts that finished."""
    log("bench_gpu: " + ", ".join(repr(b) for b in backends))
    topics = [topic(args, log) for topic in TOPICS if topic.letter in args.parts]
    parts: dict[str, Any] = {}
    result: dict[str, Any] = {
        "env": environment(backends, int(_THREADS)),
        "parts": parts,
        "args": vars(args),
    }

    def save() -> None:
        result["elapsed_s"] = time.perf_counter() - t_start
        result["env"]["versions"] = library_versions()
        write_outputs(result, out)

    for topic in topics:
        topic.setup(backends)
        parts[topic.key] = topic.measure(backends, parts)
        save()
    save()
    sys.stdout.write(render(result))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if args.from_json:
        result = merge(args.from_json)
        write_outputs(result, out)
        sys.stdout.write(render(result))
        return 0
    t_start = time.perf_counter()
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(int(_THREADS))
    backends = select_backends(args.backend)
    if backends is None:
        return 2
    run(args, backends, out, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
