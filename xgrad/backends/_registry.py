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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xgrad.backends._base import Backend, BackendUnavailableError

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
    device label of such an array.
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

    def unavailable_reason(self) -> str | None:
        """None if usable, else a one-line reason (with the pip extra to install)."""
        if self.library is not None and importlib.util.find_spec(self.library) is None:
            hint = f"pip install 'xgrad[{self.extra}]'" if self.extra else f"install {self.library}"
            return f"{self.library} is not installed ({hint})"
        try:
            return self.probe()
        except Exception as exc:  # a broken install is a reason, not a crash
            return f"{self.library or self.name} failed to load: {type(exc).__name__}: {exc}"


_lock = threading.RLock()
_entries: dict[str, BackendEntry] = {}
_entry_points_loaded = False
_cache: dict[tuple[str, str | None], Backend] = {}
_default: list[tuple[str, str | None]] = []  # stack: set_backend / use_backend
_type_owner: dict[type, str] = {}  # array type -> backend name ("" for non-arrays)


def _builtin_entry(name: str) -> BackendEntry:
    module = importlib.import_module(f"xgrad.backends.{name}")
    return module.ENTRY


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
                        probe=lambda r=reason: r,
                    )
                    continue
                _entries[ep.name] = _entry_from_factory(ep.name, factory)


def _unavailable(name: str, reason: str) -> Callable[[str | None], Backend]:
    def create(device: str | None) -> Backend:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")

    return create


def _entry_from_factory(name: str, factory: Any) -> BackendEntry:
    if isinstance(factory, BackendEntry):
        factory.name = name
        return factory
    if not callable(factory):
        raise TypeError(
            f"factory: expected a callable (device) -> Backend or a BackendEntry, "
            f"found {type(factory).__name__}"
        )
    return BackendEntry(name=name, create=factory)


def register_backend(name: str, factory: Callable[[str | None], Backend] | BackendEntry) -> None:
    """Register a backend under ``name``.

    Parameters
    ----------
    name : str
        Registry name; must not contain ``":"`` (that separates the device).
    factory : callable or BackendEntry
        ``factory(device)`` returns a :class:`Backend` (``device`` is a string such as
        ``"cuda:0"``, or None for the library's default). A :class:`BackendEntry` also
        tells the registry how to check availability without importing the library.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a non-empty string without ':', found {name!r}")
    entry = _entry_from_factory(name, factory)
    with _lock:
        _ensure_loaded()
        _entries[name] = entry
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
    """Split ``"torch:cuda:0"`` into ``("torch", "cuda:0")``."""
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a name such as 'numpy' or a Backend, found {spec!r}")
    name, sep, device = spec.strip().partition(":")
    return name, (device if sep and device else None)


def _lookup(name: str) -> BackendEntry:
    entries = registered_backends()
    if name not in entries:
        valid = ", ".join(sorted(entries))
        raise ValueError(f"backend: unknown name {name!r}; valid names are: {valid}")
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
    reason = entry.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    backend = entry.create(device)
    with _lock:
        _cache[key] = backend
        _cache.setdefault((name, backend.device_label), backend)
    return backend


def _current_default() -> tuple[str, str | None]:
    with contextlib.suppress(IndexError):  # no lock: read-only, and fast
        return _default[-1]
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return parse_spec(env)
    return "numpy", None


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


def backend_of(x: Any, *, strict: bool = True) -> Backend | None:
    """The backend (library and device) an array belongs to.

    Returns None for non-arrays when ``strict`` is False; raises ``TypeError`` otherwise.
    """
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
    if not name:
        if strict:
            raise TypeError(f"expected an array of a registered backend, found {t.__name__}")
        return None
    device_of = _entries[name].device_of
    label = device_of(x) if device_of is not None else None
    backend = _cache.get((name, label))
    return backend if backend is not None else get_backend(name, label)


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
            raise ValueError(
                f"arrays from two backends or devices passed together: {found.spec} and "
                f"{owner.spec}; move them to one backend first (Backend.asarray)"
            )
        found = owner
    if backend is not None:
        return get_backend(backend)
    return found if found is not None else get_backend()
