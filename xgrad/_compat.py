"""The one door to array-api-compat outside the backend definitions (`xgrad.backends`).

Every module asks here for an array's namespace, device and size, under one name each,
and the per-type answers are cached here, once: `array_namespace` costs microseconds per
call, which adds up over a training run, and depends only on the array's type.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
from array_api_compat import device, is_dask_array, size

from xgrad.errors import ArgumentTypeError

__all__ = ["array_namespace", "device", "is_dask_array", "is_real_floating", "size"]

# (what, key) -> answer, for facts that depend only on a type or a dtype object.
_CACHE: dict[tuple[Any, ...], Any] = {}


def array_namespace(x: Any, *more: Any, name: str = "x") -> Any:
    """The array API namespace of ``x`` (and of ``more``, which must share it).

    Raises `ArgumentTypeError` naming ``name`` for an object that is no array of a
    registered library.
    """
    if more:
        try:
            return array_api_compat.array_namespace(x, *more)
        except TypeError as exc:
            raise ArgumentTypeError(f"{name}: {exc}") from None
    key = ("namespace", type(x))
    xp = _CACHE.get(key)
    if xp is None:
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            raise ArgumentTypeError(
                f"{name}: expected an array of a registered backend, found {type(x).__name__}"
            ) from None
        _CACHE[key] = xp
    return xp


def is_real_floating(xp: Any, dtype: Any) -> bool:
    """``xp.isdtype(dtype, "real floating")``, cached per dtype object."""
    # The type leads the key so that dtypes of two libraries are never compared (strict
    # warns on that).
    key = ("real floating", type(dtype), dtype)
    try:
        return bool(_CACHE[key])
    except KeyError:
        ok = bool(xp.isdtype(dtype, "real floating"))
        _CACHE[key] = ok
        return ok
    except TypeError:  # an unhashable dtype object
        return bool(xp.isdtype(dtype, "real floating"))
