"""The backend matrix as a pytest plugin: one test body, every registered backend x device.

Installing xgrad registers this module under the ``pytest11`` entry point ``xgrad``, so any
project gets the fixtures without a conftest:

``backend``
    An :class:`xgrad.Backend`, one matrix row per registered backend x device (ids such
    as ``numpy-cpu``, ``torch-cuda:0``, ``array_api_strict-device1``). Rows that cannot
    run here skip with their reason, folded into one summary line per reason.
``xp``
    The row's array namespace.
``dtype``
    The row's float dtype (a dtype of ``xp``), once float64 and once float32.
``jit``
    ``jit(f)``: f compiled with the row's compiler (``jax.jit`` on JAX rows), f itself on
    rows without one.

Rows are chosen with ``--xgrad-backend NAME[:DEVICE]`` (repeatable, comma-separated) or
the ``XGRAD_TEST_BACKENDS`` environment variable; the ``xgrad_skip`` and ``xgrad_xfail``
markers drop rows by name, device or capability (see :func:`row_matches`). Inside a
matrix test :func:`xgrad.testing.assert_close` also checks that the result is an array
of the row's namespace and device.

Nothing happens in a test that does not ask for these fixtures: no backend library is
imported until a row is set up, and JAX's float64 mode (``jax_enable_x64``) is switched on
only when a JAX row is (ini option ``xgrad_jax_x64 = false`` leaves it alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from typing import Any

import pytest

from xgrad import testing as _testing
from xgrad.backends import Backend, BackendUnavailableError, get_backend, registered_backends
from xgrad.checking import backend_hook

__all__ = ["CAPABILITIES", "capabilities", "matrix", "row_matches"]

ENV_VAR = "XGRAD_TEST_BACKENDS"

#: What the ``having=`` and ``lacking=`` arguments of the markers may name.
CAPABILITIES = ("float64", "complex", "mutable", "accelerator", "autodiff", "jit")

_MARKERS = (
    "xgrad_skip(*rows, having=(), lacking=(), reason=None): skip the xgrad backend-matrix"
    " rows that match: a row named in rows (NAME or NAME:DEVICE), having any capability"
    " in having, or lacking any in lacking (capabilities: " + ", ".join(CAPABILITIES) + ")",
    "xgrad_xfail(*rows, having=(), lacking=(), reason=None, strict=None): expect the"
    " matching rows to fail (same matching as xgrad_skip; strict defaults to xfail_strict)",
    "xgrad_any_namespace: xgrad.testing.assert_close does not require arrays of the row's"
    " namespace and device in this test (it compares host copies on purpose)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xgrad", "xgrad backend matrix")
    group.addoption(
        "--xgrad-backend",
        action="append",
        default=[],
        dest="xgrad_backend",
        metavar="NAME[:DEVICE]",
        help="run the backend/xp/dtype fixtures only for these rows (repeatable,"
        f" comma-separated); also {ENV_VAR}",
    )
    parser.addini(
        "xgrad_jax_x64",
        type="bool",
        default=True,
        help="switch on jax_enable_x64 when the first JAX row is set up (default true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    if _selected(config):
        matrix(config)  # a misspelt row is a usage error at once, not at collection


# -- rows ------------------------------------------------------------------------------
def _selected(config: pytest.Config) -> list[str]:
    raw = list(config.getoption("xgrad_backend", None) or [])
    env = os.environ.get(ENV_VAR, "")
    if env:
        raw.append(env)
    return [s.strip() for item in raw for s in item.split(",") if s.strip()]


def matrix(config: pytest.Config) -> list[tuple[str, str]]:
    """The ``(name, device)`` rows of the matrix, filtered by the selection.

    Raises ``pytest.UsageError`` for a selected name no backend has.
    """
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
                raise pytest.UsageError(
                    f"--xgrad-backend: unknown backend {w!r}; known: {sorted(known)}"
                )
        rows = [(n, d) for n, d in rows if any(w in (n, f"{n}:{d}") for w in wanted)]
    return rows


def _uses_ours(metafunc: pytest.Metafunc, name: str) -> bool:
    # A project with a `backend` (or `dtype`) fixture of its own keeps it: only ours are
    # parametrized; a test that parametrizes `dtype` itself keeps its values.
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return False
    defs = metafunc._arg2fixturedefs.get(name)
    func = defs[-1].func if defs else None
    return getattr(func, "__module__", None) == __name__


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and _uses_ours(metafunc, "backend"):
        rows = matrix(metafunc.config)
        metafunc.parametrize("backend", rows, ids=[f"{n}-{d}" for n, d in rows], indirect=True)
        if "dtype" in metafunc.fixturenames and _uses_ours(metafunc, "dtype"):
            # After the rows, so ids read numpy-cpu-float32.
            metafunc.parametrize("dtype", DTYPES, indirect=True)


# -- capabilities ------------------------------------------------------------------------
_capabilities: dict[tuple[str, str], frozenset[str]] = {}


def capabilities(b: Backend) -> frozenset[str]:
    """What a backend row can do, from `CAPABILITIES`: probed once per row."""
    key = (b.name, b.device_label)
    found = _capabilities.get(key)
    if found is None:
        xp = b.xp
        caps = set()
        if b.supports_float64:
            caps.add("float64")
        try:
            z = xp.asarray(1j, dtype=xp.complex128, device=b.device)
            if b.dtype_name(z.dtype) == "complex128":
                caps.add("complex")
        except (AttributeError, TypeError, ValueError):
            pass
        try:
            a = xp.zeros(2, device=b.device)
            a[0] = 1.0
            caps.add("mutable")
        except (TypeError, ValueError, NotImplementedError):
            pass  # JAX arrays are immutable: item assignment is a TypeError
        if b.accelerator:
            caps.add("accelerator")
        if backend_hook(b, "vjp") is not None:
            caps.add("autodiff")
        if backend_hook(b, "jit") is not None:
            caps.add("jit")
        found = _capabilities[key] = frozenset(caps)
    return found


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _check_capabilities(names: tuple[str, ...], where: str) -> None:
    unknown = [c for c in names if c not in CAPABILITIES]
    if unknown:
        raise pytest.UsageError(
            f"{where}: unknown capabilities {unknown}; expected some of {list(CAPABILITIES)}"
        )


def row_matches(
    mark: pytest.Mark, name: str, device: str, caps: frozenset[str] | None
) -> bool | None:
    """Whether an ``xgrad_skip``/``xgrad_xfail`` marker applies to the row ``name:device``.

    A marker applies if the row is one of its positional ``rows`` (``NAME`` for every
    device of a backend, ``NAME:DEVICE`` for one), or has any capability listed in
    ``having``, or lacks any listed in ``lacking``: the criteria are or-ed. With ``caps``
    None (the row is not set up yet), None means "only the capabilities can tell".
    """
    rows = tuple(mark.args)
    having = _names(mark.kwargs.get("having", ()))
    lacking = _names(mark.kwargs.get("lacking", ()))
    _check_capabilities(having + lacking, f"@pytest.mark.{mark.name}")
    if any(r in (name, f"{name}:{device}") for r in rows):
        return True
    if not (having or lacking):
        return False
    if caps is None:
        return None
    return any(c in caps for c in having) or any(c not in caps for c in lacking)


def _reason(mark: pytest.Mark, name: str, device: str) -> str:
    why = mark.kwargs.get("reason")
    return f"{mark.name} on {name}-{device}" + (f": {why}" if why else "")


def _apply_markers(
    request: pytest.FixtureRequest, name: str, device: str, caps: frozenset[str] | None
) -> None:
    for mark in request.node.iter_markers("xgrad_skip"):
        if row_matches(mark, name, device, caps):
            pytest.skip(_reason(mark, name, device))
    if caps is None:
        return
    for mark in request.node.iter_markers("xgrad_xfail"):
        if row_matches(mark, name, device, caps):
            strict = mark.kwargs.get("strict")
            if strict is None:
                strict = request.config.getini("xfail_strict")
            request.applymarker(
                pytest.mark.xfail(reason=_reason(mark, name, device), strict=strict)
            )


_ROW_SKIP = pytest.StashKey[bool]()


def _instantiate(request: pytest.FixtureRequest, name: str, device: str) -> Backend:
    if request.config.getini("xgrad_jax_x64"):
        # The matrix runs float64 everywhere; a backend whose float64 must be switched on
        # (JAX) is switched on here, when its first row is used, not at import.
        enable = backend_hook(name, "enable_float64")
        if enable is not None and _can_import(name):
            enable()
    try:
        return get_backend(name, device)
    except BackendUnavailableError as exc:
        request.node.stash[_ROW_SKIP] = True
        pytest.skip(str(exc))


def _can_import(name: str) -> bool:
    entry = registered_backends()[name]
    return entry.unavailable_reason() is None


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Generator[Backend, None, None]:
    """An :class:`xgrad.Backend` of the matrix; unavailable rows skip with their reason."""
    name, device = request.param
    _apply_markers(request, name, device, None)
    b = _instantiate(request, name, device)
    _apply_markers(request, name, device, capabilities(b))
    checked = request.node.get_closest_marker("xgrad_any_namespace") is None
    with _testing.expect_backend(b if checked else None):
        yield b


@pytest.fixture
def xp(backend: Backend) -> Any:
    """The array namespace of the matrix row."""
    return backend.xp


DTYPES = ("float64", "float32")


@pytest.fixture
def dtype(request: pytest.FixtureRequest, backend: Backend) -> Any:
    """The row's float dtype (a dtype of ``xp``): float64, then float32.

    float64 skips with the reason on a row without it (JAX with x64 switched off).
    """
    if request.param == "float64" and not backend.supports_float64:
        pytest.skip(f"{backend.id} has no float64: {backend.float64_error}")
    return backend.float_dtype(request.param)


@pytest.fixture
def jit(backend: Backend) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``jit(f)``: f compiled for the row (``jax.jit`` on JAX), or f itself."""
    hook = backend_hook(backend, "jit")
    return hook if hook is not None else (lambda f: f)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # pytest folds skips by (file, line, reason): a row that cannot run here gets this file
    # and no line, so it is said once per reason, not once per test (pytest's annotation
    # wants an int line; its summary reads None as "no line").
    if report.skipped and item.stash.get(_ROW_SKIP, False) and isinstance(report.longrepr, tuple):
        report.longrepr = (__file__, None, report.longrepr[2])  # type: ignore[assignment]
    return report
