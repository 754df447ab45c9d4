"""``workers=``: finite differences on a process pool, an executor, a Dask cluster or devices.

Every derivative that evaluates f at perturbed copies of x (`numerical_gradient`,
`jacobian`, `hessian`, `gradcheck`) takes ``workers=``:

- ``None``: serial, in this process (the book's in-place semantics);
- an int ``n``: a pool of ``n`` processes (``-1``: one per CPU) that xgrad starts once and
  reuses; f is serialized with cloudpickle, so lambdas and closures travel;
- a map-like callable ``workers(fn, iterable)`` (scipy's convention: ``Pool.map``,
  ``Executor.map``, the builtin ``map``), results in order;
- a `concurrent.futures.Executor`, including ``distributed.Client.get_executor()``;
- a ``distributed.Client`` (f and x are scattered once per derivative, not per task);
- a list of backend specs (``["cupy:0", "cupy:1"]``): perturbations are sharded across the
  devices, one thread per device, in this process, and gathered on x's device.

Why cloudpickle over `concurrent.futures.ProcessPoolExecutor` rather than loky: the
executor is the standard library's (nothing to install beyond cloudpickle, which Dask
already requires), f travels as cloudpickle bytes inside each task so any executor or
map-like gets the same payload, and the retry on a dead worker is done here, where the
pool is known to be ours (loky's reusable executor would restart it, but cannot resubmit
the lost tasks either).

Determinism: the engine asks for f at a list of points per step level (a *round*); the
round is cut into tasks of whole serial batches, each task evaluates f exactly as the
serial path would (in place on a private copy of x, or on stacked copies), and results are
put back by task index, never by completion order. The numbers are therefore bit for bit
those of ``workers=None``, for any worker count and scheduling.

Chunking: a derivative's first round starts with one serial batch per worker, which the
workers time; the rest of the round is cut from that cost, largest tasks first (guided
self-scheduling, `guided`): a task holds at most `TASK_SECONDS` of work and a
``2 x workers``-th of what is left, so the round ends in tasks of one batch and no worker
waits long for the last; at least `LOAD_FACTOR` tasks per worker per round; never fewer
than `OVERHEAD_FACTOR` times the executor's per-task cost; and a derivative never sends
more than `MAX_TASKS` tasks. This process
evaluates nothing for the calibration: on a 200 ms f, timing it here first would leave
the workers idle for a whole evaluation (1.6 % of a 64-element gradient on 2 workers).
Only when every value of the first round is the same (f may ignore its argument and read
x through a closure) does this process evaluate f itself to tell the two apart.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import functools
import io
import itertools
import math
import multiprocessing
import os
import pickle
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError

__all__ = [
    "LOAD_FACTOR",
    "MAX_TASKS",
    "OVERHEAD_FACTOR",
    "RETRIES",
    "TASK_SECONDS",
    "ClosureError",
    "ShippingError",
    "WorkerLostError",
    "WorkersError",
    "shutdown",
]

#: Most tasks one derivative (a gradient, a Jacobian, a Hessian) sends, whatever n is:
#: Dask's scheduler stalls on ~1e5 tasks at once (dask/distributed #2181).
MAX_TASKS = 10_000
#: Work per task at most, in seconds of f: the per-task cost (on a 2-worker LocalCluster
#: here, 2.3 ms at its throughput limit and up to 5 ms between a worker's tasks while f
#: keeps both cores busy; 0.26 ms on the pool) stays near 0.1 % of it. The tail of a round
#: is cut finer (`guided`), so long tasks do not leave workers waiting at its end. A 200 ms
#: f, n = 512, LocalCluster(2): overhead 0.58 % at 1 s, 0.26 % at 4 s.
TASK_SECONDS = 4.0
#: Tasks per worker per round, at least: a round ends when its slowest worker does, so a
#: few tasks each even out uneven speeds.
LOAD_FACTOR = 4
#: Times a task lost with its worker process is sent again before giving up.
RETRIES = 2
#: A task holds at least this many times its executor's own per-task cost of work, even
#: when that leaves workers idle: on many workers a cheap f would otherwise be one
#: evaluation per task, and the scheduler, not f, would set the pace.
OVERHEAD_FACTOR = 20
# Tasks kept aside from the budget so that every later round still gets one.
_RESERVE = 256
# Calibration tasks at most (one serial batch each), so that a thousand workers do not
# start with a thousand one-evaluation tasks through the scheduler.
_CALIBRATION_TASKS = 16


class WorkersError(ArgumentError):
    """``workers`` (or what it must ship) cannot be used; the message says why and what to do."""


class ClosureError(WorkersError):
    """f reads the array being differentiated through a closure or a global, not its argument."""


class ShippingError(WorkersError):
    """f or x cannot be sent to worker processes (not serializable, or on an accelerator)."""


class WorkerLostError(XgradError, RuntimeError):
    """Worker processes died more often than `RETRIES` allows, or a foreign pool broke."""


# -- worker side -------------------------------------------------------------------------

# Unpacked payloads by key, per process (and per thread: evaluators perturb their private
# copy of x in place, which threads of one process must not share).
_CACHE: OrderedDict[tuple[str, int], Any] = OrderedDict()
_CACHE_SIZE = 32
_CACHE_LOCK = threading.Lock()


class _Spec:
    """What a worker needs to evaluate f at perturbations of x (x itself in ``base``)."""

    def __init__(
        self,
        call: Callable[[Any], Any],
        backend: str,
        kind: str,
        inplace: bool,
        batch_size: int | None,
        out_shape: tuple[int, ...] = (),
        chunk_size: int | None = None,
    ) -> None:
        self.call, self.backend, self.kind = call, backend, kind
        self.inplace, self.batch_size = inplace, batch_size
        self.out_shape, self.chunk_size = out_shape, chunk_size

    def evaluator(self, base: Any) -> Any:
        """The serial evaluator of this spec on a private copy of ``base``."""
        from xgrad.backends import get_backend

        b = get_backend(self.backend)
        work = b.xp.asarray(base, copy=True)
        if self.kind == "hessian":
            from xgrad._evaluators import HessianValues

            return b, HessianValues(self.call, b, work, self.batch_size, self.chunk_size)
        from xgrad._evaluators import PerturbOps

        ops = PerturbOps(
            self.call,
            b,
            work,
            inplace=self.inplace,
            batch_size=self.batch_size,
            out_shape=self.out_shape,
        )
        return b, ops


def _evaluate(found: tuple[Any, Any], task: Sequence[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """f at each segment of ``task``, on the host, as the serial evaluator computes it."""
    _, ops = found
    return [ops.worker_rows(*seg) for seg in task]


def _run_task(key: str, blob: tuple[bytes, bytes], task: Any) -> tuple[list[np.ndarray], float]:
    """Worker entry point: unpack (once per process and thread), evaluate, time."""
    ident = (key, threading.get_ident())
    with _CACHE_LOCK:
        found = _CACHE.get(ident)
    if found is None:
        spec, base = pickle.loads(blob[0]), pickle.loads(blob[1])
        found = spec.evaluator(base)
        with _CACHE_LOCK:
            _CACHE[ident] = found
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        values = _evaluate(found, task)
    return values, time.perf_counter() - start


def _forget(key: str) -> None:
    with _CACHE_LOCK:
        for ident in [i for i in _CACHE if i[0] == key]:
            del _CACHE[ident]


# -- shipping checks ---------------------------------------------------------------------


class _Reached(Exception):
    pass


def _finder_class() -> Any:
    import cloudpickle

    class Finder(cloudpickle.Pickler):
        """Pickles f and stops where it reaches the array being differentiated."""

        def __init__(self, file: Any, target: Any) -> None:
            super().__init__(file)
            self.target = target

        def reducer_override(self, obj: Any) -> Any:
            t = self.target
            if obj is t or (
                isinstance(obj, np.ndarray)
                and isinstance(t, np.ndarray)
                and np.may_share_memory(obj, t)
            ):
                raise _Reached
            return super().reducer_override(obj)

    return Finder


def _import_cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError:
        raise ShippingError(
            "workers: sending f to worker processes needs cloudpickle (pip install "
            "'xgrad[dask]' or pip install cloudpickle); a list of devices needs nothing"
        ) from None
    return cloudpickle


def closure_message(name: str) -> str:
    return (
        f"workers: f reads {name}, the array being differentiated, through a closure or a "
        "global instead of its argument (the book's `lambda W: net.loss(x, t)`). On a worker "
        f"f gets a copy of {name} that it would not read, and every derivative would be 0. "
        "With workers, f must compute from the array it receives: write "
        "`lambda W: loss(W)` where loss uses W (for a dict of parameters, "
        "`lambda p: model_loss(p, x, t)`), or call `net.numerical_gradient(x, t, "
        "workers=...)` for TwoLayerNet; or drop workers= for the book's in-place semantics"
    )


def check_closure(f: Any, target: Any, name: str) -> None:
    """Raise `ClosureError` where pickling f reaches ``target`` (or a NumPy view of it)."""
    _import_cloudpickle()
    finder = _finder_class()(io.BytesIO(), target)
    try:
        finder.dump(f)
    except _Reached:
        raise ClosureError(closure_message(name)) from None
    except Exception:
        # Unpicklable f: said by `pack` where f must travel; a device list does not ship it.
        return


def pack(spec: _Spec, base: Any, backend: Any) -> tuple[bytes, bytes]:
    """The payload (spec, x) as two pickles, or a `ShippingError` saying what cannot travel."""
    cloudpickle = _import_cloudpickle()
    if backend.accelerator:
        raise ShippingError(
            f"workers: x is on {backend.spec} (an accelerator): its arrays cannot leave this "
            "process for worker processes. Pass a list of devices instead (workers="
            f"['{backend.name}:0', '{backend.name}:1'], one thread per device), or move x to "
            "the CPU"
        )
    try:
        spec_bytes = cloudpickle.dumps(spec)
    except Exception as exc:
        raise ShippingError(
            "workers: f cannot be serialized for worker processes "
            f"({type(exc).__name__}: {exc}); f must not hold locks, open files, "
            "generators or device handles. Build such resources inside f, or use a list of "
            "devices (threads in this process)"
        ) from exc
    try:
        base_bytes = cloudpickle.dumps(base)
    except Exception as exc:
        raise ShippingError(
            f"workers: x ({type(base).__name__} of {backend.spec}) cannot be serialized for "
            f"worker processes ({type(exc).__name__}: {exc})"
        ) from exc
    return spec_bytes, base_bytes


# -- runners -------------------------------------------------------------------------------


class _Runner:
    """Runs tasks of one payload; results in task order."""

    ships = True
    count = 1
    # Typical seconds the executor spends per task (measured in benchmarks/bench_workers.py).
    overhead = 0.0

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        raise NotImplementedError

    def finish(self, key: str) -> None:
        return None


def _gather(futures: list[Any], ordered: list[Any]) -> None:
    index = {fut: k for k, fut in enumerate(futures)}
    for fut in cf.as_completed(futures):
        ordered[index[fut]] = fut.result()


def _cancel(futures: list[Any]) -> None:
    for fut in futures:
        fut.cancel()


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int, fresh: bool = False) -> cf.ProcessPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if fresh and pool is not None:
            _kill(pool)
            pool = None
        if pool is None:
            pool = _POOLS[n] = cf.ProcessPoolExecutor(n, mp_context=_spawn_context())
        return pool


_SPAWN_LOCK = threading.Lock()


class _SpawnProcess(multiprocessing.context.SpawnProcess):
    """spawn, without re-running the caller's script in every child.

    spawn, not fork: forking a process that runs BLAS, torch or Dask threads can deadlock
    the child (and spawn is what macOS and Windows do). But plain spawn imports the main
    script again in each child, which restarts an unguarded script's work there (no
    ``if __name__ == "__main__"``); the children need none of it, since f travels by
    cloudpickle, so the main module is left out of their start-up data.
    """

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        from multiprocessing import spawn

        original = spawn.get_preparation_data

        def without_main(name: str) -> dict[str, Any]:
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        with _SPAWN_LOCK:
            spawn.get_preparation_data = without_main
            try:
                return multiprocessing.context.SpawnProcess._Popen(process_obj)
            finally:
                spawn.get_preparation_data = original


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess


def _spawn_context() -> Any:
    return _SpawnContext()


def _kill(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now, running tasks included (Ctrl-C must not wait for f)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)
    with_pool = [k for k, v in _POOLS.items() if v is pool]
    for k in with_pool:
        del _POOLS[k]


def shutdown() -> None:
    """Stop the process pools that integer ``workers=`` started (also done at exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


class _PoolRunner(_Runner):
    """xgrad's own process pool: rebuilt and the lost tasks resent when a worker dies."""

    overhead = 5e-4

    def __init__(self, n: int) -> None:
        self.count = n

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        ordered: list[Any] = [None] * len(tasks)
        lost = 0
        while True:
            pool = _pool(self.count)
            todo = [k for k, r in enumerate(ordered) if r is None]
            futures: list[Any] = []
            part: list[Any] = [None] * len(todo)
            try:
                # Submitted inside the try: a Ctrl-C while submitting cancels too.
                futures.extend(pool.submit(_run_task, key, blob, tasks[k]) for k in todo)
                _gather(futures, part)
            except cf.BrokenExecutor as exc:
                for k, r in zip(todo, part, strict=True):
                    ordered[k] = r
                lost += 1
                if lost > RETRIES:
                    raise WorkerLostError(
                        f"workers: worker processes died {lost} times in one derivative "
                        f"(the last: {exc}); f may crash its process (out of memory, a "
                        "segfault in an extension)"
                    ) from exc
                _pool(self.count, fresh=True)
                continue
            except BaseException:
                _cancel(futures)
                with _POOLS_LOCK:
                    _kill(pool)
                raise
            for k, r in zip(todo, part, strict=True):
                ordered[k] = r
            return ordered


class _ExecutorRunner(_Runner):
    overhead = 5e-4

    def __init__(self, executor: cf.Executor) -> None:
        self.executor = executor
        self.count = int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1)

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        futures: list[Any] = []
        ordered: list[Any] = [None] * len(tasks)
        try:
            futures.extend(self.executor.submit(_run_task, key, blob, t) for t in tasks)
            _gather(futures, ordered)
        except cf.BrokenExecutor as exc:
            _cancel(futures)
            raise WorkerLostError(
                f"workers: the executor broke ({exc}): a worker process died and a "
                "concurrent.futures pool cannot be restarted from outside; pass an int "
                "(xgrad's own pool resends lost tasks) or a distributed.Client"
            ) from exc
        except BaseException:
            _cancel(futures)
            raise
        return ordered

    def finish(self, key: str) -> None:
        # A thread pool unpacks in this process: drop what it cached.
        _forget(key)


class _MapRunner(_Runner):
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.count = os.cpu_count() or 1

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        out = list(self.fn(functools.partial(_run_task, key, blob), tasks))
        if len(out) != len(tasks):
            raise WorkersError(
                f"workers: the map-like returned {len(out)} results for {len(tasks)} tasks; "
                "it must behave as map(fn, iterable)"
            )
        return out

    def finish(self, key: str) -> None:
        _forget(key)


class _ClientRunner(_Runner):
    """A ``distributed.Client``: the payload is scattered once, tasks refer to it."""

    overhead = 2e-3

    def __init__(self, client: Any) -> None:
        self.client = client
        self.count = max(1, sum(client.nthreads().values()))
        self.scattered: dict[str, Any] = {}

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        from distributed import KilledWorker

        client = self.client
        ordered: list[Any] = [None] * len(tasks)
        done = [False] * len(tasks)
        for attempt in range(RETRIES + 1):
            if key not in self.scattered:
                # On every worker: a copy held by one worker only dies with it.
                self.scattered[key] = client.scatter(blob, hash=False, broadcast=True)
            ref = self.scattered[key]
            todo = [k for k in range(len(tasks)) if not done[k]]
            futures: list[Any] = []
            try:
                # One map: the scheduler receives the round as one graph update, not a
                # message per task.
                futures.extend(
                    client.map(
                        _run_task,
                        [key] * len(todo),
                        [ref] * len(todo),
                        [tasks[k] for k in todo],
                        pure=False,
                    )
                )
                for k, value in zip(todo, client.gather(futures), strict=True):
                    ordered[k] = value
                return ordered
            except KilledWorker as exc:
                client.cancel(futures)
                raise WorkerLostError(
                    f"workers: the Dask scheduler gave up on a task whose workers kept dying "
                    f"({exc}); raise distributed.scheduler.allowed-failures or check f's memory"
                ) from exc
            except cf.CancelledError as exc:
                # The payload was lost with a worker: keep what finished, send it again.
                for k, fut in zip(todo, futures, strict=True):
                    if fut.status == "finished":
                        ordered[k], done[k] = fut.result(), True
                client.cancel(futures)
                self.finish(key)
                if attempt == RETRIES:
                    raise WorkerLostError(
                        f"workers: Dask lost tasks {RETRIES + 1} times ({exc})"
                    ) from exc
            except BaseException:
                client.cancel(futures)
                raise
        raise AssertionError("unreachable")

    def finish(self, key: str) -> None:
        ref = self.scattered.pop(key, None)
        if ref is not None:
            self.client.cancel([ref])


class DeviceRunner(_Runner):
    """One thread per device, in this process; no serialization."""

    ships = False

    def __init__(self, backends: list[Any]) -> None:
        self.backends = backends
        self.count = len(backends)
        self.evaluators: dict[str, list[Any]] = {}

    def prepare(self, key: str, spec: _Spec, base: Any, home: Any) -> None:
        host = home.to_numpy(base)
        evals = []
        for b in self.backends:
            moved = b.asarray(host, dtype=b.dtype_name(base.dtype))
            spec_b = _Spec(
                spec.call,
                b.spec,
                spec.kind,
                spec.inplace,
                spec.batch_size,
                spec.out_shape,
                spec.chunk_size,
            )
            evals.append(spec_b.evaluator(moved))
        self.evaluators[key] = evals

    def run(self, key: str, blob: Any, tasks: list[Any]) -> list[Any]:
        evals = self.evaluators[key]
        ordered: list[Any] = [None] * len(tasks)
        stop = threading.Event()

        def loop(d: int) -> None:
            # Round-robin shards (task k on device k mod D): every device gets its share
            # even when the first could run them all before the others start.
            for k in range(d, len(tasks), len(evals)):
                if stop.is_set():
                    return
                start = time.perf_counter()
                with np.errstate(all="ignore"):
                    values = _evaluate(evals[d], tasks[k])
                ordered[k] = (values, time.perf_counter() - start)

        with cf.ThreadPoolExecutor(len(evals)) as pool:
            futures = [pool.submit(loop, d) for d in range(len(evals))]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                stop.set()
                raise
        return ordered

    def finish(self, key: str) -> None:
        self.evaluators.pop(key, None)


def _is_client(obj: Any) -> bool:
    mod = sys.modules.get("distributed")
    return mod is not None and isinstance(obj, mod.Client)


def resolve(workers: Any, like: Any = None) -> _Runner | None:
    """The runner for a ``workers=`` value (None: serial); `WorkersError` for bad values.

    ``like`` is x's backend, which a list of devices must share.
    """
    if workers is None:
        return None
    if isinstance(workers, bool):
        raise ArgumentTypeError(
            f"workers: expected None, an int, an executor, a map-like callable, a "
            f"distributed.Client or a list of backend specs, found {workers!r}"
        )
    if isinstance(workers, int | np.integer):
        n = int(workers)
        if n == -1:
            n = os.cpu_count() or 1
        if n < 1:
            raise WorkersError(
                f"workers: expected a number of processes >= 1 (or -1: one per CPU), found {n}"
            )
        return _PoolRunner(n)
    if _is_client(workers):
        return _ClientRunner(workers)
    if isinstance(workers, cf.Executor):
        inner = getattr(workers, "_client", None)
        if _is_client(inner):
            return _ClientRunner(inner)
        return _ExecutorRunner(workers)
    if isinstance(workers, list | tuple):
        return _devices(workers, like)
    if callable(workers):
        return _MapRunner(workers)
    raise ArgumentTypeError(
        "workers: expected None, an int, a concurrent.futures.Executor, a map-like "
        "callable workers(fn, iterable), a distributed.Client or a list of backend specs, "
        f"found {type(workers).__name__}"
    )


def _devices(specs: Sequence[Any], like: Any) -> DeviceRunner:
    from xgrad.backends import Backend, get_backend

    if not specs:
        raise WorkersError("workers: expected a non-empty list of backend specs, found []")
    backends = []
    for s in specs:
        if isinstance(s, Backend):
            backends.append(s)
        elif isinstance(s, str):
            backends.append(get_backend(s))
        else:
            raise ArgumentTypeError(
                "workers: a list must hold backend specs such as 'cupy:0' or Backend "
                f"objects, found {type(s).__name__} {s!r}"
            )
    names = {b.name for b in backends}
    if len(names) > 1 or (like is not None and like.name not in names):
        found = sorted(names | ({like.name} if like is not None else set()))
        raise WorkersError(
            "workers: the devices must belong to x's array library (so every device computes "
            f"the same numbers), found {', '.join(found)}"
        )
    if len(set(backends)) != len(backends):
        raise WorkersError(f"workers: each device once, found {[b.spec for b in backends]}")
    return DeviceRunner(backends)


# -- the dispatcher of one derivative ------------------------------------------------------


class Dispatch:
    """f's perturbations for one derivative, sent as tasks to a runner.

    ``segments`` are what the serial evaluator would process in one go (one point's active
    elements, the Hessian's singles or pairs); tasks are cut from them in whole units of
    ``batch_size`` rows, so f sees exactly the serial stacks.
    """

    def __init__(
        self,
        runner: _Runner,
        spec: _Spec,
        base: Any,
        backend: Any,
        *,
        f: Callable[[Any], Any],
        target: Any,
        name: str,
        argument_check: Callable[[], None],
        check: bool = True,
    ) -> None:
        self.runner, self.spec, self.backend = runner, spec, backend
        self.unit = spec.batch_size or 1
        self.used = 0
        self.tasks_sent = 0
        self.work_s = 0.0
        self.evals = 0
        self.key = uuid.uuid4().hex
        if check:
            check_closure(f, target, name)
        # Run in this process only if the first round cannot show that f uses its argument.
        self.argument_check: Callable[[], None] | None = argument_check if check else None
        self.blob: Any = None
        if runner.ships:
            self.blob = pack(spec, base, backend)
        else:
            assert isinstance(runner, DeviceRunner)
            runner.prepare(self.key, spec, base, backend)
        # Seconds per evaluation, from the workers' own measurements (None: none yet).
        self.cost: float | None = None

    def close(self) -> None:
        self.runner.finish(self.key)

    def chunk(self, rows: int) -> int:
        """Rows per task, at most, for a round of ``rows`` evaluations (once the cost is
        known): `TASK_SECONDS` of work, and `LOAD_FACTOR` tasks per worker at least."""
        assert self.cost is not None
        by_time = max(1, math.ceil(TASK_SECONDS / self.cost))
        by_balance = max(1, math.ceil(rows / (LOAD_FACTOR * self.runner.count)))
        k = max(min(by_time, by_balance), self.floor(rows))
        return self.unit * math.ceil(k / self.unit)

    def sizes(self, rows: int, units: int) -> list[int]:
        """Task sizes, in units of ``batch_size``, for a round of ``rows`` evaluations in
        ``units`` units: largest first, down to `floor` (`guided`)."""
        largest = self.chunk(rows) // self.unit
        smallest = min(largest, -(-self.floor(rows) // self.unit))
        return guided(units, self.runner.count, largest, smallest, self.allowed())

    def floor(self, rows: int) -> int:
        """Rows per task, at least: `OVERHEAD_FACTOR` times the executor's per-task cost,
        and few enough tasks that the derivative's `MAX_TASKS` holds."""
        assert self.cost is not None
        k = max(1, math.ceil(OVERHEAD_FACTOR * self.runner.overhead / self.cost))
        return max(k, math.ceil(rows / self.allowed()))

    def allowed(self) -> int:
        """Tasks this round may send: an eighth of what the budget has left."""
        return max(1, (MAX_TASKS - _RESERVE - self.used) // 8)

    def run(self, segments: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
        """f at every row of every segment; host arrays, one per segment, in order."""
        rows = sum(len(s[0]) for s in segments)
        if rows == 0:
            return [np.empty(0) for _ in segments]
        pieces: list[list[np.ndarray]] = [[] for _ in segments]
        done = [0] * len(segments)
        if self.cost is None:
            # Calibration: one serial batch for each worker, first, timed where it runs.
            limit = min(self.runner.count, _CALIBRATION_TASKS)
            self._send(self._cut(segments, done, [1] * limit), pieces, done)
            rows -= sum(done)
        if rows:
            pairs = zip(segments, done, strict=True)
            units = sum(-(-(len(seg[0]) - d) // self.unit) for seg, d in pairs)
            self._send(self._cut(segments, done, self.sizes(rows, units)), pieces, done)
        out = [np.concatenate(p, axis=0) for p in pieces]
        if self.argument_check is not None:
            check, self.argument_check = self.argument_check, None
            values = [row for part in out for row in part]
            if len(values) < 2 or all(np.array_equal(v, values[0]) for v in values[1:]):
                check()  # ClosureError if f reads x through a closure
        return out

    def _cut(
        self,
        segments: list[tuple[np.ndarray, ...]],
        done: list[int],
        sizes: list[int],
    ) -> list[list[tuple[int, tuple[np.ndarray, ...]]]]:
        """The next ``sum(sizes)`` units not yet sent, as tasks of ``sizes`` units each; a
        task is a list of (segment, piece).

        Rows are dealt in units of ``batch_size`` counted from each segment's start, so a
        piece starts at a multiple of the unit within its segment and f's stacks are the
        serial ones; a task may hold the end of one segment and the start of the next.
        """
        unit = self.unit
        left = [-(-(len(seg[0]) - d) // unit) for seg, d in zip(segments, done, strict=True)]
        offsets = [0]
        for count in left:
            offsets.append(offsets[-1] + count)
        bounds = [min(b, offsets[-1]) for b in itertools.accumulate(sizes, initial=0)]
        out: list[list[tuple[int, tuple[np.ndarray, ...]]]] = []
        s = 0
        for a, b in itertools.pairwise(bounds):
            if a == b:  # past the last unit
                break
            task: list[tuple[int, tuple[np.ndarray, ...]]] = []
            while a < b:
                while offsets[s + 1] <= a:  # skip segments already dealt out (or empty)
                    s += 1
                stop = min(b, offsets[s + 1])
                seg, n = segments[s], len(segments[s][0])
                lo = done[s] + (a - offsets[s]) * unit
                hi = min(n, done[s] + (stop - offsets[s]) * unit)
                task.append((s, tuple(column[lo:hi] for column in seg)))
                a = stop
            out.append(task)
        return out

    def _send(
        self,
        tasks: list[list[tuple[int, tuple[np.ndarray, ...]]]],
        pieces: list[list[np.ndarray]],
        done: list[int],
    ) -> None:
        """Run ``tasks``; their values appended to their segments' pieces, in order."""
        shipped = [[piece for _, piece in task] for task in tasks]
        results = self.runner.run(self.key, self.blob, shipped)
        self.used += len(tasks)
        self.tasks_sent += len(tasks)
        for (values, seconds), task in zip(results, tasks, strict=True):
            self.work_s += seconds
            for (s, piece), value in zip(task, values, strict=True):
                pieces[s].append(value)
                rows = len(piece[0])
                done[s] += rows
                self.evals += rows
        if self.work_s > 0:
            self.cost = max(self.work_s / self.evals, 1e-7)
        elif self.cost is None:
            self.cost = 1e-7  # a runner that reports no time: cheap f, big tasks


def guided(units: int, workers: int, largest: int, smallest: int, most: int) -> list[int]:
    """Task sizes (in units) for a round of ``units``: each task takes a ``2 x workers``-th of
    what is left, between ``smallest`` and ``largest``, so tasks shrink towards the end of
    the round (guided self-scheduling).

    The round ends when its slowest worker does: big tasks first keep the executor's
    per-task cost small, small ones last leave a worker waiting at most a small task for
    the others. ``smallest`` is raised until the round is at most ``most`` tasks.
    """
    while True:
        sizes: list[int] = []
        left = units
        while left > 0:
            size = min(left, max(smallest, min(largest, -(-left // (2 * workers)))))
            sizes.append(size)
            left -= size
        if len(sizes) <= most or smallest >= largest:
            return sizes
        smallest = min(largest, 2 * smallest)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# -- command line ----------------------------------------------------------------------------


def local_cluster(n: int) -> Any:
    """A ``distributed.LocalCluster`` of ``n`` single-threaded worker processes, whose
    scheduler hands out one task per worker at a time (``worker-saturation`` 1.0).

    Without Dask's default ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers' environment:
    with it, every NumPy temporary above 64 KB is mapped and unmapped afresh, and an f of
    ~100 KB temporaries ran 2.5 times slower on the workers than in this process
    (`benchmarks/bench_workers.py`). The BLAS thread caps Dask sets are kept.
    """
    import dask
    import distributed as _distributed

    distributed: Any = _distributed  # its constructors are untyped
    environ = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
    settings = {
        "distributed.nanny.pre-spawn-environ": environ,
        # One task per worker thread, none queued on it: the round's small last tasks then go
        # to whichever worker is free (at Dask's default 1.1, a worker holds one more task,
        # and a free worker waited up to 0.7 s of a 13 s round for a busy one's queue).
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        return distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
        )


@contextlib.contextmanager
def cli_workers(count: int | None, scheduler: str | None) -> Iterator[Any]:
    """The ``workers=`` value of ``--workers N`` and ``--scheduler ADDRESS|local``.

    ``--scheduler local`` starts a ``distributed.LocalCluster`` of ``N`` worker processes
    (default: one per CPU) for the command's duration; an address connects a Client to a
    running scheduler; ``--workers N`` alone is xgrad's own pool of N processes.
    """
    if scheduler is None:
        if count is not None:
            resolve(count)  # the error names workers before any work is done
        yield count
        return
    try:
        import distributed as _distributed
    except ImportError:
        raise WorkersError(
            "--scheduler: needs Dask's distributed (pip install 'xgrad[dask]')"
        ) from None
    distributed: Any = _distributed  # its constructors are untyped
    cluster: Any = None
    if scheduler == "local":
        n = count if count is not None else (os.cpu_count() or 1)
        resolve(n)
        cluster = local_cluster(n)
        client = distributed.Client(cluster)
    else:
        if count is not None:
            raise WorkersError(
                "--workers: the cluster at --scheduler has its own workers; leave --workers "
                "out or use --scheduler local"
            )
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise WorkersError(f"--scheduler: cannot reach {scheduler!r} ({exc})") from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# -- dask.array input ------------------------------------------------------------------------


def _diff_block(diff: Callable[..., Any], f: Any, kwargs: dict[str, Any], block: Any) -> Any:
    return diff(f, block, **kwargs)


def dask_diff(diff: Callable[..., Any], f: Any, x: Any, **kwargs: Any) -> Any:
    """`numerical_diff` of an elementwise f on a ``dask.array``: lazy, block by block.

    Each block is a NumPy array differentiated by ``diff`` where Dask runs it (the
    cluster of the active ``distributed.Client``, else Dask's local scheduler); the
    engine treats elements independently, so the values are those of NumPy, bit for bit.
    """
    if kwargs.get("full_output"):
        raise ArgumentError(
            "full_output: not available for a dask.array x (the result stays lazy); pass "
            "full_output=False, or x.compute() for a DiffResult"
        )
    if kwargs.get("backend") is not None:
        raise ArgumentError(
            "backend: a dask.array x is computed on its own (NumPy) blocks; leave backend=None"
        )
    dtype = kwargs.get("dtype")
    if dtype is not None:
        out = np.dtype(dtype)
    else:
        out = x.dtype if np.dtype(x.dtype).kind == "f" else np.dtype(np.float64)
    block = functools.partial(_diff_block, diff, f, kwargs)
    return x.map_blocks(block, dtype=out, meta=np.empty((0,) * x.ndim, dtype=out))


def _host(value: Any, b: Any) -> np.ndarray:
    return b.to_numpy(value) if b.owns(value) else np.asarray(value)


def _check_argument(
    call: Callable[[Any], Any],
    b: Any,
    arr: Any,
    batch_size: int | None,
    name: str,
) -> None:
    """`ClosureError` if f reads x through a closure instead of computing from its argument.

    Run only when the workers' first values were all the same. f at a copy of x and at a
    copy moved by 1e-3 relative: equal values mean f ignored its argument; if moving x
    itself in place (restored bit for bit) then changes f, f reads x through a closure,
    which a worker cannot see.
    """
    from xgrad._evaluators import is_writeable, quiet

    xp = b.xp
    copy = xp.asarray(arr, copy=True)
    nudged = copy + 1e-3 * (xp.abs(copy) + 1.0)
    with quiet():
        if batch_size is not None or not is_writeable(arr):
            return  # stacked copies, or an immutable x: nothing else can reach the argument
        try:
            v0, v1 = _host(call(copy), b), _host(call(nudged), b)
        except Exception:
            return
        if not np.array_equal(v0, v1):
            return
        saved = xp.asarray(arr, copy=True)
        try:
            arr[...] = nudged
            v2 = _host(call(arr), b)
        except Exception:
            return
        finally:
            arr[...] = saved
    if not np.array_equal(v0, v2):
        raise ClosureError(closure_message(name))


def dispatch(
    runner: _Runner,
    *,
    f: Callable[[Any], Any],
    call: Callable[[Any], Any],
    backend: Any,
    arr: Any,
    target: Any,
    name: str,
    kind: str = "perturb",
    inplace: bool = False,
    batch_size: int | None = None,
    out_shape: tuple[int, ...] = (),
    chunk_size: int | None = None,
    check: bool = True,
) -> Dispatch:
    """The `Dispatch` of one derivative of ``f`` (shipped as ``call``) at ``arr``.

    ``target``: the caller's array, which f must not read through a closure (``check``:
    False for xgrad's own f that puts its argument in place before reading it).
    """
    spec = _Spec(call, backend.spec, kind, inplace, batch_size, out_shape, chunk_size)
    return Dispatch(
        runner,
        spec,
        arr,
        backend,
        f=f,
        target=target,
        name=name,
        argument_check=functools.partial(_check_argument, call, backend, arr, batch_size, name),
        check=check,
    )


class _ModelLoss:
    """``model.loss(x, t)`` as a float with ``model.params[key]`` set to the argument."""

    def __init__(self, model: Any, key: str, x: Any, t: Any) -> None:
        self.model, self.key, self.x, self.t = model, key, x, t

    def __call__(self, p: Any) -> float:
        from xgrad._arrays import to_numpy

        self.model.params[self.key] = p
        return float(to_numpy(self.model.loss(self.x, self.t)))


def model_differences(
    workers: Any, model: Any, x: Any, t: Any, h: float
) -> dict[str, tuple[np.ndarray, ...]]:
    """``gradcheck``'s per-parameter ``(up, down, step_up, step_down)`` on workers.

    The per-element loop of ``xgrad.checking._element_differences`` (f at x with one
    element moved to ``x +- h``, minus f at x, in float64), each parameter's moved copies
    evaluated by the workers on their own copy of the model. The caller's model is left
    as it was.
    """
    from xgrad.backends import backend_of

    out: dict[str, tuple[np.ndarray, ...]] = {}
    for key in list(model.params):
        original = model.params[key]
        b = backend_of(original)
        runner = resolve(workers, b)
        if runner is None:
            raise WorkersError("workers: expected a value other than None here")
        f = _ModelLoss(model, key, x, t)
        try:
            d = dispatch(
                runner,
                f=f,
                call=f,
                backend=b,
                arr=original,
                target=original,
                name=f"params[{key!r}]",
                check=False,
            )
            try:
                flat = b.xp.reshape(original, (-1,))
                plus, minus = b.to_numpy(flat + h), b.to_numpy(flat - h)
                idx = np.arange(plus.size)
                base = f(original)
                up, down = d.run([(idx, plus), (idx, minus)])
            finally:
                d.close()
        finally:
            model.params[key] = original
        host = b.to_numpy(flat).astype(np.float64)
        shape = tuple(original.shape)
        out[key] = tuple(
            a.reshape(shape)
            for a in (
                up.astype(np.float64) - base,
                down.astype(np.float64) - base,
                plus.astype(np.float64) - host,
                minus.astype(np.float64) - host,
            )
        )
    return out
