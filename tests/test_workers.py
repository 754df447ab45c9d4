"""``workers=``: the same numbers as serial, bit for bit, on a real Dask cluster and a pool.

One ``distributed.LocalCluster`` (2 worker processes) and one xgrad process pool of 2 serve
the whole module; the functions are small, so the time goes into the engines themselves.
Every test compares against ``workers=None`` with ``np.array_equal`` (no tolerance).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import xgrad
from xgrad import workers as W
from xgrad.derivatives import hessian, jacobian
from xgrad.numdiff import numerical_gradient

cloudpickle = pytest.importorskip("cloudpickle")
distributed = pytest.importorskip("distributed")

# The functions of this module travel by value: workers cannot import a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

A = np.arange(12.0).reshape(3, 4) / 7.0
X = np.linspace(0.1, 1.3, 6)


def smooth(v):
    return float(np.sum(np.sin(v) ** 3) + v[0] * v[1] ** 2 + np.exp(v[-1] / 3))


def vector(v):
    return np.sin(A @ v[:4]) * v[4] + v[5] ** 2


def stacked(v):
    # batch_size: f of a stack (k, n) -> k values; matmul makes the stack shape matter.
    return np.sum(np.sin(v @ np.ones((v.shape[-1], 3))) ** 2, axis=-1)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as c,
        distributed.Client(c) as client,
    ):
        yield client


@pytest.fixture(scope="module", params=["pool", "cluster"])
def workers(request):
    if request.param == "pool":
        yield 2
    else:
        yield request.getfixturevalue("cluster")


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b), np.max(np.abs(a - b))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"h": 1e-5}, {"method": "forward"}, {"method": "complex"}, {"dtype": "float32"}],
    ids=["search", "explicit", "forward", "complex", "float32"],
)
def test_gradient_bit_identical(workers, kwargs):
    f = (lambda v: np.sum(np.sin(v) ** 3) + v[0] * v[1]) if "method" in kwargs else smooth
    _same(
        numerical_gradient(f, X.copy(), **kwargs),
        numerical_gradient(f, X.copy(), workers=workers, **kwargs),
    )


def test_gradient_batch_and_dict(workers):
    serial = numerical_gradient(stacked, X.copy(), batch_size=4)
    _same(serial, numerical_gradient(stacked, X.copy(), batch_size=4, workers=workers))

    def loss(p):
        return float(np.sum(np.tanh(p["W"] @ p["b"])) + np.sum(p["b"] ** 2))

    params = {"W": A.copy(), "b": np.linspace(-1, 1, 4)}
    _same(numerical_gradient(loss, params), numerical_gradient(loss, params, workers=workers))


@pytest.mark.parametrize("kwargs", [{}, {"h": 1e-6}, {"batch_size": 2}, {"method": "complex"}])
def test_jacobian_bit_identical(workers, kwargs):
    if "batch_size" in kwargs:

        def f(v):
            return np.sin(v[..., :4] @ A.T) * v[..., 4:5]

    else:
        f = vector
    _same(jacobian(f, X.copy(), **kwargs), jacobian(f, X.copy(), workers=workers, **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"h": 1e-3}, {"batch_size": 3}])
def test_hessian_bit_identical(workers, kwargs):
    f = stacked if "batch_size" in kwargs else smooth
    _same(hessian(f, X[:4].copy(), **kwargs), hessian(f, X[:4].copy(), workers=workers, **kwargs))


def test_executors_and_map_likes():
    """Thread pools finishing in reverse order, Executor.map, builtin map, Pool.map."""
    import multiprocessing

    serial = numerical_gradient(smooth, X.copy(), h=1e-5)

    def late_first(v):
        # Tasks of low elements sleep longest: completion order is the reverse of submission.
        time.sleep(0.002 * (X.size - int(np.argmax(v != X))))
        return smooth(v)

    with cf.ThreadPoolExecutor(4) as ex:
        _same(serial, numerical_gradient(late_first, X.copy(), h=1e-5, workers=ex))
        _same(serial, numerical_gradient(smooth, X.copy(), h=1e-5, workers=ex.map))
    _same(serial, numerical_gradient(smooth, X.copy(), h=1e-5, workers=map))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        _same(serial, numerical_gradient(smooth, X.copy(), h=1e-5, workers=pool.map))


def test_client_executor(cluster):
    _same(
        numerical_gradient(smooth, X.copy()),
        numerical_gradient(smooth, X.copy(), workers=cluster.get_executor()),
    )


def _logging_f(path: str, main: int):
    """smooth, writing each argument it sees (and where) to ``path``, one line per call."""

    def f(v):
        line = f"{int(os.getpid() == main)} {np.asarray(v).tobytes().hex()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return smooth(v)

    return f


def _calls(path: Path) -> tuple[Counter, Counter]:
    main, other = Counter(), Counter()
    for line in path.read_text().splitlines():
        where, arg = line.split()
        (main if where == "1" else other)[arg] += 1
    return main, other


@pytest.mark.parametrize("kind", ["gradient", "hessian"])
def test_no_perturbation_lost_or_repeated(workers, tmp_path, kind):
    """The workers evaluate exactly the serial perturbations, each as often as serial does."""
    serial_log, parallel_log = tmp_path / "serial", tmp_path / "parallel"
    run = numerical_gradient if kind == "gradient" else hessian
    x = X.copy() if kind == "gradient" else X[:4].copy()
    serial = run(_logging_f(str(serial_log), os.getpid()), x.copy())
    parallel = run(_logging_f(str(parallel_log), os.getpid()), x.copy(), workers=workers)
    _same(serial, parallel)
    serial_main, serial_other = _calls(serial_log)
    assert not serial_other
    at_x = x.tobytes().hex()
    # Serial: the perturbations, and f at x itself for the Hessian's centre.
    perturbations = serial_main - Counter({at_x: serial_main[at_x]})
    main, other = _calls(parallel_log)
    assert other == perturbations
    assert sum(perturbations.values()) > 2 * x.size
    # This process evaluates only what serial evaluates at x: the workers time f (no
    # calibration here) and their differing values show that f uses its argument.
    assert sum(main.values()) == serial_main[at_x]


def _dying_f(marker: str, main: int):
    """smooth, killing the first worker process that calls it (once, whichever it is)."""

    def f(v):
        if os.getpid() != main:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(1)
        return smooth(v)

    return f


def test_dead_worker_retried_pool(tmp_path):
    f = _dying_f(str(tmp_path / "died"), os.getpid())
    _same(
        numerical_gradient(smooth, X.copy(), h=1e-5),
        numerical_gradient(f, X.copy(), h=1e-5, workers=2),
    )
    assert (tmp_path / "died").exists()


def test_dead_worker_retried_cluster(cluster, tmp_path):
    f = _dying_f(str(tmp_path / "died"), os.getpid())
    _same(
        numerical_gradient(smooth, X.copy(), h=1e-5),
        numerical_gradient(f, X.copy(), h=1e-5, workers=cluster),
    )
    assert (tmp_path / "died").exists()
    cluster.wait_for_workers(2, timeout=60)


def test_foreign_broken_pool_is_a_typed_error(tmp_path):
    f = _dying_f(str(tmp_path / "died"), os.getpid())
    import multiprocessing

    with (
        cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex,
        pytest.raises(W.WorkerLostError, match="workers"),
    ):
        numerical_gradient(f, X.copy(), h=1e-5, workers=ex)


def test_keyboard_interrupt_cancels_outstanding_tasks():
    calls = []

    def f(v):
        calls.append(1)
        if threading.current_thread() is not threading.main_thread():
            raise KeyboardInterrupt
        return smooth(v)

    x = np.linspace(0.1, 1, 64)
    with cf.ThreadPoolExecutor(1) as ex, pytest.raises(KeyboardInterrupt):
        numerical_gradient(f, x, h=1e-5, workers=ex)
    time.sleep(0.05)
    # Probe (2 calls), the first task's first row, perhaps one task started meanwhile:
    # far from the 128 perturbations.
    assert len(calls) < 2 + 1 + 128 // 2


def test_ctrl_c_stops_the_pool(tmp_path):
    """SIGINT in a real process: it exits promptly and its worker processes are gone."""
    script = tmp_path / "run.py"
    pids = tmp_path / "pids"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, time, numpy as np
            from xgrad.numdiff import numerical_gradient

            def f(v):
                with open({str(pids)!r}, "a") as out:
                    out.write(f"{{os.getpid()}}\\n")
                time.sleep(0.2)
                return float(np.sum(v ** 2))

            try:
                numerical_gradient(f, np.ones(200), h=1e-4, workers=2)
            except KeyboardInterrupt:
                print("interrupted")
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = set(pids.read_text().split()) if pids.exists() else set()
        if len(seen - {str(proc.pid)}) >= 2:
            break
        time.sleep(0.1)
    start = time.monotonic()
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    assert "interrupted" in out, err
    # The 400 evaluations of 0.2 s on 2 workers would take 40 s (a loaded CI machine may
    # take seconds to stop two processes).
    assert time.monotonic() - start < 20
    for pid in set(pids.read_text().split()) - {str(proc.pid)}:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (0, W.WorkersError),
        (-2, W.WorkersError),
        (True, xgrad.ArgumentTypeError),
        ("four", xgrad.ArgumentTypeError),
        (object(), xgrad.ArgumentTypeError),
        ([], W.WorkersError),
        ([3], xgrad.ArgumentTypeError),
        (["array_api_strict:CPU_DEVICE"], W.WorkersError),
        (["array_api_strict:CPU_DEVICE", "array_api_strict:CPU_DEVICE"], W.WorkersError),
    ],
)
def test_bad_workers_value(value, kind):
    with pytest.raises(kind, match=r"^workers: "):
        numerical_gradient(smooth, X.copy(), workers=value)


def test_closure_over_x_is_refused_with_what_to_write():
    class Net:
        def __init__(self):
            self.params = {"W": A.copy()}

        def loss(self):
            return float(np.sum(np.sin(self.params["W"])))

    net = Net()
    with pytest.raises(W.ClosureError, match=r"workers: .*must compute from the array"):
        numerical_gradient(lambda W_: net.loss(), net.params["W"], workers=map)
    view = net.params["W"][0]
    with pytest.raises(W.ClosureError):
        numerical_gradient(lambda W_: float(np.sum(view)), net.params["W"], workers=map)
    # Serially the book's closure works (in place), which is what the message points to.
    assert np.any(numerical_gradient(lambda W_: net.loss(), net.params["W"], h=1e-4) != 0)


STATE = {}


def test_closure_found_by_running_f():
    """f reaches x at call time (through sys.modules), which pickling cannot see."""
    STATE["x"] = X.copy()
    name = __name__

    def f(_):
        return smooth(sys.modules[name].STATE["x"])

    with pytest.raises(W.ClosureError):
        numerical_gradient(f, STATE["x"], workers=map)


def test_unserializable_f_and_accelerator_arrays():
    lock = threading.Lock()

    def f(v):
        with lock:
            return smooth(v)

    with pytest.raises(W.ShippingError, match=r"^workers: f cannot be serialized"):
        numerical_gradient(f, X.copy(), workers=map)
    import dataclasses

    gpu = dataclasses.replace(xgrad.get_backend("numpy"), accelerator=True)
    spec = W._Spec(smooth, "numpy", "perturb", False, None)
    with pytest.raises(W.ShippingError, match=r"^workers: x is on .*cannot leave this process"):
        W.pack(spec, X, gpu)


# -- devices and chunking ------------------------------------------------------------------


def test_devices_sharded_and_gathered():
    xp = pytest.importorskip("array_api_strict")
    b = xgrad.get_backend("array_api_strict")
    seen = []

    def f(v):
        seen.append(str(v.device))
        return xp.sum(xp.sin(v) ** 3) + v[0] * v[1]

    x = b.asarray(X)
    devices = ["array_api_strict:CPU_DEVICE", "array_api_strict:device1"]
    serial = numerical_gradient(f, x)
    seen.clear()
    parallel = numerical_gradient(f, x, workers=devices)
    assert parallel.device == x.device
    _same(np.asarray(serial), np.asarray(parallel))
    assert set(seen) >= {str(xp.Device("CPU_DEVICE")), str(xp.Device("device1"))}
    _same(
        np.asarray(jacobian(lambda v: xp.sin(v) * v[0], x)),
        np.asarray(jacobian(lambda v: xp.sin(v) * v[0], x, workers=devices)),
    )


def _map_dispatch() -> W.Dispatch:
    """A Dispatch of ``smooth`` at X through the builtin map, without the argument check."""
    spec = W._Spec(smooth, "numpy", "perturb", True, None)
    return W.Dispatch(
        W._MapRunner(map),
        spec,
        X,
        xgrad.get_backend("numpy"),
        f=smooth,
        target=X,
        name="x",
        argument_check=lambda: None,
    )


def test_chunks_bounded_and_sized_by_cost():
    d = _map_dispatch()
    d.runner.count, d.cost = 2, 0.05
    # 50 ms per evaluation: tasks of 80 evaluations at most (TASK_SECONDS 4.0), 4 tasks a
    # worker at least while that allows.
    assert d.chunk(1000) == 80
    assert d.chunk(400) == 50
    assert d.chunk(16) == 2
    # Cheap f, huge rounds on 1000 workers: the budget holds over a whole search.
    d.cost, d.runner.count, total = 1e-3, 1000, 0
    for _ in range(60):
        tasks = len(d.sizes(10**6, 10**6))
        d.used += tasks
        total += tasks
    assert total <= W.MAX_TASKS
    # A 10 ms f on 1,000 workers of an executor costing 2 ms a task (Dask): 4 evaluations
    # per task (20 times the overhead), not 1, though that leaves workers idle.
    d.cost, d.used, d.runner.overhead = 0.01, 0, 2e-3
    assert d.chunk(1024) == 4
    assert set(d.sizes(1024, 1024)) == {4}
    d.close()


def test_rounds_end_in_small_tasks():
    """Guided self-scheduling: a round's tasks shrink from TASK_SECONDS of work to one batch,
    so that no worker waits long for the others at its end; the sizes add up to the round."""
    d = _map_dispatch()
    d.runner.count, d.cost = 2, 0.2
    sizes = d.sizes(126, 126)
    assert sum(sizes) == 126 and sizes == sorted(sizes, reverse=True)
    # 16 = 126 / (LOAD_FACTOR x 2 workers), below TASK_SECONDS' 20 evaluations.
    assert sizes[0] == 16 and sizes[-3:] == [1, 1, 1]
    # Far fewer tasks than one evaluation each (126), more than equal tasks of 16 (8).
    assert 8 < len(sizes) < 20
    # In units of batch_size 4: the same rule on 32 units.
    d.unit = 4
    sizes = d.sizes(126, 32)
    assert sum(sizes) == 32 and sizes[0] == 4 and sizes[-1] == 1
    d.close()


def test_tasks_of_a_gradient_are_bounded():
    sent = []

    def counting_map(fn, iterable):
        items = list(iterable)
        sent.append(len(items))
        return map(fn, items)

    x = np.linspace(0, 1, 3000)
    g = numerical_gradient(lambda v: float(v @ v), x, h=1e-3, workers=counting_map)
    _same(g, numerical_gradient(lambda v: float(v @ v), x.copy(), h=1e-3))
    assert 1 <= sum(sent) <= W.MAX_TASKS


# -- the book's net ------------------------------------------------------------------------


def test_two_layer_net_loop_on_workers(workers):
    """net.numerical_gradient(workers=) is the book's loop, bit for bit, on the workers."""
    from xgrad.nn import TwoLayerNet

    net = TwoLayerNet(6, 5, 3, seed=1)
    x = np.random.default_rng(0).random((4, 6))
    t = np.eye(3)[[0, 1, 2, 1]]
    before = {k: v.copy() for k, v in net.params.items()}
    parallel = net.numerical_gradient(x, t, workers=workers)
    loop = {
        k: numerical_gradient(lambda W_: net.loss(x, t), net.params[k], h=1e-4) for k in net.params
    }
    _same(loop, parallel)
    # The caller's net is untouched, and the closed form agrees to its rounding.
    _same(before, net.params)
    closed = net.numerical_gradient(x, t)
    for k in closed:
        np.testing.assert_allclose(parallel[k], closed[k], rtol=0, atol=1e-9)


# -- dask.array --------------------------------------------------------------------------


def test_dask_array_numerical_diff_lazy_blockwise(cluster):
    da = pytest.importorskip("dask.array")
    from xgrad.numdiff import numerical_diff

    calls = []

    def f(v):
        calls.append(1)
        return np.sin(v) * v

    x = np.linspace(-2, 3, 1000)
    lazy = numerical_diff(f, da.from_array(x, chunks=128))
    assert isinstance(lazy, da.Array)
    assert not calls
    assert lazy.chunks == ((128,) * 7 + (104,),)
    # Computed on the cluster (the module's Client is the default scheduler).
    _same(numerical_diff(f, x), lazy.compute())
    _same(numerical_diff(f, x, h=1e-6), numerical_diff(f, da.from_array(x, 300), h=1e-6).compute())
    ints = da.arange(12, chunks=5)
    _same(numerical_diff(f, np.arange(12)), numerical_diff(f, ints).compute())
    # float32 away from f's stationary point (2.03), where a relative tolerance fails.
    x32 = np.linspace(0.1, 1.5, 1000, dtype=np.float32)
    single = da.from_array(x32, chunks=250)
    _same(numerical_diff(f, x32), numerical_diff(f, single).compute())
    with pytest.raises(xgrad.ArgumentError, match=r"^full_output: "):
        numerical_diff(f, single, full_output=True)
    with pytest.raises(xgrad.ArgumentError, match=r"^backend: "):
        numerical_diff(f, single, backend="numpy")


def test_gradcheck_on_workers(workers):
    from xgrad import checking
    from xgrad.nn import TwoLayerNet

    net = TwoLayerNet(6, 5, 3, seed=1, activation="relu")
    x = np.random.default_rng(0).random((4, 6))
    t = np.eye(3)[[0, 1, 2, 1]]
    before = {k: v.copy() for k, v in net.params.items()}

    class Plain:
        """A model without loss_differences: gradcheck's per-element loop."""

        params = net.params

        def loss(self, x, t):
            return net.loss(x, t)

    serial = checking._model_differences(Plain(), x, t, 1e-4)
    parallel = checking._model_differences(Plain(), x, t, 1e-4, workers=workers)
    for k in serial:
        for a, b in zip(serial[k], parallel[k], strict=True):
            _same(a, b)
    _same(before, net.params)
    result = xgrad.gradcheck(net, x, t, workers=workers)
    assert result.passed
    assert result.params["W1"].max_rel < 1e-6

    def f(v):
        return np.sum(np.sin(v) ** 3)

    def g(v):
        return 3 * np.sin(v) ** 2 * np.cos(v)

    assert xgrad.gradcheck(f, X.copy(), grad=g, workers=workers)
    assert not xgrad.gradcheck(f, X.copy(), grad=lambda v: 1.001 * g(v), workers=workers)


# -- the command line ------------------------------------------------------------------------


def _cli(tmp_path, *extra):
    from xgrad.datasets import write_idx
    from xgrad.datasets._registry import DATASETS

    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        rng = np.random.default_rng(0)
        files = DATASETS["mnist"].files
        for prefix, n in (("train", 6), ("test", 2)):
            images = rng.integers(0, 256, (n, 2, 2), dtype=np.uint8)
            write_idx(data / files[f"{prefix}_images"].name, images)
            labels = rng.integers(0, 10, n).astype(np.uint8)
            write_idx(data / files[f"{prefix}_labels"].name, labels)
    argv = ["gradcheck", "--data-dir", str(data), "--no-download", "--batch", "3", "--hidden", "3"]
    return subprocess.run(
        [sys.executable, "-m", "xgrad.cli", *argv, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )


def test_cli_gradcheck_workers(tmp_path):
    for extra in (["--workers", "2"], ["--scheduler", "local", "--workers", "2"]):
        res = _cli(tmp_path, *extra)
        assert res.returncode == 0, res.stderr
        # Every parameter checked and ok; the book's printout (mean |backprop - numerical|
        # per parameter) as small as serially (~1e-12).
        rows = [line.split() for line in res.stdout.splitlines()]
        assert [r[-1] for r in rows if r and r[0] in ("W1", "b1", "W2", "b2")] == ["ok"] * 4
        means = dict(item.split(":") for item in res.stdout.splitlines()[-2].split())
        assert means.keys() == {"W1", "b1", "W2", "b2"}
        assert all(float(v) < 1e-9 for v in means.values()), means
    bad = _cli(tmp_path, "--workers", "0")
    assert bad.returncode in (1, 2)
    assert "Traceback" not in bad.stderr
    assert "workers" in bad.stderr.strip().splitlines()[-1]


def test_rounds_are_cut_at_serial_stacks():
    """Tasks of the sizes asked for, each piece starting at a serial stack boundary of its
    segment; a task may span two segments; every row is dealt once, in order."""
    d = _map_dispatch()
    segments = [(np.arange(64), np.zeros(64)), (np.arange(64), np.ones(64))]
    # 127 rows left (one row of the first segment went to the calibration).
    sizes = [5] * 20 + [4, 4, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1]
    tasks = d._cut(segments, [1, 0], sizes)
    got = [sum(len(piece[0]) for _, piece in task) for task in tasks]
    assert got == sizes and sum(got) == 127
    dealt = [(s, int(i)) for task in tasks for s, piece in task for i in piece[0]]
    assert dealt == [(0, i) for i in range(1, 64)] + [(1, i) for i in range(64)]
    assert len(tasks[12]) == 2  # rows 61..63 of the first segment, 0..1 of the second
    # More sizes than units: the tasks stop at the last unit.
    assert len(d._cut(segments, [60, 62], [1] * 16)) == 6
    # batch_size 5: pieces start at multiples of 5 within their segment.
    d.unit = 5
    tasks = d._cut([(np.arange(13), np.zeros(13)), (np.arange(7), np.ones(7))], [5, 0], [1, 1, 2])
    starts = [[(s, int(piece[0][0]), len(piece[0])) for s, piece in task] for task in tasks]
    assert starts == [[(0, 5, 5)], [(0, 10, 3)], [(1, 0, 7)]]
    tasks = d._cut([(np.arange(13), np.zeros(13)), (np.arange(7), np.ones(7))], [5, 0], [2, 2])
    starts = [[(s, int(piece[0][0]), len(piece[0])) for s, piece in task] for task in tasks]
    assert starts == [[(0, 5, 8)], [(1, 0, 7)]]
    d.close()
