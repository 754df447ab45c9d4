"""Small array helpers shared by every module; one code path for all backends."""

from __future__ import annotations

from typing import Any

import numpy as np

from xgrad.backends import Backend, resolve_backend
from xgrad.backends._base import DtypeLike
from xgrad.backends._registry import is_array, to_numpy
from xgrad.errors import ArgumentError, ArgumentTypeError

# is_array and to_numpy are public in xgrad.backends; imported here for the modules that
# use them with as_float_array.
__all__ = ["as_float_array", "is_array", "to_numpy"]


def _host(x: Any, name: str) -> np.ndarray:
    """A host copy of non-backend input; ragged or non-numeric data named by ``name``."""
    if is_array(x):
        return to_numpy(x)
    try:
        return np.asarray(x)
    except ValueError as exc:
        # NumPy's "inhomogeneous shape" message: rows of different lengths.
        raise ArgumentError(
            f"{name}: expected a rectangular array (nested lists of equal lengths), found"
            f" ragged data ({exc})"
        ) from None
    except TypeError as exc:
        raise ArgumentTypeError(
            f"{name}: expected an array of numbers, found {type(x).__name__} ({exc})"
        ) from None


def as_float_array(
    x: Any, *, backend: str | Backend | None = None, dtype: DtypeLike = None, name: str = "x"
) -> tuple[Any, Backend]:
    """``x`` as a real floating array of its backend (or of ``backend``).

    Integer and boolean input is promoted to ``dtype`` (default float64): the book's code
    computes garbage gradients on integer arrays. Floating input keeps its precision unless
    ``dtype`` is given. Complex input is refused with an error naming ``name``.
    """
    b = resolve_backend(backend, x)
    if b.owns(x):
        kind = b.dtype_name(x.dtype)
    else:
        x = _host(x, name)
        kind = x.dtype.name
    if kind.startswith("complex"):
        raise ArgumentTypeError(f"{name}: expected a real array, found dtype {kind}")
    integer_like = kind.startswith(("int", "uint")) or kind == "bool"
    if kind not in ("float32", "float64") and not integer_like:
        raise ArgumentTypeError(f"{name}: expected a numeric array, found dtype {kind}")
    if dtype is None:
        target = kind if kind in ("float32", "float64") else None
        target_dtype = b.float_dtype(target)
    else:
        target_dtype = b.float_dtype(dtype)
    return b.asarray(x, dtype=target_dtype), b
