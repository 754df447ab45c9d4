"""The pytest plugin (xgrad/pytest_plugin.py): on every row of this suite, and in fresh
projects (pytester) that have no conftest of their own."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad import pytest_plugin
from xgrad.backends import BackendUnavailableError, registered_backends
from xgrad.testing import assert_close, expect_backend

pytest_plugins = ["pytester"]


def usable_rows() -> list[str]:
    rows = []
    for name, entry in sorted(registered_backends().items()):
        for device in entry.matrix_devices():
            try:
                xgrad.get_backend(name, device)
            except BackendUnavailableError:
                continue
            rows.append(f"{name}-{device}")
    return rows


# -- on every row of xgrad's own matrix ----------------------------------------------------
def test_assert_close_requires_the_rows_namespace_and_device(backend: xgrad.Backend) -> None:
    x = backend.asarray([1.0, 2.0])
    assert_close(x, np.array([1.0, 2.0]))
    assert_close(3.0, np.float64(3.0))  # a Python number has no namespace to check
    host = np.array([1.0, 2.0])
    if backend.name != "numpy":
        with pytest.raises(AssertionError, match=r"namespace: expected an array of"):
            assert_close(host, host)  # the silent NumPy fallback
    other = "device1" if backend.device_label != "device1" else "CPU_DEVICE"
    foreign = xgrad.get_backend("array_api_strict", other).asarray([1.0, 2.0])
    with pytest.raises(AssertionError, match=rf"found .*\(array_api_strict:{other}\)"):
        assert_close(foreign, host)  # right library on the wrong device fails too
    assert_close(host, host, check_namespace=False)
    with expect_backend(None):
        assert_close(host, host)


def test_capabilities_are_what_the_row_does(backend: xgrad.Backend) -> None:
    caps = pytest_plugin.capabilities(backend)
    assert set(caps) <= set(pytest_plugin.CAPABILITIES)
    assert ("float64" in caps) == backend.supports_float64
    a = backend.xp.zeros(2, device=backend.device)
    try:
        a[0] = 1.0
        mutable = True
    except TypeError:
        mutable = False
    assert ("mutable" in caps) == mutable
    assert ("accelerator" in caps) == backend.accelerator
    assert ("autodiff" in caps) == (backend.name in ("torch", "jax"))
    assert ("jit" in caps) == (backend.name == "jax")


def test_dtype_axis_and_jit(backend: xgrad.Backend, dtype: Any, jit: Any, request: Any) -> None:
    name = backend.dtype_name(dtype)
    assert request.node.callspec.id.endswith(name)
    xp = backend.xp

    def f(v: Any) -> Any:
        return xp.sin(v) * 2.0

    x = xp.asarray([0.5, 1.0], dtype=dtype, device=backend.device)
    fj = jit(f)
    assert (fj is f) == ("jit" not in pytest_plugin.capabilities(backend))
    y = fj(x)
    assert backend.dtype_name(y.dtype) == name
    assert_close(y, 2 * np.sin(np.array([0.5, 1.0], dtype=name)))


@pytest.mark.xgrad_skip(lacking="mutable", reason="writes in place")
def test_skip_marker_by_capability(backend: xgrad.Backend) -> None:
    assert "mutable" in pytest_plugin.capabilities(backend)


# -- fresh projects --------------------------------------------------------------------
@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("XGRAD_TEST_BACKENDS", raising=False)
    return pytester


def test_matrix_ids_and_one_skip_line_per_reason(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_rows="""
        def test_row(backend, xp):
            assert xp is backend.xp
        """
    )
    result = project.runpytest("-v", "-rs")
    expected = [
        f"{n}-{d}" for n, e in sorted(registered_backends().items()) for d in e.matrix_devices()
    ]
    out = result.stdout.str()
    for row in expected:
        assert f"test_row[{row}]" in out, out
    usable = usable_rows()
    result.assert_outcomes(passed=len(usable), skipped=len(expected) - len(usable))
    skip_lines = [line for line in out.splitlines() if line.startswith("SKIPPED [")]
    assert len(skip_lines) == len(expected) - len(usable)
    assert all("pytest_plugin.py: backend '" in line for line in skip_lines), skip_lines


def test_row_selection_option_env_and_unknown_name(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(test_rows="def test_row(backend): pass")
    rows = "numpy,array_api_strict:device1"
    out = project.runpytest("--collect-only", "-q", "--xgrad-backend", rows)
    ids = [line for line in out.stdout.lines if "::" in line]
    assert ids == [
        "test_rows.py::test_row[array_api_strict-device1]",
        "test_rows.py::test_row[numpy-cpu]",
    ]
    monkeypatch.setenv("XGRAD_TEST_BACKENDS", "numpy")
    out = project.runpytest("--collect-only", "-q")
    ids = [line for line in out.stdout.lines if "::" in line]
    assert ids == ["test_rows.py::test_row[numpy-cpu]"]
    monkeypatch.delenv("XGRAD_TEST_BACKENDS")
    bad = project.runpytest("--xgrad-backend", "nump")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--xgrad-backend: unknown backend 'nump'*"])


def test_markers_skip_and_xfail_rows(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_marks="""
        import pytest

        @pytest.mark.xgrad_skip("numpy", "array_api_strict:device1", reason="not here")
        def test_by_row(backend):
            assert backend.spec not in ("numpy:cpu", "array_api_strict:device1")

        @pytest.mark.xgrad_xfail("array_api_strict", reason="known bug", strict=True)
        def test_xfail(backend):
            assert backend.name != "array_api_strict"

        @pytest.mark.xgrad_xfail("numpy", reason="passes anyway", strict=True)
        def test_strict_xpass(backend):
            pass

        @pytest.mark.xgrad_skip(having="mutable")
        def test_immutable_only(backend):
            assert backend.name == "jax"

        @pytest.mark.xgrad_skip(lacking="warp drive")
        def test_typo(backend):
            pass
        """
    )
    result = project.runpytest("-rsxX", "--xgrad-backend", "numpy,array_api_strict")
    out = result.stdout.str()
    # by_row: 1 passed, 2 skipped; xfail: 1 passed, 2 xfailed; strict_xpass: 1 failed (the
    # numpy XPASS), 2 passed; immutable_only: 3 skipped; typo: 3 errors at setup.
    result.assert_outcomes(skipped=5, passed=4, xfailed=2, failed=1, errors=3)
    assert "xgrad_skip on numpy-cpu: not here" in out
    assert "[XPASS(strict)] xgrad_xfail on numpy-cpu: passes anyway" in out
    assert "unknown capabilities ['warp drive']" in out


def test_namespace_check_catches_a_numpy_fallback(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_fallback="""
        import numpy as np
        from xgrad.testing import assert_close

        def twice(x):
            return np.asarray(x) * 2.0   # the bug: silently computes in NumPy

        def test_twice(backend, xp):
            x = xp.asarray([1.0, 2.0], device=backend.device)
            assert_close(twice(x), np.array([2.0, 4.0]))
        """
    )
    result = project.runpytest("--xgrad-backend", "numpy,array_api_strict")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*namespace: expected an array of array_api_strict:CPU_DEVICE*"])


def test_inert_without_the_fixtures_and_no_clash(project: pytest.Pytester) -> None:
    # A project with its own --backend option and backend fixture: ours stay out of the way,
    # and no backend library is imported, nor JAX's x64 switched on, until a row is used.
    project.makeconftest(
        """
        import pytest

        def pytest_addoption(parser):
            parser.addoption("--backend", default="sqlite")

        @pytest.fixture
        def backend(request):
            return request.config.getoption("--backend")
        """
    )
    project.makepyfile(
        test_own=textwrap.dedent(
            """
            import sys

            def test_own_backend(backend):
                assert backend == "postgres"
                assert not {"torch", "jax", "cupy"} & set(sys.modules)
            """
        )
    )
    result = project.runpytest_subprocess("--backend", "postgres", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_jax_x64_is_switched_on_by_a_jax_row_only(project: pytest.Pytester) -> None:
    pytest.importorskip("jax")
    project.makepyfile(
        test_x64="""
        import sys

        def test_first_no_row():
            assert "jax" not in sys.modules

        def test_jax_row(backend, dtype):
            import jax
            assert jax.config.jax_enable_x64
            assert backend.dtype_name(dtype) in ("float64", "float32")
        """
    )
    result = project.runpytest_subprocess("--xgrad-backend", "jax:cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
