"""``workers=``: serial against xgrad's process pool and a Dask LocalCluster (issue 14, item 8).

One numerical gradient (``h=1e-3``, 2n evaluations) of an f of real work (NumPy
elementwise transcendental work on 20,000 numbers, calibrated to ~10, 50 and 200 ms, no
sleep), n = 64 and 512: serial (``workers=None``), ``workers=2`` (xgrad's pool of 2
processes) and a ``distributed.LocalCluster`` of 2 worker processes (one thread each),
with parallel efficiency ``T_serial / (2 T_parallel)``. Then the per-task overhead of each
executor (tiny tasks), a model of the time on 100 and 1,000 workers built from those
figures, and the book's chapter 4 numerical-gradient step (the per-element loop of
``TwoLayerNet.numerical_gradient(workers=...)``) on 1 and 2 workers.

Serial times at n = 512 are ``2 n c`` with c the measured cost of one evaluation (the serial
path is that loop; n = 64 checks it against a full serial run), which halves the run.

    python benchmarks/bench_workers.py [--quick] [--out docs/benchmarks/workers.md]
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from _common import environment, write_atomic  # noqa: E402

import xgrad  # noqa: E402
from xgrad import workers as W  # noqa: E402
from xgrad.numdiff import numerical_gradient  # noqa: E402

SIZE = 20_000


class Work:
    """f(v): ``reps`` sums of sin/exp over 20,000 numbers scaled by v (real CPU work)."""

    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.base = np.linspace(0.0, 1.0, SIZE)

    def __call__(self, v: np.ndarray) -> float:
        scale = float(np.sum(v * np.arange(1, v.size + 1))) * 1e-3 + 1.0
        acc = 0.0
        for r in range(self.reps):
            u = self.base * (scale * (1.0 + 1e-3 * r))
            acc += float(np.sum(np.sin(u) * np.exp(-0.1 * u)))
        return acc


def cost_of(f: Work, v: np.ndarray, repeat: int = 5) -> float:
    f(v)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f(v)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibrated(ms: float, v: np.ndarray) -> Work:
    per_rep = cost_of(Work(20), v) / 20
    return Work(max(1, round(ms / 1e3 / per_rep)))


_LAST: dict[str, float] = {}
_close = W.Dispatch.close


def _recording_close(self: W.Dispatch) -> None:
    # What the workers measured: their seconds per evaluation show CPU contention.
    _LAST.update(tasks=self.tasks_sent, per_eval=self.work_s / max(self.evals, 1))
    _close(self)


W.Dispatch.close = _recording_close  # type: ignore[method-assign]


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def overhead(runner: W._Runner, tasks: int = 200) -> float:
    """Wall seconds per task of a trivial f, one evaluation per task, through ``runner``."""
    x = np.ones(4)
    spec = W._Spec(lambda v: float(v[0]), "numpy", "perturb", True, None)
    blob = W.pack(spec, x, xgrad.get_backend("numpy"))
    work = [[(np.array([k % 4]), np.array([2.0]))] for k in range(tasks)]
    runner.run("overhead-warm", blob, work[: 2 * runner.count])
    _, seconds = timed(lambda: runner.run("overhead", blob, work))
    runner.finish("overhead")
    runner.finish("overhead-warm")
    return seconds / tasks


def model(n_evals: int, c: float, workers: int, per_task: float) -> tuple[float, int, int]:
    """(seconds, tasks, largest evaluations per task) of one round on ``workers`` workers.

    As `Dispatch.run` sends it: first one evaluation on each of up to 16 workers (the
    calibration), then the rest in the task sizes of `Dispatch.sizes` (with ``per_task`` as
    the executor's overhead), each task going to the first worker free. The scheduler
    handles tasks one after the other at ``per_task`` seconds each (the measured 2-worker
    figure, an upper bound of Dask's per-task cost), added to the workers' makespan.
    """
    d = object.__new__(W.Dispatch)
    d.unit, d.used, d.cost = 1, 0, c

    class _R:
        count = workers
        overhead = per_task

    d.runner = _R()
    first = min(workers, W._CALIBRATION_TASKS, n_evals)
    rest = n_evals - first
    sizes = W.Dispatch.sizes(d, rest, rest) if rest else []
    free = [0.0] * workers  # a heap of the times the workers become free
    for size in sizes:
        heapq.heapreplace(free, free[0] + size * c)
    seconds = first * per_task + c + len(sizes) * per_task + max(free)
    return seconds, first + len(sizes), max(sizes, default=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 64 only, 10 and 50 ms")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="skip the parallel runs of cells whose serial work 2 n c exceeds this (s)",
    )
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--ch4-batch", type=int, default=10, help="batch of the ch. 4 step (10)")
    args = parser.parse_args()
    import distributed

    costs = [10.0, 50.0] if args.quick else [10.0, 50.0, 200.0]
    sizes = [64] if args.quick else [64, 512]
    rows = []
    # Each executor alone on the machine: an idle LocalCluster beside xgrad's pool (or the
    # pool's processes beside the cluster) slowed the other's evaluations 2.4-fold here.
    numerical_gradient(Work(1), np.ones(4), h=1e-3, workers=2)  # pool started, xgrad imported
    cells = []
    for ms in costs:
        for n in sizes:
            x = np.linspace(0.1, 1.0, n)
            f = calibrated(ms, x)
            c = cost_of(f, x)
            if n <= 64:
                serial, t_serial = timed(lambda f=f, x=x: numerical_gradient(f, x, h=1e-3))
                measured = True
            else:
                serial, t_serial, measured = None, 2 * n * c, False
            if t_serial > args.budget:
                cells.append((ms, n, c, t_serial, measured, None))
                continue
            load = os.getloadavg()[0]
            pool, t_pool = timed(lambda f=f, x=x: numerical_gradient(f, x, h=1e-3, workers=2))
            cells.append(
                (ms, n, c, t_serial, measured, (f, x, serial, pool, t_pool, dict(_LAST), load))
            )
    pool_overhead = overhead(W._PoolRunner(2))
    W.shutdown()
    with W.local_cluster(2) as cluster, distributed.Client(cluster) as client:
        numerical_gradient(Work(1), np.ones(4), h=1e-3, workers=client)  # warm the cluster
        for ms, n, c, t_serial, measured, run in cells:
            if run is None:
                rows.append((ms, n, c, t_serial, measured, None, None, None, {}, {}, 0.0))
                print(rows[-1], flush=True)
                continue
            f, x, serial, pool, t_pool, pool_stats, load = run
            # The serial cost again, now: this shared machine's speed drifts over minutes.
            c_now = cost_of(f, x)
            dask_g, t_dask = timed(
                lambda f=f, x=x: numerical_gradient(f, x, h=1e-3, workers=client)
            )
            dask_stats = {**_LAST, "serial_per_eval": c_now}
            same = serial is None or (
                np.array_equal(serial, pool) and np.array_equal(serial, dask_g)
            )
            same = same and np.array_equal(pool, dask_g)
            rows.append(
                (ms, n, c, t_serial, measured, t_pool, t_dask, same, pool_stats, dask_stats, load)
            )
            print(rows[-1], flush=True)
        per_task = {
            "xgrad pool (workers=2)": pool_overhead,
            "Dask LocalCluster, 2 processes (Client)": overhead(W._ClientRunner(client)),
            "ThreadPoolExecutor(2) (same process)": None,
            "builtin map (same process)": overhead(W._MapRunner(map)),
        }
        import concurrent.futures as cf

        with cf.ThreadPoolExecutor(2) as ex:
            per_task["ThreadPoolExecutor(2) (same process)"] = overhead(W._ExecutorRunner(ex))
        print(per_task, flush=True)
    ch4 = ch4_step(args.ch4_batch)
    print(ch4, flush=True)
    text = render(rows, per_task, ch4, args)
    print(text)
    if args.out:
        write_atomic(Path(args.out), text)


def ch4_step(batch: int) -> dict[str, float]:
    """One numerical-gradient step of the book's 784-50-10 net by the per-element loop."""
    from xgrad.nn import TwoLayerNet

    rng = np.random.default_rng(0)
    x = rng.random((batch, 784))
    t = np.eye(10)[rng.integers(0, 10, batch)]
    net = TwoLayerNet(784, 50, 10, seed=0)
    loss_s = cost_of(lambda _: net.loss(x, t), None, repeat=20)
    out: dict[str, float] = {"batch": batch, "loss_ms": loss_s * 1e3}
    _, out["closed_form_s"] = timed(lambda: net.numerical_gradient(x, t))
    net.numerical_gradient(x[:2], t[:2], workers=2)  # pool warm
    g1, out["workers1_s"] = timed(lambda: net.numerical_gradient(x, t, workers=1))
    g2, out["workers2_s"] = timed(lambda: net.numerical_gradient(x, t, workers=2))
    out["same"] = float(all(np.array_equal(g1[k], g2[k]) for k in g1))
    return out


def render(rows, per_task, ch4, args) -> str:
    return "\n".join(
        [
            *render_cells(rows, args),
            *render_overhead(per_task),
            *render_model(per_task["Dask LocalCluster, 2 processes (Client)"]),
            *render_ch4(ch4),
        ]
    )


def render_cells(rows, args) -> list[str]:
    lines = [
        "# Scale-out: `workers=` on a process pool and a Dask cluster",
        "",
        f"`benchmarks/bench_workers.py{' --quick' if args.quick else ''} --budget "
        f"{args.budget:g}`, one run, {environment()}. One gradient "
        "with `h=1e-3` (2n evaluations, one round of tasks); f: sin/exp over 20,000 numbers, "
        "calibrated to the cost shown. Efficiency = T_serial / (2 T_parallel); 2 workers on "
        "2 cores. Each executor runs alone: the serial and pool cells first, then the pool "
        "shut down and the LocalCluster (`xgrad.workers.local_cluster`) started. Dask's "
        "default `MALLOC_TRIM_THRESHOLD_=65536` in its workers (and in processes started "
        "after it, such as a pool) made this f 2.5 times slower there; `local_cluster` "
        "leaves it out.",
        "",
        "The LocalCluster cells run minutes after the serial ones, and this shared "
        "machine's speed drifts over minutes (the same f measured 40 to 50 ms in one "
        "hour): *f ms serial, then* is f's cost in this process measured again just before "
        "the cluster's run, and the cluster's efficiency is 2n times that over 2 x its "
        "wall time.",
        "",
        "The *f ms on workers* columns are the workers' own seconds per evaluation: above "
        "the serial figure, the two workers did not have two free cores (load = the 1-min "
        "load average before the cell). *busy* = the workers' seconds in f / (2 x wall): "
        "the fraction of the parallel run spent evaluating f, whatever the machine's load. "
        "*overhead* = 1 / busy - 1: the wall time in which a worker was not evaluating f "
        "(scheduling, shipping, waiting for the round's last task), as a fraction of the "
        "work; it is the framework's whole cost, load imbalance included.",
        "",
        "| f cost (target) | n | f ms serial | serial s | workers=2 s | efficiency | tasks | "
        "f ms on workers | busy | overhead | f ms serial, then | LocalCluster(2) s | "
        "efficiency | tasks | f ms on workers | busy | overhead | bit-identical | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ms, n, c, ts, measured, tp, td, same, ps, ds, load in rows:
        serial = f"{ts:.2f}" if measured else f"{ts:.2f} (2n c)"
        if tp is None:
            lines.append(
                f"| {ms:.0f} ms | {n} | {c * 1e3:.1f} | {serial} | not run (over --budget "
                f"{args.budget:.0f} s) |" + " |" * 14
            )
            continue
        cells = []
        for t, stats, serial_s in ((tp, ps, ts), (td, ds, 2 * n * ds["serial_per_eval"])):
            busy = stats["per_eval"] * 2 * n / (2 * t)
            cells.append(
                f"{t:.2f} | {serial_s / (2 * t):.2f} | {stats['tasks']} | "
                f"{stats['per_eval'] * 1e3:.1f} | {busy:.3f} | {100 * (1 / busy - 1):.1f} %"
            )
        cells[1] = f"{ds['serial_per_eval'] * 1e3:.1f} | {cells[1]}"
        lines.append(
            f"| {ms:.0f} ms | {n} | {c * 1e3:.1f} | {serial} | {cells[0]} | {cells[1]} "
            f"| {same} | {load:.1f} |"
        )
    return lines


def render_overhead(per_task) -> list[str]:
    lines = [
        "",
        "## Per-task overhead",
        "",
        "Wall time per task of a trivial f (one evaluation per task, 200 tasks after a warm-"
        "up), i.e. what the executor costs per task at its throughput limit.",
        "",
        "| executor | ms per task |",
        "|---|---|",
    ]
    return [*lines, *(f"| {name} | {s * 1e3:.2f} |" for name, s in per_task.items())]


def render_model(o: float) -> list[str]:
    lines = [
        "",
        "## Model: 100 and 1,000 workers",
        "",
        "From the figures above: a derivative's first round starts with one evaluation on "
        "each of up to 16 workers (the calibration: one wave of c), then the rest of the "
        "E evaluations of cost c is cut into tasks as "
        "`Dispatch.sizes` cuts them (largest first: at most `TASK_SECONDS` = "
        f"{W.TASK_SECONDS:g} s of work and a 2W-th of what is left, at least `LOAD_FACTOR` = "
        f"{W.LOAD_FACTOR} tasks per worker, but at least `OVERHEAD_FACTOR` = "
        f"{W.OVERHEAD_FACTOR} times the executor's per-task cost, <= `MAX_TASKS` = "
        f"{W.MAX_TASKS:,} per derivative), each task going to the first free worker; the "
        "scheduler handles tasks one after the other at the measured Dask cost of "
        f"{o * 1e3:.2f} ms per task: T(W) = tasks x o + c + the workers' makespan. "
        "Serial is E x c.",
        "",
        "| E (n) | f cost | workers | tasks | evals/task (largest) | modelled s | serial s "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in (512, 39_760):
        for c in (0.01, 0.2, 5.0) if n == 512 else (0.0016,):
            for w in (100, 1000):
                t, tasks, k = model(2 * n, c, w, o)
                serial = 2 * n * c
                lines.append(
                    f"| {2 * n:,} ({n:,}) | {c * 1e3:g} ms | {w:,} | {tasks:,} | {k} | {t:.2f} | "
                    f"{serial:.1f} | {serial / t:.0f}x |"
                )
    return [
        *lines,
        "",
        "The last rows are the book's chapter 4 step (39,760 parameters, 79,520 losses of "
        "~1.6 ms at batch 100, bench_nets.md): the loop would take ~2 min a step serially. "
        "Small f on many workers is bound by the scheduler's per-task cost, which the "
        "chunking keeps to a few thousand tasks a round.",
    ]


def render_ch4(ch4) -> list[str]:
    return [
        "",
        "## The book's chapter 4 step on 1 and 2 workers",
        "",
        f"`TwoLayerNet(784, 50, 10).numerical_gradient(x, t, workers=...)` (the per-element "
        f"loop, 79,520 losses), batch {ch4['batch']} of synthetic data, float64; a loss costs "
        f"{ch4['loss_ms']:.2f} ms here.",
        "",
        "| path | s per step |",
        "|---|---|",
        f"| closed form, one core (`workers=None`) | {ch4['closed_form_s']:.3f} |",
        f"| loop, workers=1 | {ch4['workers1_s']:.1f} |",
        f"| loop, workers=2 | {ch4['workers2_s']:.1f} "
        f"(speed-up {ch4['workers1_s'] / ch4['workers2_s']:.2f}x; bit-identical: "
        f"{bool(ch4['same'])}) |",
        "",
    ]


if __name__ == "__main__":
    main()
