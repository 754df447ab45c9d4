"""The backend registry, `Backend` objects, host randomness and the test matrix itself."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad.backends import Backend, BackendEntry, BackendUnavailableError, _registry
from xgrad.errors import ArgumentError, ArgumentTypeError
from xgrad.random import HostRandom
from xgrad.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate tests that register backends or change the default."""
    monkeypatch.setattr(_registry, "_entries", dict(_registry.registered_backends()))
    monkeypatch.setattr(_registry, "_cache", {})
    monkeypatch.setattr(_registry, "_default", [])
    monkeypatch.setattr(_registry, "_type_owner", {})
    monkeypatch.setattr(_registry, "_env_checked", {})
    monkeypatch.setattr(_registry, "_env_warned", set())
    monkeypatch.delenv("XGRAD_BACKEND", raising=False)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=False
    )


# -- the matrix ----------------------------------------------------------------------------


def test_backend_fixture_matches_row(backend: Backend) -> None:
    x = backend.asarray([1.5, -2.0])
    assert backend.owns(x)
    assert xgrad.backends.backend_of(x) == backend
    assert backend.dtype_name(x.dtype) == "float64"
    assert_close(x, np.array([1.5, -2.0]))


def test_matrix_lists_every_row_and_skips_with_reason() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"{ROOT / 'tests' / 'test_backends.py'}::test_backend_fixture_matches_row",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout
    for row in (
        "numpy-cpu",
        "array_api_strict-CPU_DEVICE",
        "array_api_strict-device1",
        "torch-cpu",
        "torch-cuda:0",
        "jax-cpu",
        "cupy-cuda:0",
    ):
        assert f"test_backend_fixture_matches_row[{row}]" in out, out
    assert "test_backend_fixture_matches_row[numpy-cpu] PASSED" in out
    if xgrad.available_backends()["cupy"] is not None:
        assert "test_backend_fixture_matches_row[cupy-cuda:0] SKIPPED" in out, out
        assert "backend 'cupy' is unavailable" in out, out


def test_row_skips_are_summarized_once_per_reason() -> None:
    # Before: one summary line per skipped test (about 350 lines for a NumPy-only install).
    tests = [
        f"{ROOT / 'tests' / 'test_backends.py'}::{name}"
        for name in ("test_backend_fixture_matches_row", "test_to_numpy_and_synchronize")
    ]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == 0, res.stdout
    lines = [line for line in res.stdout.splitlines() if line.startswith("SKIPPED [")]
    reasons = [line.split(": ", 1)[1] for line in lines]
    assert len(reasons) == len(set(reasons))  # one line per reason
    counts = [int(line.split("[", 1)[1].split("]", 1)[0]) for line in lines]
    unusable = 0
    for name, entry in sorted(_registry.registered_backends().items()):
        for device in entry.matrix_devices():
            try:
                xgrad.get_backend(name, device)
            except BackendUnavailableError:
                unusable += 1
    assert sum(counts) == 2 * unusable
    assert all(line.startswith("SKIPPED [2] xgrad/pytest_plugin.py: backend '") for line in lines)
    assert f"{2 * unusable} skipped" in res.stdout.splitlines()[-1] or unusable == 0


def test_matrix_selection_option() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "--backend",
            "numpy,array_api_strict:device1",
            f"{ROOT / 'tests' / 'test_backends.py'}::test_backend_fixture_matches_row",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout
    assert "test_backend_fixture_matches_row[numpy-cpu]" in out
    assert "test_backend_fixture_matches_row[array_api_strict-device1]" in out
    assert "CPU_DEVICE" not in out
    assert "torch" not in out


# -- names, devices, defaults ------------------------------------------------------------


def test_get_backend_numpy_default(clean_registry: None) -> None:
    b = xgrad.get_backend()
    assert b.name == "numpy"
    assert b.device_label == "cpu"
    assert repr(b).startswith("Backend('numpy', device='cpu', numpy ")
    info = b.info()
    assert info["library"] == "numpy"
    assert info["version"] == np.__version__
    assert info["default_dtype"] == "float64"


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown name 'nump'.*array_api_strict.*numpy.*torch"):
        xgrad.get_backend("nump")


def test_name_carries_device() -> None:
    b = xgrad.get_backend("array_api_strict:device1")
    assert b.device_label == "device1"
    assert b.spec == "array_api_strict:device1"
    assert b.id == "array_api_strict-device1"
    assert xgrad.get_backend("array_api_strict", device="device1") == b
    with pytest.raises(ArgumentError, match="device: 'cuda' is not a device of backend 'numpy'"):
        xgrad.get_backend("numpy:cuda")


def test_set_backend_use_backend_env(clean_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XGRAD_BACKEND", "array_api_strict:device1")
    assert xgrad.get_backend().spec == "array_api_strict:device1"
    xgrad.set_backend("numpy")
    assert xgrad.get_backend().name == "numpy"
    with xgrad.use_backend("array_api_strict") as b:
        assert b.spec == "array_api_strict:CPU_DEVICE"
        assert xgrad.get_backend() is b
        with xgrad.use_backend("array_api_strict", device="device1"):
            assert xgrad.get_backend().device_label == "device1"
        assert xgrad.get_backend() is b
    assert xgrad.get_backend().name == "numpy"
    with pytest.raises(ValueError, match="unknown name"):
        xgrad.set_backend("nope")
    assert xgrad.get_backend().name == "numpy"


def test_missing_library_names_pip_extra(clean_registry: None) -> None:
    xgrad.register_backend(
        "ghost",
        BackendEntry(
            name="ghost",
            create=lambda d: None,
            library="xgrad_ghost_lib",  # type: ignore[arg-type,return-value]
            extra="ghost",
        ),
    )
    reason = xgrad.available_backends()["ghost"]
    assert reason == (
        'xgrad_ghost_lib is not installed (pip install -e ".[ghost]" in the xgrad source tree)'
    )
    with pytest.raises(
        BackendUnavailableError, match=r"'ghost' is unavailable.*-e \"\.\[ghost\]\""
    ):
        xgrad.get_backend("ghost")
    assert issubclass(BackendUnavailableError, ImportError)


def test_cupy_without_gpu_is_unavailable_with_probe_reason(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `import cupy` succeeds without a GPU; only the probe can tell.
    fake = types.ModuleType("cupy")
    fake.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    reason = xgrad.available_backends()["cupy"]
    assert reason is not None and "cupy.cuda.is_available() is False" in reason
    with pytest.raises(BackendUnavailableError, match=r"no CUDA GPU"):
        xgrad.get_backend("cupy")


def test_cupy_not_installed_names_extra() -> None:
    pytest.importorskip("pytest")  # always present; documents the branch below
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here")
    with pytest.raises(BackendUnavailableError, match=r'pip install -e "\.\[cuda13\]"'):
        xgrad.get_backend("cupy")


def test_torch_cuda_without_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailableError, match=r"torch.cuda.is_available\(\) is False"):
        xgrad.get_backend("torch:cuda")


def test_register_backend_and_entry_point(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    numpy_backend = xgrad.get_backend("numpy")
    calls: list[str | None] = []

    def factory(device: str | None) -> Backend:
        calls.append(device)
        return numpy_backend

    xgrad.register_backend("mine", factory)
    assert xgrad.get_backend("mine:cpu") is numpy_backend
    assert calls == ["cpu"]
    with pytest.raises(ArgumentError, match="no ':' or spaces"):
        xgrad.register_backend("a:b", factory)
    with pytest.raises(TypeError, match="factory: expected a callable"):
        xgrad.register_backend("bad", 3)  # type: ignore[arg-type]

    class EP:
        name = "plugin"
        value = "plugin_pkg:factory"

        def load(self):  # type: ignore[no-untyped-def]
            return factory

    class BrokenEP(EP):
        name = "broken"
        value = "broken_pkg:factory"

        def load(self):  # type: ignore[no-untyped-def]
            raise ImportError("no module named broken_pkg")

    import importlib.metadata

    def fake_entry_points(group: str) -> list[EP]:
        assert group == "xgrad.backends"
        return [EP(), BrokenEP()]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    assert xgrad.get_backend("plugin") is numpy_backend
    reasons = xgrad.available_backends()
    assert reasons["plugin"] is None
    assert "broken_pkg:factory" in (reasons["broken"] or "")
    with pytest.raises(BackendUnavailableError, match="no module named broken_pkg"):
        xgrad.get_backend("broken")


# -- arrays ----------------------------------------------------------------------------


def test_asarray_defaults_to_float64_and_keeps_float32(backend: Backend) -> None:
    x = backend.asarray([0.1, 0.2])
    assert backend.dtype_name(x.dtype) == "float64"
    assert_close(x, np.array([0.1, 0.2]), rtol=0)
    y = backend.asarray(np.array([0.1, 0.2], dtype=np.float32))
    assert backend.dtype_name(y.dtype) == "float32"
    z = backend.asarray([0.1, 0.2], dtype="float32")
    assert backend.dtype_name(z.dtype) == "float32"
    assert_close(z, np.array([0.1, 0.2], dtype=np.float32), rtol=0)
    i = backend.asarray([1, 2])
    assert backend.dtype_name(i.dtype) == "int64"


def test_asarray_from_other_backend_goes_through_host(backend: Backend) -> None:
    strict = xgrad.get_backend("array_api_strict:device1")
    src = strict.asarray([1.0, 2.0, 3.0])
    x = backend.asarray(src)
    assert backend.owns(x)
    assert_close(x, np.array([1.0, 2.0, 3.0]), rtol=0)
    assert_close(xgrad.to_numpy(x), np.array([1.0, 2.0, 3.0]), rtol=0)


def test_float_dtype_policy(backend: Backend) -> None:
    assert backend.float_dtype() == backend.xp.float64
    assert backend.float_dtype("float32") == backend.xp.float32
    assert backend.float_dtype(np.float32) == backend.xp.float32
    with pytest.raises(ValueError, match=r"dtype: expected 'float32' or 'float64', found 'int32'"):
        backend.float_dtype("int32")


def test_to_numpy_and_synchronize(backend: Backend) -> None:
    x = backend.xp.linspace(0.0, 1.0, 5, dtype=backend.xp.float64, device=backend.device)
    backend.synchronize(x)
    host = backend.to_numpy(x)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.linspace(0.0, 1.0, 5))


def test_mixed_backends_and_devices_are_refused() -> None:
    torch = pytest.importorskip("torch")
    a = np.ones(2)
    b = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"numpy:cpu and torch:cpu"):
        xgrad.backends.resolve_backend(None, a, b)
    strict = pytest.importorskip("array_api_strict")
    c = strict.ones(2, device=strict.Device("CPU_DEVICE"))
    d = strict.ones(2, device=strict.Device("device1"))
    with pytest.raises(
        ValueError, match=r"array_api_strict:CPU_DEVICE and array_api_strict:device1"
    ):
        xgrad.backends.resolve_backend(None, c, d)
    assert xgrad.backends.resolve_backend(None, d, 3.0).device_label == "device1"
    assert xgrad.backends.resolve_backend("numpy", 2.0).name == "numpy"


# -- host randomness -----------------------------------------------------------------------


def test_host_random_same_numbers_on_every_backend(backend: Backend) -> None:
    ref = np.random.default_rng(42)
    expected_normal = ref.standard_normal((3, 4))
    expected_choice = ref.choice(1000, 7).astype(np.int64)
    r = HostRandom(42, backend=backend)
    w = r.standard_normal((3, 4))
    idx = r.choice(1000, 7)
    assert backend.owns(w) and backend.owns(idx)
    assert_close(w, expected_normal, rtol=0)
    np.testing.assert_array_equal(backend.to_numpy(idx), expected_choice)
    w32 = HostRandom(42, backend=backend).standard_normal((3, 4), dtype="float32")
    assert_close(w32, expected_normal.astype(np.float32), rtol=0)


def test_host_random_state_roundtrip() -> None:
    r = HostRandom(7, backend="numpy")
    r.uniform(shape=3)
    state = r.state
    a = r.integers(0, 10, 5)
    r.state = state
    np.testing.assert_array_equal(r.integers(0, 10, 5), a)
    with pytest.raises(TypeError, match="seed: expected an int"):
        HostRandom("7")  # type: ignore[arg-type]


# -- light import, JAX x64, CLI ----------------------------------------------------------------


def test_import_xgrad_imports_no_array_library() -> None:
    res = _python(
        "import sys, xgrad\n"
        "xgrad.get_backend('numpy')\n"
        "xgrad.backends.resolve_backend(None, [1.0])\n"
        "print(sorted(m for m in ('torch', 'jax', 'cupy', 'array_api_strict') if m in sys.modules))"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_jax_without_x64_says_how_to_enable_it() -> None:
    pytest.importorskip("jax")
    res = _python(
        "import xgrad\n"
        "b = xgrad.get_backend('jax')\n"
        "print(b.dtype_name(b.asarray([1.0], dtype='float32').dtype))\n"
        "print(b.info()['default_dtype'])\n"
        "b.asarray([1.0])\n",
        JAX_ENABLE_X64="0",
    )
    assert res.returncode != 0
    assert res.stdout.split() == ["float32", "float32", "(float64", "off)"]
    assert "jax_enable_x64" in res.stderr and "JAX_ENABLE_X64=1" in res.stderr


def test_cli_backends_table() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", "backends"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"xgrad {xgrad.__version__}, Python ")
    for name, reason in xgrad.available_backends().items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert ("unavailable" in row) == (reason is not None)
        if reason is not None:
            assert reason in res.stdout
    assert "numpy" in res.stdout and np.__version__ in res.stdout


def test_cli_backends_json() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", "backends", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    data = json.loads(res.stdout)
    rows = {r["backend"]: r for r in data["backends"]}
    assert rows["numpy"]["status"] == "available"
    assert rows["numpy"]["devices"] == "cpu"
    assert set(rows) == set(xgrad.available_backends())


# -- refusals that used to pass silently (issue 11) -------------------------------------


@pytest.mark.parametrize(
    "spec", ["torch:mps", "torch:xla", "torch:meta", "torch:cpu:1", "numpy:cuda", "cupy:cpu"]
)
def test_devices_outside_the_backend_are_refused_when_parsed(spec: str) -> None:
    # Before: torch accepted mps/xla/meta/cpu:1 and failed later with torch's own error.
    name, _, device = spec.partition(":")
    with pytest.raises(ArgumentError, match=rf"device: '{device}' is not a device of backend"):
        xgrad.get_backend(spec)
    valid = ", ".join(_registry.registered_backends()[name].device_forms)
    with pytest.raises(ArgumentError) as info:
        xgrad.get_backend(name, device=device)
    assert f"valid devices: {valid}" in str(info.value)


@pytest.mark.parametrize("spec", ["numpy ", " numpy", "numpy:", ":cpu", "", "torch: cpu"])
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ArgumentError, match=r"backend: expected NAME or NAME:DEVICE"):
        xgrad.get_backend(spec)


def test_valid_device_forms_still_work() -> None:
    assert xgrad.get_backend("torch:cpu").device_label == "cpu"
    assert xgrad.get_backend("numpy:cpu").device_label == "cpu"
    assert xgrad.get_backend("array_api_strict:cpu").device_label == "CPU_DEVICE"
    entry = _registry.registered_backends()["torch"]
    assert entry.accepts_device("cuda:12") and entry.accepts_device("cuda")
    assert not entry.accepts_device("cuda:x") and not entry.accepts_device("cuda:1:2")


def test_builtin_backend_is_not_replaced_silently(clean_registry: None) -> None:
    numpy_backend = xgrad.get_backend("numpy")
    with pytest.raises(ArgumentError, match=r"'numpy' is a built-in backend; pass replace=True"):
        xgrad.register_backend("numpy", lambda device: numpy_backend)
    assert xgrad.get_backend("numpy") is numpy_backend
    xgrad.register_backend("mine", lambda device: numpy_backend)
    with pytest.raises(ArgumentError, match=r"'mine' is already registered"):
        xgrad.register_backend("mine", lambda device: numpy_backend)
    calls: list[str | None] = []

    def factory(device: str | None) -> Backend:
        calls.append(device)
        return numpy_backend

    xgrad.register_backend("numpy", factory, replace=True)
    assert xgrad.get_backend("numpy") is numpy_backend
    assert calls == [None]


def test_factory_result_is_checked_and_not_cached(clean_registry: None) -> None:
    def bad_factory(device: str | None) -> int:
        return 3

    xgrad.register_backend("bad", bad_factory)  # type: ignore[arg-type]
    for _ in range(2):  # not cached: the second call fails the same way
        with pytest.raises(ArgumentTypeError, match=r"factory: .*'bad' \(.*bad_factory\)"):
            xgrad.get_backend("bad")
    # The registry keeps working for everyone else.
    assert xgrad.get_backend("numpy").name == "numpy"


def test_garbage_xgrad_backend_is_an_error_without_arrays_and_a_warning_with_them(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xgrad import functions as F

    monkeypatch.setenv("XGRAD_BACKEND", "garbage")
    with pytest.raises(ArgumentError, match=r"XGRAD_BACKEND='garbage' is not a backend spec"):
        xgrad.get_backend()
    with pytest.warns(xgrad.backends.BackendWarning, match=r"XGRAD_BACKEND='garbage'") as rec:
        result = F.softmax(np.zeros(2))
    assert rec[0].filename == __file__  # points at the caller, not inside xgrad
    np.testing.assert_array_equal(result, [0.5, 0.5])
    F.softmax(np.zeros(2))  # once per value: no second warning (filterwarnings = error)
    monkeypatch.setenv("XGRAD_BACKEND", "torch:mps")
    with pytest.raises(ArgumentError, match=r"XGRAD_BACKEND='torch:mps'.*valid devices"):
        xgrad.get_backend()


@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_cli_backends_reports_garbage_xgrad_backend(fmt: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", "backends", *fmt],
        capture_output=True,
        text=True,
        env={**os.environ, "XGRAD_BACKEND": "garbage"},
        check=False,
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "xgrad backends: error: XGRAD_BACKEND='garbage'" in res.stderr
    if fmt:
        data = json.loads(res.stdout)
        assert data["default"]["env"] == "garbage"
        assert "unknown name 'garbage'" in data["default"]["error"]
        assert {r["backend"] for r in data["backends"]} >= {"numpy"}
    else:
        assert "default backend: ERROR: XGRAD_BACKEND='garbage'" in res.stdout
        assert any(line.startswith("numpy ") for line in res.stdout.splitlines())


def test_cli_backends_names_the_default() -> None:
    env = {**os.environ, "XGRAD_BACKEND": "array_api_strict:device1"}
    res = subprocess.run(
        [sys.executable, "-m", "xgrad.cli", "backends"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1] == "default backend: array_api_strict:device1 (XGRAD_BACKEND)"


def test_dtype_names_that_are_no_dtype() -> None:
    b = xgrad.get_backend("numpy")
    for bad in ["banana", "sum", object()]:
        with pytest.raises(ArgumentError, match=r"dtype: expected"):
            b.float_dtype(bad)
        with pytest.raises(ArgumentError, match=r"dtype: expected"):
            b.asarray([1.0], dtype=bad)
    assert b.asarray([1], dtype="int32").dtype == np.int32


def test_host_random_refuses_negative_and_bool_seeds() -> None:
    with pytest.raises(ArgumentError, match=r"seed: expected an int >= 0, found -1"):
        HostRandom(-1)
    with pytest.raises(ArgumentTypeError, match=r"seed: expected an int >= 0"):
        HostRandom(True)  # type: ignore[arg-type]
    assert HostRandom(np.int64(3)).rng.integers(10) == HostRandom(3).rng.integers(10)


def test_the_backend_contract_is_required_and_explicit() -> None:
    from xgrad.backends import BackendHooks

    numpy_backend = xgrad.get_backend("numpy")
    fields = {
        "name": "mine",
        "xp": numpy_backend.xp,
        "device": "cpu",
        "device_label": "cpu",
        "library": "numpy",
        "version": "1",
    }
    # No silent defaults: without hooks a backend is refused when it is built.
    with pytest.raises(TypeError, match="hooks"):
        Backend(**fields)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="BackendHooks"):
        Backend(**fields, hooks=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float64_error"):
        BackendHooks(owns=lambda x: False, to_numpy=np.asarray, synchronize=lambda a: None)  # type: ignore[call-arg]
    # Optional capabilities are declared on the registry entry, None where absent.
    entries = _registry.registered_backends()
    assert entries["numpy"].vjp is None and entries["numpy"].jit is None
    assert entries["torch"].vjp is not None and entries["jax"].enable_float64 is not None


def test_jax_matmul_precision_is_scoped_to_xgrad_products() -> None:
    # xgrad's own products ask JAX for full precision (reduced, TF32-like, by default on
    # NVIDIA GPUs); the user's own JAX code and the process-wide setting are left alone.
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from xgrad.layers import Affine

    xgrad.get_backend("jax")
    assert jax.config.jax_default_matmul_precision is None
    W, b, x = jnp.ones((3, 2), jnp.float32), jnp.zeros(2, jnp.float32), jnp.ones((4, 3))

    def dots(f: Any) -> list[str]:
        text = jax.jit(f).lower(x).as_text()
        return [line for line in text.splitlines() if "dot_general" in line]

    (ours,) = dots(lambda v: Affine(W, b).forward(v))
    assert "precision = [HIGHEST, HIGHEST]" in ours
    (theirs,) = dots(lambda v: v @ W)
    assert "HIGHEST" not in theirs
    with jax.default_matmul_precision("bfloat16"):  # a precision the user chose wins
        (chosen,) = dots(lambda v: Affine(W, b).forward(v) + 1.0)
    assert "HIGHEST" not in chosen
    np.testing.assert_array_equal(np.asarray(Affine(W, b).forward(x)), np.full((4, 2), 3.0))


def test_backend_base_is_a_leaf_of_the_registry() -> None:
    # _base defines what a backend is; the registry, which imports it, hands in its
    # lookup of foreign arrays' owners instead of being imported back (no cycle).
    import ast

    source = Path(xgrad.backends._base.__file__).read_text()
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {m for m in imported if m.startswith("xgrad.backends")}
    torch = pytest.importorskip("torch")
    # A torch array reaches NumPy through torch's own host copy, as before.
    out = xgrad.get_backend("numpy").asarray(torch.arange(3, dtype=torch.float64))
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])
