"""NumPy: the reference backend, always available (CPU)."""

from __future__ import annotations

from typing import Any

from xgrad.backends._base import Backend, BackendHooks, float64_works, no_synchronize
from xgrad.backends._registry import BackendEntry
from xgrad.errors import ArgumentError


def _owns(x: Any) -> bool:
    from array_api_compat import is_numpy_array

    return bool(is_numpy_array(x))


def device_label(x: Any) -> str:
    return "cpu"


def create(device: str | None) -> Backend:
    import array_api_compat.numpy as xp
    import numpy as np

    if device not in (None, "cpu"):
        raise ArgumentError(f"device: numpy arrays live on 'cpu' only, found {device!r}")
    return Backend(
        name="numpy",
        xp=xp,
        device="cpu",
        device_label="cpu",
        library="numpy",
        version=np.__version__,
        device_name="host CPU",
        hooks=BackendHooks(
            owns=_owns, to_numpy=np.asarray, synchronize=no_synchronize, float64_error=float64_works
        ),
    )


ENTRY = BackendEntry(
    name="numpy",
    create=create,
    library="numpy",
    extra=None,
    matrix_devices=lambda: ["cpu"],
    devices=lambda: ["cpu"],
    owns=_owns,
    device_of=device_label,
    device_forms=("cpu",),
)
