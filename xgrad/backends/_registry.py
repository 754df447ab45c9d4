"""Registry of backends by name, the current default, and array-to-backend resolution.

Built-in backends are described by small modules (``xgrad/backends/numpy.py`` ...) whose
libraries are imported only when the backend is first used; third-party backends come in
through :func:`register_backend` or the ``xgrad.backends`` entry-point group.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from xgrad._warnings import user_stacklevel
from xgrad.backends._base import (
    Backend,
    BackendUnavailableError,
    BackendWarning,
    set_owner_lookup,
)
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "BackendEntry",
    "available_backends",
    "backend_of",
    "get_backend",
    "register_backend",
    "registered_backends",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

ENV_VAR = "XGRAD_BACKEND"
ENTRY_POINT_GROUP = "xgrad.backends"

_BUILTIN = ("numpy", "cupy", "torch", "jax", "array_api_strict")


@dataclass
class BackendEntry:
    """What the registry knows about one backend name, before anything is imported.

    ``create(device)`` builds the `Backend` (``device=None``: the library's default);
    ``library``/``extra`` say what to install; ``matrix_devices`` are the devices the
    test matrix covers (usable here or not); ``devices`` those usable here; ``probe``
    (optional) explains why an installed library is unusable; ``owns(x)`` tells whether
    ``x`` is an array of this library without importing it; ``device_of(x)`` is the
    device label of such an array. ``device_forms`` are the device strings the backend
    accepts, ``N`` standing for an index (``("cpu", "cuda", "cuda:N")``); others are refused
    when the spec is parsed, before the library is touched. Empty: any string is passed to
    ``create``.

    Optional capabilities, None where the library has none: ``vjp(f, primals, cotangent)
    -> (f(*primals), cotangent^T J)``, the library's own reverse-mode gradient (what
    `xgrad.gradcheck` checks against); ``jit(f)``, its compiler; ``enable_float64()``, for
    a library that computes in float32 unless told (the test matrix runs in float64);
    ``matmul(a, b)``, for a library whose ``a @ b`` is not computed at the dtype's full
    precision by default (JAX on GPUs): xgrad's own matrix products call it.
    """

    name: str
    create: Callable[[str | None], Backend]
    library: str | None = None
    extra: str | None = None
    matrix_devices: Callable[[], list[str]] = field(default=lambda: [""])
    devices: Callable[[], list[str]] = field(default=lambda: [])
    probe: Callable[[], str | None] = field(default=lambda: None)
    owns: Callable[[Any], bool] | None = None
    device_of: Callable[[Any], str] | None = None
    device_forms: tuple[str, ...] = ()
    vjp: Callable[..., tuple[Any, tuple[Any, ...]]] | None = None
    jit: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    enable_float64: Callable[[], None] | None = None
    matmul: Callable[[Any, Any], Any] | None = None

    def accepts_device(self, device: str) -> bool:
        """Whether ``device`` has one of the ``device_forms`` (always, if there are none)."""
        if not self.device_forms:
            return True
        return any(re.fullmatch(_form_pattern(form), device) for form in self.device_forms)

    def unavailable_reason(self) -> str | None:
        """None if usable, else a one-line reason (with the pip extra to install)."""
        if self.library is not None and importlib.util.find_spec(self.library) is None:
            # xgrad is installed from its source tree (it is not on the package index yet).
            hint = (
                f'pip install -e ".[{self.extra}]" in the xgrad source tree'
                if self.extra
                else f"install {self.library}"
            )
            return f"{self.library} is not installed ({hint})"
        try:
            return self.probe()
        except Exception as exc:  # a broken install is a reason, not a crash
            return f"{self.library or self.name} failed to load: {type(exc).__name__}: {exc}"


def _form_pattern(form: str) -> str:
    return ":".join(r"\d+" if part == "N" else re.escape(part) for part in form.split(":"))


_lock = threading.RLock()
_entries: dict[str, BackendEntry] = {}
_entry_points_loaded = False
_cache: dict[tuple[str, str | None], Backend] = {}
_default: list[tuple[str, str | None]] = []  # stack: set_backend / use_backend
_type_owner: dict[type, str] = {}  # array type -> backend name ("" for non-arrays)


def _builtin_entry(name: str) -> BackendEntry:
    module = importlib.import_module(f"xgrad.backends.{name}")
    entry: BackendEntry = module.ENTRY
    return entry


def _ensure_loaded() -> None:
    global _entry_points_loaded
    with _lock:
        for name in _BUILTIN:
            if name not in _entries:
                _entries[name] = _builtin_entry(name)
        if not _entry_points_loaded:
            _entry_points_loaded = True
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in _entries:
                    continue
                try:
                    factory = ep.load()
                except Exception as exc:
                    reason = f"entry point {ep.value!r} failed to load: {exc}"
                    _entries[ep.name] = BackendEntry(
                        name=ep.name,
                        create=_unavailable(ep.name, reason),
                        probe=_constant(reason),
                    )
                    continue
                _entries[ep.name] = _entry_from_factory(ep.name, factory)


def _constant(reason: str) -> Callable[[], str]:
    def probe() -> str:
        return reason

    return probe


def _unavailable(name: str, reason: str) -> Callable[[str | None], Backend]:
    def create(device: str | None) -> Backend:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")

    return create


def _entry_from_factory(name: str, factory: Any) -> BackendEntry:
    if isinstance(factory, BackendEntry):
        factory.name = name
        return factory
    if not callable(factory):
        raise ArgumentTypeError(
            f"factory: expected a callable (device) -> Backend or a BackendEntry, "
            f"found {type(factory).__name__}"
        )
    return BackendEntry(name=name, create=factory)


def register_backend(
    name: str,
    factory: Callable[[str | None], Backend] | BackendEntry,
    *,
    replace: bool = False,
) -> None:
    """Register a backend under ``name``.

    Parameters
    ----------
    name : str
        Registry name: letters, digits, ``_``, ``.`` and ``-`` (``":"`` separates the
        device in a spec).
    factory : callable or BackendEntry
        ``factory(device)`` returns a :class:`Backend` (``device`` is a string such as
        ``"cuda:0"``, or None for the library's default). A :class:`BackendEntry` also
        tells the registry how to check availability without importing the library.
        What the factory returns is checked when the backend is first used.
    replace : bool
        Replace a backend already registered under ``name`` (a built-in one included).
        Without it that is refused: a silent replacement changes every later call.

    Raises
    ------
    ArgumentError
        A bad name, or ``name`` already registered and ``replace`` not given.
    ArgumentTypeError
        ``factory`` is neither callable nor a :class:`BackendEntry`.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ArgumentError(
            f"name: expected a non-empty name of letters, digits, '_', '.' or '-' (no ':' or"
            f" spaces), found {name!r}"
        )
    entry = _entry_from_factory(name, factory)
    with _lock:
        _ensure_loaded()
        if name in _entries and not replace:
            kind = "a built-in backend" if name in _BUILTIN else "already registered"
            raise ArgumentError(
                f"name: {name!r} is {kind}; pass replace=True to replace it (every later"
                f" get_backend({name!r}) then uses the new factory)"
            )
        _entries[name] = entry
        _env_checked.clear()
        _type_owner.clear()
        for key in [k for k in _cache if k[0] == name]:
            del _cache[key]


def registered_backends() -> dict[str, BackendEntry]:
    """Every registered backend by name, usable here or not."""
    _ensure_loaded()
    return dict(_entries)


def available_backends() -> dict[str, str | None]:
    """Every registered backend mapped to None if usable here, else the reason it is not.

    >>> available_backends()["numpy"] is None
    True
    """
    return {name: entry.unavailable_reason() for name, entry in registered_backends().items()}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"torch:cuda:0"`` into ``("torch", "cuda:0")``.

    Only the syntax is checked here (no spaces, no empty parts); :func:`get_backend` checks
    the name and the device against the registry.
    """
    if not isinstance(spec, str):
        raise ArgumentTypeError(
            f"backend: expected a name such as 'numpy' or a Backend, found {spec!r}"
        )
    name, sep, device = spec.partition(":")
    if not name or (sep and not device) or any(c.isspace() for c in spec):
        raise ArgumentError(
            f"backend: expected NAME or NAME:DEVICE without spaces, such as 'numpy' or"
            f" 'torch:cuda:0', found {spec!r}"
        )
    return name, (device if sep else None)


def _check_device(entry: BackendEntry, device: str | None) -> None:
    if device is None or entry.accepts_device(device):
        return
    forms = ", ".join(entry.device_forms)
    if any("N" in form.split(":") for form in entry.device_forms):
        forms += " (N = 0, 1, ...)"
    raise ArgumentError(
        f"device: {device!r} is not a device of backend {entry.name!r}; valid devices: {forms}"
    )


def _lookup(name: str) -> BackendEntry:
    entries = registered_backends()
    if name not in entries:
        valid = ", ".join(sorted(entries))
        raise ArgumentError(f"backend: unknown name {name!r}; valid names are: {valid}")
    return entries[name]


def get_backend(name: str | Backend | None = None, device: str | None = None) -> Backend:
    """The backend called ``name`` (on ``device``), or the current default.

    Parameters
    ----------
    name : str, Backend or None
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``, ``"array_api_strict"`` or a
        registered third-party name, optionally with a device: ``"torch:cuda"``,
        ``"cupy:1"``. None takes the default: :func:`set_backend` / :func:`use_backend`,
        else the ``XGRAD_BACKEND`` environment variable, else ``"numpy"``.
    device : str, optional
        Device, overriding one given in ``name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones).
    BackendUnavailableError
        The library is not installed (the message names the pip extra) or cannot run here.

    Examples
    --------
    >>> get_backend("numpy")
    Backend('numpy', device='cpu', numpy ...)
    """
    if isinstance(name, Backend):
        if device is None or device == name.device_label:
            return name
        return get_backend(name.name, device)
    if name is None:
        name, default_device = _current_default()
        device = device if device is not None else default_device
    else:
        name, spec_device = parse_spec(name)
        device = device if device is not None else spec_device
    device = None if device is None else str(device)
    key = (name, device)
    cached = _cache.get(key)  # dict reads are atomic; creation below takes the lock
    if cached is not None:
        return cached
    entry = _lookup(name)
    _check_device(entry, device)
    reason = entry.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    backend = entry.create(device)
    if not isinstance(backend, Backend):
        factory = getattr(entry.create, "__qualname__", None) or repr(entry.create)
        raise ArgumentTypeError(
            f"factory: the factory of backend {name!r} ({factory}) returned"
            f" {type(backend).__name__}, expected a Backend (see xgrad.Backend)"
        )
    with _lock:
        _cache[key] = backend
        _cache.setdefault((name, backend.device_label), backend)
    return backend


_env_checked: dict[str, tuple[str, str | None] | str] = {}  # value -> spec or error


def _env_default(env: str) -> tuple[str, str | None] | str:
    """``XGRAD_BACKEND``'s ``(name, device)``, or the reason it is not a usable spec."""
    result = _env_checked.get(env)
    if result is None:
        try:
            name, device = parse_spec(env)
            _check_device(_lookup(name), device)
            result = (name, device)
        except ArgumentError as exc:
            result = f"{ENV_VAR}={env!r} is not a backend spec: {exc}"
        _env_checked[env] = result
    return result


def default_spec() -> tuple[str, str | None, str]:
    """The default backend's ``(name, device, where it comes from)``.

    Raises ``ArgumentError`` naming ``XGRAD_BACKEND`` if that variable is set to garbage.
    """
    with contextlib.suppress(IndexError):
        name, device = _default[-1]
        return name, device, "set_backend/use_backend"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        result = _env_default(env)
        if isinstance(result, str):
            raise ArgumentError(result)
        return result[0], result[1], ENV_VAR
    return "numpy", None, "built-in default"


def _current_default() -> tuple[str, str | None]:
    with contextlib.suppress(IndexError):  # no lock: read-only, and fast
        return _default[-1]
    name, device, _ = default_spec()
    return name, device


def _warn_if_env_is_garbage(found: str) -> None:
    # A call given arrays runs on their backend, so a bad XGRAD_BACKEND does not change its
    # result: a warning (once per value), not an error that would break working code.
    if _default:
        return
    env = os.environ.get(ENV_VAR, "").strip()
    if not env or env in _env_warned:
        return
    result = _env_default(env)
    if isinstance(result, str):
        _env_warned.add(env)
        warnings.warn(
            f"{result}; ignored here because the arrays passed decide the backend"
            f" ({found}), but calls without arrays will fail",
            BackendWarning,
            stacklevel=user_stacklevel(),
        )


_env_warned: set[str] = set()


def set_backend(name: str | Backend, device: str | None = None) -> Backend:
    """Make ``name`` (on ``device``) the default backend and return it.

    The backend is checked at once, so a typo or a missing library fails here.
    """
    backend = get_backend(name, device)
    with _lock:
        _default[:] = [(backend.name, backend.device_label)]
    return backend


@contextlib.contextmanager
def use_backend(name: str | Backend, device: str | None = None) -> Iterator[Backend]:
    """Context manager: ``name`` is the default backend inside the ``with`` block.

    >>> with use_backend("numpy") as b:
    ...     b.name
    'numpy'
    """
    backend = get_backend(name, device)
    with _lock:
        _default.append((backend.name, backend.device_label))
    try:
        yield backend
    finally:
        with _lock:
            _default.pop()


def _owner_name(x: Any) -> str:
    """The name of the backend whose library made ``x`` ("" for non-arrays)."""
    # Called on every public function's inputs: ownership is cached per type.
    t = type(x)
    name = _type_owner.get(t)
    if name is None:
        name = ""
        for candidate, entry in registered_backends().items():
            if entry.owns is not None and entry.owns(x):
                name = candidate
                break
        _type_owner[t] = name
        if name:
            _warn_if_env_is_garbage(name)
    return name


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` at the full precision of the arrays' dtype, on every backend.

    xgrad's own matrix products (the nets' layers and losses) go through here, so that a
    library whose default is a faster, reduced precision (JAX's float32 on NVIDIA GPUs,
    TF32-like) is asked for full precision for them only, not for the user's code.
    """
    name = _owner_name(a)
    special = _entries[name].matmul if name else None
    return a @ b if special is None else special(a, b)


@overload
def backend_of(x: Any, *, strict: Literal[True] = ...) -> Backend: ...
@overload
def backend_of(x: Any, *, strict: bool) -> Backend | None: ...
def backend_of(x: Any, *, strict: bool = True) -> Backend | None:
    """The backend (library and device) an array belongs to.

    Returns None for non-arrays when ``strict`` is False; raises ``TypeError`` otherwise.
    """
    t = type(x)
    name = _owner_name(x)
    if not name:
        if strict:
            raise ArgumentTypeError(
                f"expected an array of a registered backend, found {t.__name__}"
            )
        return None
    device_of = _entries[name].device_of
    label = device_of(x) if device_of is not None else None
    backend = _cache.get((name, label))
    return backend if backend is not None else get_backend(name, label)


def _foreign_owner(obj: Any) -> Backend | None:
    return backend_of(obj, strict=False)


# Backend.asarray copies arrays of other libraries through their owner's to_numpy.
set_owner_lookup(_foreign_owner)


def resolve_backend(backend: str | Backend | None, *arrays: Any) -> Backend:
    """The backend a public function should run on.

    ``backend`` given: that backend (arrays are moved onto it by the caller with
    ``Backend.asarray``). Otherwise the backend all array arguments share; mixing
    libraries or devices raises ``ValueError`` naming both. No arrays: the default backend.
    """
    found: Backend | None = None
    for x in arrays:
        owner = backend_of(x, strict=False)
        if owner is None:
            continue
        if found is not None and owner != found:
            raise ArgumentError(
                f"arrays from two backends or devices passed together: {found.spec} and "
                f"{owner.spec}; move them to one backend first (Backend.asarray)"
            )
        found = owner
    if backend is not None:
        return get_backend(backend)
    if found is not None:
        _warn_if_env_is_garbage(found.spec)
        return found
    return get_backend()


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of a registered backend."""
    return backend_of(x, strict=False) is not None


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any backend (any device) to a NumPy array, explicitly.

    >>> to_numpy([1.0, 2.0])
    array([1., 2.])
    """
    owner = backend_of(x, strict=False)
    if owner is None:
        return np.asarray(x)
    return owner.to_numpy(x)
