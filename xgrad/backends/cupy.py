"""CuPy on an NVIDIA GPU.

``import cupy`` succeeds on machines without a GPU and the first allocation fails, so
availability is probed with ``cupy.cuda.is_available()``, never by importing alone.
"""

from __future__ import annotations

import sys
from typing import Any

from xgrad.backends._base import Backend, BackendHooks, BackendUnavailableError, float64_works
from xgrad.backends._registry import BackendEntry
from xgrad.errors import ArgumentError


def _owns(x: Any) -> bool:
    if "cupy" not in sys.modules:
        return False
    from array_api_compat import is_cupy_array

    return bool(is_cupy_array(x))


def device_label(x: Any) -> str:
    return f"cuda:{x.device.id}"


def _probe() -> str | None:
    import cupy

    try:
        if not cupy.cuda.is_available():
            return "cupy is installed but no CUDA GPU is usable (cupy.cuda.is_available() is False)"
    except Exception as exc:  # driver or runtime missing
        return f"cupy is installed but CUDA failed: {type(exc).__name__}: {exc}"
    return None


def _parse(device: str | None) -> int | None:
    if device is None:
        return None
    text = device.removeprefix("cuda").lstrip(":")
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ArgumentError(
            f"device: expected a CUDA device such as 'cuda:0' or '1', found {device!r}"
        ) from None


def _devices() -> list[str]:
    import cupy

    return [f"cuda:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]


def create(device: str | None) -> Backend:
    import array_api_compat.cupy as xp
    import cupy

    index = _parse(device)
    count = cupy.cuda.runtime.getDeviceCount()
    if index is None:
        index = cupy.cuda.Device().id
    if not 0 <= index < count:
        raise BackendUnavailableError(
            f"backend 'cupy' cannot use device {device!r}: {count} CUDA device(s) present"
        )
    dev = cupy.cuda.Device(index)
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def to_numpy(x: Any) -> Any:
        return cupy.asnumpy(x)

    def sync(arrays: tuple[Any, ...]) -> None:
        dev.synchronize()

    return Backend(
        name="cupy",
        xp=xp,
        device=dev,
        device_label=f"cuda:{index}",
        library="cupy",
        version=cupy.__version__,
        device_name=name,
        accelerator=True,
        hooks=BackendHooks(
            owns=_owns, to_numpy=to_numpy, synchronize=sync, float64_error=float64_works
        ),
    )


ENTRY = BackendEntry(
    name="cupy",
    create=create,
    library="cupy",
    extra="cuda13",
    matrix_devices=lambda: ["cuda:0"],
    devices=_devices,
    probe=_probe,
    owns=_owns,
    device_of=device_label,
    device_forms=("cuda", "cuda:N", "N"),
)
