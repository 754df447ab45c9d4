"""JAX (CPU or GPU). Arrays are immutable; float64 needs ``jax_enable_x64``."""

from __future__ import annotations

import sys
from typing import Any

from xgrad.backends._base import Backend, BackendHooks, BackendUnavailableError
from xgrad.backends._registry import BackendEntry

X64_HINT = (
    "JAX computes in float32 unless x64 is enabled: set JAX_ENABLE_X64=1 before starting "
    "Python or call jax.config.update('jax_enable_x64', True) before creating arrays "
    "(or use float32: dtype='float32', or --dtype float32 on the command line)"
)


def _owns(x: Any) -> bool:
    if "jax" not in sys.modules:
        return False
    from array_api_compat import is_jax_array

    return bool(is_jax_array(x))


def _label(dev: Any) -> str:
    if dev.platform == "cpu":
        return "cpu" if dev.id == 0 else f"cpu:{dev.id}"
    return f"cuda:{dev.id}" if dev.platform in ("gpu", "cuda") else f"{dev.platform}:{dev.id}"


def device_label(x: Any) -> str:
    (dev,) = x.devices()
    return _label(dev)


def _find_device(device: str | None) -> Any:
    import jax

    if device is None:
        return jax.devices()[0]
    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise BackendUnavailableError(
            f"backend 'jax' cannot use device {device!r}: {exc}"
        ) from None
    i = int(index) if index else 0
    if not 0 <= i < len(devices):
        raise BackendUnavailableError(
            f"backend 'jax' cannot use device {device!r}: {len(devices)} {platform} device(s)"
        )
    return devices[i]


def _matrix_devices() -> list[str]:
    return ["cpu", "cuda:0"]


def _devices() -> list[str]:
    import jax

    return [_label(d) for d in jax.devices("cpu")] + [
        _label(d) for d in jax.devices() if d.platform != "cpu"
    ]


def create(device: str | None) -> Backend:
    import jax
    import jax.numpy as xp
    import numpy as np

    dev = _find_device(device)

    def float64_error() -> str | None:
        # Read at each use: users may enable x64 after the backend was created.
        return None if jax.config.jax_enable_x64 else X64_HINT  # type: ignore[attr-defined]

    def sync(arrays: tuple[Any, ...]) -> None:
        for x in arrays:
            if _owns(x):
                x.block_until_ready()

    def to_numpy(x: Any) -> np.ndarray:
        return np.asarray(jax.device_get(x))

    return Backend(
        name="jax",
        xp=xp,
        device=dev,
        device_label=_label(dev),
        library="jax",
        version=jax.__version__,
        device_name=getattr(dev, "device_kind", str(dev)),
        accelerator=dev.platform != "cpu",
        hooks=BackendHooks(
            owns=_owns, to_numpy=to_numpy, synchronize=sync, float64_error=float64_error
        ),
    )


def enable_float64() -> None:
    """Switch on JAX's float64 (``jax_enable_x64``): the test matrix runs in float64."""
    import jax

    config: Any = jax.config  # untyped in jax's stubs
    config.update("jax_enable_x64", True)


def vjp(f: Any, primals: tuple[Any, ...], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(f(*primals), cotangent^T J)`` by ``jax.vjp``: JAX's own gradient."""
    import jax

    value, pullback = jax.vjp(f, *primals)
    return value, tuple(pullback(cotangent))


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` at full precision unless the user chose one (``jax_default_matmul_precision``).

    On NVIDIA GPUs JAX multiplies float32 matrices in reduced precision by default
    (TF32-like): gradient checks then fail at 4.5e-4 and float32 runs drift 2.6e-2 from
    NumPy after two SGD steps. Asked per product, not process-wide, so that the user's own
    JAX code keeps JAX's default.
    """
    import jax
    import jax.numpy as jnp

    chosen = jax.config.jax_default_matmul_precision  # type: ignore[attr-defined]
    return jnp.matmul(a, b, precision="highest" if chosen is None else None)


def jit(f: Any) -> Any:
    import jax

    return jax.jit(f)


ENTRY = BackendEntry(
    name="jax",
    create=create,
    library="jax",
    extra="jax",
    matrix_devices=_matrix_devices,
    devices=_devices,
    owns=_owns,
    device_of=device_label,
    device_forms=("cpu", "cpu:N", "cuda", "cuda:N", "gpu", "gpu:N", "tpu", "tpu:N"),
    vjp=vjp,
    jit=jit,
    enable_float64=enable_float64,
    matmul=matmul,
)
