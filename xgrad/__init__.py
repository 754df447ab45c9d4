"""xgrad: numerical gradients, gradient descent and the book's two-layer net on any array library.

The array libraries (NumPy, CuPy, torch, JAX, array-api-strict) are chosen by name through
the backend registry and are imported only when used: ``import xgrad`` stays light.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports below are the lazy names of __all__, for type
# checkers; ruff cannot see __all__ built from _LAZY)

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

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
    "to_numpy": "xgrad.backends",
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
    "backends",
    "checking",
    "datasets",
    "derivatives",
    "descent",
    "dezero",
    "errors",
    "functions",
    "layers",
    "nn",
    "numdiff",
    "optim",
    "plotting",
    "random",
    "testing",
    "training",
    "workers",
)

if _TYPE_CHECKING:
    # What type checkers see of the lazy names (tests/test_public_api.py keeps this block
    # and _LAZY / _SUBMODULES equal): the real signatures, not Any.
    from xgrad import (
        backends,
        checking,
        datasets,
        derivatives,
        descent,
        dezero,
        errors,
        functions,
        layers,
        nn,
        numdiff,
        optim,
        plotting,
        random,
        testing,
        training,
        workers,
    )
    from xgrad.backends import to_numpy
    from xgrad.checking import GradcheckResult, gradcheck
    from xgrad.datasets import load_mnist
    from xgrad.derivatives import HessianMemoryError, hessian, jacobian
    from xgrad.descent import gradient_descent
    from xgrad.dezero import Exp, Function, Square, Variable
    from xgrad.numdiff import DiffResult, DiffStatus, numerical_diff, numerical_gradient
    from xgrad.random import HostRandom
    from xgrad.training import train

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


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f"xgrad.{name}")
    raise AttributeError(f"module 'xgrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
