"""Backend registry: array libraries and devices, chosen by name.

>>> import xgrad
>>> b = xgrad.get_backend("numpy")
>>> b.name, b.device_label
('numpy', 'cpu')
"""

from xgrad.backends._base import (
    Backend,
    BackendHooks,
    BackendUnavailableError,
    BackendWarning,
    DtypeLike,
)
from xgrad.backends._registry import (
    BackendEntry,
    available_backends,
    backend_of,
    get_backend,
    is_array,
    register_backend,
    registered_backends,
    resolve_backend,
    set_backend,
    to_numpy,
    use_backend,
)

__all__ = [
    "Backend",
    "BackendEntry",
    "BackendHooks",
    "BackendUnavailableError",
    "BackendWarning",
    "DtypeLike",
    "available_backends",
    "backend_of",
    "get_backend",
    "is_array",
    "register_backend",
    "registered_backends",
    "resolve_backend",
    "set_backend",
    "to_numpy",
    "use_backend",
]
