"""array-api-strict: the standard and nothing more, with extra devices.

Its ``device1`` is a second, fake device: arrays created without ``device=`` land on the
default device and then refuse to combine, so tests on it catch wrong-device arrays.
"""

from __future__ import annotations

from typing import Any

from xgrad.backends._base import Backend, BackendHooks, float64_works, no_synchronize
from xgrad.backends._registry import BackendEntry
from xgrad.errors import ArgumentError

_DEVICES = ("CPU_DEVICE", "device1", "device2")


def _owns(x: Any) -> bool:
    from array_api_compat import is_array_api_strict_namespace

    mod = type(x).__module__
    if not mod.startswith("array_api_strict"):
        return False
    return bool(is_array_api_strict_namespace(x.__array_namespace__()))


def device_label(x: Any) -> str:
    return str(x.device._device)


def create(device: str | None) -> Backend:
    import array_api_strict as xp
    import numpy as np

    label = "CPU_DEVICE" if device in (None, "cpu") else device
    if label not in _DEVICES:
        raise ArgumentError(
            f"device: array_api_strict devices are {', '.join(_DEVICES)}, found {device!r}"
        )
    dev = xp.Device(label)
    cpu = xp.Device("CPU_DEVICE")

    def to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x.to_device(cpu))

    return Backend(
        name="array_api_strict",
        xp=xp,
        device=dev,
        device_label=label,
        library="array_api_strict",
        version=xp.__version__,
        device_name=f"{label} (NumPy-backed)",
        hooks=BackendHooks(
            owns=_owns, to_numpy=to_numpy, synchronize=no_synchronize, float64_error=float64_works
        ),
    )


ENTRY = BackendEntry(
    name="array_api_strict",
    create=create,
    library="array_api_strict",
    extra="strict",
    matrix_devices=lambda: ["CPU_DEVICE", "device1"],
    devices=lambda: list(_DEVICES),
    owns=_owns,
    device_of=device_label,
    device_forms=("cpu", *_DEVICES),
)
