"""xgrad: numerical gradients, gradient descent and the book's two-layer net on any array library.

The array libraries (NumPy, CuPy, torch, JAX, array-api-strict) are chosen by name through
the backend registry and are imported only when used: ``import xgrad`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from xgrad.backends import (
    Backend,
    BackendUnavailableError,
    BackendWarning,
    available_backends,
    get_backend,
    register_backend,
    set_backend,
    use_backend,
)
from xgrad.errors import (
    AccuracyError,
    AccuracyWarning,
    ArgumentError,
    ArgumentTypeError,
    DivergenceError,
    InputIgnoredWarning,
    NonFiniteError,
    NumericalError,
    StepSizeWarning,
    XgradError,
)

__version__ = "0.1.0"

# Public names defined in submodules, imported on first use (keeps `import xgrad` fast
# and lets a broken optional part fail only when it is used).
_LAZY = {
    "HostRandom": "xgrad.random",
    "to_numpy": "xgrad._arrays",
    "numerical_diff": "xgrad.numdiff",
    "numerical_gradient": "xgrad.numdiff",
    "DiffResult": "xgrad.numdiff",
    "DiffStatus": "xgrad.numdiff",
    "HessianMemoryError": "xgrad.derivatives",
    "jacobian": "xgrad.derivatives",
    "hessian": "xgrad.derivatives",
    "gradient_descent": "xgrad.descent",
    "Variable": "xgrad.dezero",
    "Function": "xgrad.dezero",
    "Square": "xgrad.dezero",
    "Exp": "xgrad.dezero",
    "gradcheck": "xgrad.checking",
    "GradcheckResult": "xgrad.checking",
    "train": "xgrad.training",
    "load_mnist": "xgrad.datasets",
}
_SUBMODULES = (
    "errors",
    "functions",
    "layers",
    "nn",
    "optim",
    "datasets",
    "training",
    "random",
    "workers",
)

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BackendWarning",
    "available_backends",
    "get_backend",
    "register_backend",
    "set_backend",
    "use_backend",
    "AccuracyError",
    "AccuracyWarning",
    "ArgumentError",
    "ArgumentTypeError",
    "DivergenceError",
    "InputIgnoredWarning",
    "NonFiniteError",
    "NumericalError",
    "StepSizeWarning",
    "XgradError",
    *_LAZY,
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"xgrad.{name}")
    raise AttributeError(f"module 'xgrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
