"""What a GPU table was measured on: the GPU backends found, the library versions loaded,
nvidia-smi's view of the device and the host."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np
from _common import revision

import xgrad
from xgrad.backends import Backend, registered_backends


def gpu_specs() -> tuple[list[str], dict[str, str]]:
    """``name:device`` of every available non-NumPy backend on an accelerator; and reasons."""
    specs, why = [], {}
    for name, reason in sorted(xgrad.available_backends().items()):
        if name == "numpy":
            continue
        if reason is not None:
            why[name] = reason
            continue
        try:
            devices = registered_backends()[name].devices()
        except Exception as exc:  # a broken plugin is a reason, not a crash
            why[name] = f"{type(exc).__name__}: {exc}"
            continue
        gpus = [d for d in devices if d.startswith(("cuda", "gpu", "rocm"))]
        specs += [f"{name}:{d}" for d in gpus]
        if not gpus:
            why[name] = "no GPU device (" + ", ".join(devices) + ")"
    return specs, why


def library_versions() -> dict[str, Any]:
    """Versions of the array libraries loaded in this process, by their public attributes."""
    out: dict[str, Any] = {"numpy": np.__version__}
    mods = sys.modules
    if "cupy" in mods:
        cupy = mods["cupy"]
        out["cupy"] = cupy.__version__
        with contextlib.suppress(Exception):
            rt = cupy.cuda.runtime
            out["cupy CUDA runtime"] = _cuda_version(rt.runtimeGetVersion())
            out["CUDA driver API"] = _cuda_version(rt.driverGetVersion())
    if "torch" in mods:
        torch = mods["torch"]
        out["torch"] = torch.__version__
        out["torch CUDA"] = getattr(torch.version, "cuda", None)
        with contextlib.suppress(Exception):
            out["torch cuDNN"] = torch.backends.cudnn.version()
    if "jax" in mods:
        out["jax"] = mods["jax"].__version__
        if "jaxlib" in mods:
            out["jaxlib"] = getattr(mods["jaxlib"], "__version__", None)
    if "array_api_strict" in mods:
        out["array_api_strict"] = mods["array_api_strict"].__version__
    import array_api_compat

    out["array_api_compat"] = array_api_compat.__version__
    return {k: v for k, v in out.items() if v is not None}


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_smi() -> list[str]:
    try:
        res = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def environment(backends: list[Backend], numpy_threads: int) -> dict[str, Any]:
    """The ``env`` record of gpu.json."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "revision": revision(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy_threads": numpy_threads,
        "nvidia_smi": _nvidia_smi(),
        "versions": library_versions(),
        "backends": {b.spec: b.info() for b in backends},
    }
