"""The cross-backend test matrix: one test body, every registered backend x device.

Tests that take the ``backend`` fixture run once per matrix row (ids such as ``numpy-cpu``,
``array_api_strict-device1``, ``torch-cuda:0``). Rows that cannot run here are reported as
skipped with the reason, never dropped; the summary folds those skips into one line per
reason (``SKIPPED [27] tests/conftest.py: backend 'cupy' is unavailable: ...``) instead of one
per test. Select rows with ``--backend NAME[:DEVICE]`` (repeatable, or comma-separated) or
the ``XGRAD_TEST_BACKENDS`` environment variable.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator

import pytest

import xgrad
from xgrad.backends import BackendUnavailableError, registered_backends

if importlib.util.find_spec("jax") is not None:
    # The matrix runs in float64 like every other backend; without x64 JAX is float32 only.
    import jax

    jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        help="run the backend matrix only for NAME or NAME:DEVICE (repeatable, comma-separated);"
        " also XGRAD_TEST_BACKENDS",
    )


def _selected(config: pytest.Config) -> list[str]:
    raw = list(config.getoption("--backend"))
    env = os.environ.get("XGRAD_TEST_BACKENDS", "")
    if env:
        raw.append(env)
    return [s.strip() for item in raw for s in item.split(",") if s.strip()]


def matrix(config: pytest.Config) -> list[tuple[str, str]]:
    """(name, device) rows of the matrix, filtered by the selection."""
    rows = [
        (name, device)
        for name, entry in sorted(registered_backends().items())
        for device in entry.matrix_devices()
    ]
    wanted = _selected(config)
    if wanted:
        known = {name for name, _ in rows}
        for w in wanted:
            if w.partition(":")[0] not in known:
                raise pytest.UsageError(f"--backend: unknown backend {w!r}; known: {sorted(known)}")
        rows = [(n, d) for n, d in rows if any(w == n or w == f"{n}:{d}" for w in wanted)]
    return rows


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        rows = matrix(metafunc.config)
        metafunc.parametrize("backend", rows, ids=[f"{n}-{d}" for n, d in rows], indirect=True)


_ROW_SKIP = pytest.StashKey[bool]()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> xgrad.Backend:
    """A `Backend` of the matrix; unavailable rows skip with their reason."""
    name, device = request.param
    try:
        return xgrad.get_backend(name, device)
    except BackendUnavailableError as exc:
        request.node.stash[_ROW_SKIP] = True
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A matrix row that cannot run here says so once per reason, not once per test: pytest
    # folds skips by (file, line, reason), so the row skips get this file and no line.
    if report.skipped and item.stash.get(_ROW_SKIP, False) and isinstance(report.longrepr, tuple):
        report.longrepr = (__file__, None, report.longrepr[2])
    return report


@pytest.fixture
def xp(backend: xgrad.Backend):  # type: ignore[no-untyped-def]
    """The array namespace of the matrix row."""
    return backend.xp
