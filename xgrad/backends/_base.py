"""The `Backend` object: one array library on one device, behind the array API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError

__all__ = ["Backend", "BackendHooks", "BackendUnavailableError", "BackendWarning", "DtypeLike"]

DtypeLike = Any  # "float32", "float64", a NumPy dtype, or a namespace dtype


class BackendUnavailableError(XgradError, ImportError):
    """A registered backend cannot be used here: not installed, or installed but unusable.

    The message names the backend, the reason and, where it helps, the pip extra to install.
    """


class BackendWarning(UserWarning):
    """The backend configuration (``XGRAD_BACKEND``) is wrong but did not decide this call."""


FLOAT_NAMES = ("float32", "float64")
_KNOWN_DTYPES = (
    "float32",
    "float64",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


@dataclass(frozen=True)
class BackendHooks:
    """What every backend must tell xgrad about its arrays: the backend contract.

    All four are required (no defaults): a backend that leaves one out fails when it is
    built, instead of later, with its arrays taken for NumPy's or copied wrongly.

    Attributes
    ----------
    owns : callable
        ``owns(x) -> bool``: whether ``x`` is an array of this library (any device).
    to_numpy : callable
        ``to_numpy(x) -> numpy.ndarray``: an explicit host copy of such an array.
    synchronize : callable
        ``synchronize(arrays)``: wait for queued device work (``lambda arrays: None`` on
        a CPU); libraries without a device-wide barrier wait for the ``arrays`` given.
    float64_error : callable
        ``float64_error() -> str | None``: None if float64 works, else why not.
    """

    owns: Callable[[Any], bool]
    to_numpy: Callable[[Any], np.ndarray]
    synchronize: Callable[[tuple[Any, ...]], None]
    float64_error: Callable[[], str | None]


def no_synchronize(arrays: tuple[Any, ...]) -> None:
    """`BackendHooks.synchronize` of a library whose work is done when a call returns."""


def float64_works() -> str | None:
    """`BackendHooks.float64_error` of a library that always has float64."""
    return None


@dataclass(frozen=True, eq=False, repr=False)
class Backend:
    """An array library on one device, seen through its array API namespace.

    Backends are made by :func:`xgrad.get_backend`; this class is what it returns.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"numpy"``, ``"torch"``, ``"array_api_strict"``.
    xp : module
        The array API namespace (from ``array_api_compat``) of the library.
    device : object
        The library's own device object; every array the backend creates lives there.
    device_label : str
        Short device name as used in backend specs (``"cpu"``, ``"cuda:0"``, ``"device1"``).
    accelerator : bool
        Whether the device is a GPU (or another accelerator): work there wants few, large
        vectorized calls rather than cache-sized ones.
    library : str
        Import name of the array library.
    hooks : BackendHooks
        The library's answers to what xgrad needs to know about its arrays (required).
    """

    name: str
    xp: ModuleType
    device: Any
    device_label: str
    library: str
    version: str
    device_name: str = ""
    accelerator: bool = False
    hooks: BackendHooks = field(kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.hooks, BackendHooks):
            raise ArgumentTypeError(
                f"hooks: expected a xgrad.backends.BackendHooks, found {self.hooks!r}"
            )

    # -- identity -----------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """``"name:device"``, accepted by :func:`xgrad.get_backend`."""
        return f"{self.name}:{self.device_label}"

    @property
    def id(self) -> str:
        """``"name-device"``: the test-matrix id of this backend."""
        return f"{self.name}-{self.device_label}"

    def __repr__(self) -> str:
        label = f"{self.library} {self.version}"
        return f"Backend({self.name!r}, device={self.device_label!r}, {label})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and (self.name, self.device_label) == (
            other.name,
            other.device_label,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.device_label))

    def info(self) -> dict[str, str]:
        """Library, version, device and default dtype, for bug reports."""
        return {
            "backend": self.name,
            "library": self.library,
            "version": self.version,
            "device": self.device_label,
            "device_name": self.device_name or self.device_label,
            "default_dtype": "float64" if self.supports_float64 else "float32 (float64 off)",
        }

    # -- dtypes -------------------------------------------------------------------------
    @property
    def float64_error(self) -> str | None:
        """None if float64 works here, else why not (JAX without x64)."""
        return self.hooks.float64_error()

    @property
    def supports_float64(self) -> bool:
        return self.float64_error is None

    def float_dtype(self, dtype: DtypeLike = None) -> Any:
        """Resolve ``dtype`` (None -> float64) to this namespace's real floating dtype.

        Raises
        ------
        ValueError
            If ``dtype`` is not a real floating dtype, or float64 is asked for where the
            backend cannot provide it (JAX without x64).
        """
        name = self.dtype_name(dtype if dtype is not None else "float64")
        if name not in FLOAT_NAMES:
            raise ArgumentError(f"dtype: expected 'float32' or 'float64', found {dtype!r}")
        if name == "float64" and self.float64_error is not None:
            raise ArgumentError(
                f"dtype: float64 is not available on {self.name}: {self.float64_error}"
            )
        return getattr(self.xp, name)

    def dtype_name(self, dtype: DtypeLike) -> str:
        """Canonical name (``"float32"``, ``"int64"``, ...) of any dtype spelling."""
        if isinstance(dtype, str | np.dtype) or (
            isinstance(dtype, type) and issubclass(dtype, np.generic)
        ):
            try:
                return str(np.dtype(dtype).name)
            except TypeError:  # "banana": not a dtype; callers say what they expected
                return str(dtype)
        for candidate in _KNOWN_DTYPES:
            if dtype == getattr(self.xp, candidate, None):
                return candidate
        try:
            return str(np.dtype(dtype).name)
        except TypeError:
            return str(dtype)

    # -- arrays -------------------------------------------------------------------------
    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library (any device)."""
        return bool(self.hooks.owns(x))

    def asarray(self, obj: Any, dtype: DtypeLike = None, *, copy: bool | None = None) -> Any:
        """Convert ``obj`` to an array of this backend, on its device.

        Python floats and float lists become float64 (torch and JAX would make float32);
        arrays of other libraries travel through host memory explicitly.
        """
        xp = self.xp
        if dtype is not None and not _is_native_dtype(xp, dtype):
            name = self.dtype_name(dtype)
            native = getattr(xp, name, None) if name in (*_KNOWN_DTYPES, "float16") else None
            if native is None:
                raise ArgumentError(
                    f"dtype: expected a dtype of {self.name} such as 'float64', found {dtype!r}"
                )
            dtype = native
        if not self.owns(obj):
            host = _to_host(obj)
            if dtype is None and host.dtype.kind == "f" and host.dtype.itemsize == 8:
                dtype = self.float_dtype(None)
            obj = host
            copy = None  # host copy already made where needed
        elif dtype is not None and self.dtype_name(dtype) == "float64":
            self.float_dtype("float64")
        try:
            return xp.asarray(obj, dtype=dtype, device=self.device, copy=copy)
        except TypeError:
            # Checked only on failure: a namespace dtype is the common, fast case.
            if dtype is not None and self.dtype_name(dtype) not in (*_KNOWN_DTYPES, "float16"):
                raise ArgumentError(
                    f"dtype: expected a dtype of {self.name} such as 'float64', found {dtype!r}"
                ) from None
            raise

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` (an array of this backend) to a NumPy array on the host, explicitly."""
        if isinstance(x, np.ndarray | np.generic | float | int | complex | bool):
            return np.asarray(x)
        return np.asarray(self.hooks.to_numpy(x))

    def synchronize(self, *arrays: Any) -> None:
        """Wait until queued device work is done (for timing on GPUs); a no-op on CPUs.

        Libraries without a device-wide barrier (JAX) wait for the ``arrays`` given.
        """
        self.hooks.synchronize(arrays)


def _is_native_dtype(xp: ModuleType, dtype: Any) -> bool:
    return not isinstance(dtype, str | np.dtype | type)


def _no_foreign_owner(obj: Any) -> Backend | None:
    return None


# Who owns an array of another library: the registry knows every library and imports this
# module, so it hands its lookup in (`set_owner_lookup`) instead of being imported here:
# this module stays a leaf.
_owner_of: Callable[[Any], Backend | None] = _no_foreign_owner


def set_owner_lookup(lookup: Callable[[Any], Backend | None]) -> None:
    """Install ``lookup(obj) -> Backend | None``, used to copy foreign arrays to the host."""
    global _owner_of
    _owner_of = lookup


def _to_host(obj: Any) -> np.ndarray:
    """Host copy of a Python object or of a foreign array, without implicit GPU transfers."""
    if isinstance(obj, np.ndarray | np.generic | float | int | complex | bool | list | tuple):
        return np.asarray(obj)
    owner = _owner_of(obj)
    if owner is not None:
        return owner.to_numpy(obj)
    return np.asarray(obj)
