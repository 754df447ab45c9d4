"""PyTorch (CPU or CUDA) through array-api-compat's torch namespace."""

from __future__ import annotations

import sys
from typing import Any

from xgrad.backends._base import Backend, BackendHooks, float64_works
from xgrad.backends._registry import BackendEntry
from xgrad.errors import ArgumentError


def _owns(x: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    from array_api_compat import is_torch_array

    return bool(is_torch_array(x))


def _label(dev: Any) -> str:
    if dev.type == "cuda":
        import torch

        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return str(dev)


def device_label(x: Any) -> str:
    return _label(x.device)


def _matrix_devices() -> list[str]:
    return ["cpu", "cuda:0"]


def _devices() -> list[str]:
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def create(device: str | None) -> Backend:
    import array_api_compat.torch as xp
    import numpy as np
    import torch

    try:
        dev = torch.device(device if device is not None else "cpu")
    except RuntimeError as exc:
        raise ArgumentError(f"device: not a torch device: {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from xgrad.backends._base import BackendUnavailableError

        raise BackendUnavailableError(
            "backend 'torch' cannot use device "
            f"{device!r}: torch.cuda.is_available() is False (no CUDA GPU or a CPU-only build)"
        )
    label = _label(dev)
    dev = torch.device(label)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)

        def sync(arrays: tuple[Any, ...]) -> None:
            torch.cuda.synchronize(dev)
    else:
        name = "host CPU"

        def sync(arrays: tuple[Any, ...]) -> None:
            return None

    def to_numpy(x: Any) -> np.ndarray:
        host: np.ndarray = x.detach().to("cpu").numpy()
        return host

    return Backend(
        name="torch",
        xp=xp,
        device=dev,
        device_label=label,
        library="torch",
        version=torch.__version__,
        device_name=name,
        accelerator=dev.type != "cpu",
        hooks=BackendHooks(
            owns=_owns, to_numpy=to_numpy, synchronize=sync, float64_error=float64_works
        ),
    )


def vjp(f: Any, primals: tuple[Any, ...], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(f(*primals), cotangent^T J)`` by ``torch.autograd``: torch's own gradient."""
    import torch

    leaves = [p.detach().requires_grad_(True) for p in primals]
    with torch.enable_grad():
        value = f(*leaves)
        grads = torch.autograd.grad(value, leaves, grad_outputs=cotangent, allow_unused=True)
    return value.detach(), tuple(
        torch.zeros_like(x) if g is None else g.detach() for g, x in zip(grads, leaves, strict=True)
    )


ENTRY = BackendEntry(
    name="torch",
    create=create,
    library="torch",
    extra="torch",
    matrix_devices=_matrix_devices,
    devices=_devices,
    owns=_owns,
    device_of=device_label,
    device_forms=("cpu", "cuda", "cuda:N"),
    vjp=vjp,
)
