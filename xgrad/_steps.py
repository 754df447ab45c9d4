"""Step sizes and perturbed copies for finite differences, on any array API namespace.

The step rules live here so that `numerical_diff`, `numerical_gradient`, `jacobian` and
`hessian` agree on them. Steps are relative to the scale of x; the constants balance
truncation (grows with h) against roundoff in f (grows like eps/h) for each stencil.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from xgrad.errors import StepSizeWarning

__all__ = [
    "GRADIENT_STEP_FACTOR",
    "METHODS",
    "StepSizeWarning",
    "check_method",
    "check_step",
    "complex_dtype",
    "default_step",
    "finfo",
    "is_writeable",
    "eval_perturbed",
    "perturbed_stack",
    "scalar_value",
    "stack_values",
    "warn_enlarged",
]

METHODS = ("central", "forward", "backward", "complex", "richardson")

# For loss functions the third derivative along one parameter is usually far smaller than
# |f|, so the optimal central step (3 eps |f| / |f'''|)^(1/3) is a few times cbrt(eps):
# on a 30-10-5 sigmoid net 4*cbrt(eps) beat both cbrt(eps) and the book's fixed 1e-4.
GRADIENT_STEP_FACTOR = 4.0


def finfo(xp: Any, dtype: Any) -> tuple[float, float]:
    """(eps, smallest normal) of a real floating dtype, as Python floats."""
    info = xp.finfo(dtype)
    return float(info.eps), float(info.smallest_normal)


def check_method(method: str, allowed: tuple[str, ...] = METHODS) -> str:
    if method not in allowed:
        raise ValueError(
            f"method: expected one of {', '.join(map(repr, allowed))}, found {method!r}"
        )
    return method


def check_step(h: Any) -> float | None:
    """Validate an explicit step: None or a positive finite real number."""
    if h is None:
        return None
    if isinstance(h, bool) or not hasattr(h, "__float__"):
        raise TypeError(f"h: expected a positive float or None, found {h!r}")
    try:
        value = float(h)
    except (TypeError, ValueError):
        raise TypeError(f"h: expected a positive float or None, found {h!r}") from None
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"h: expected a positive finite step, found {h!r}")
    return value


def default_step(method: str, eps: float) -> float:
    """Step relative to the scale of x for each stencil (eps: the dtype's machine epsilon)."""
    if method in ("forward", "backward"):
        return eps**0.5
    if method == "complex":
        # No cancellation: any tiny step works; eps^2 keeps the O(h^2) term below eps.
        return eps**2
    return eps ** (1.0 / 3.0)


def complex_dtype(xp: Any, dtype: Any, what: str = "method='complex'") -> Any:
    """The complex dtype matching a real one, or a clear error if the namespace has none."""
    eps, _ = finfo(xp, dtype)
    name = "complex128" if eps < 1e-10 else "complex64"
    cdtype = getattr(xp, name, None)
    if cdtype is None:
        raise TypeError(f"{what}: the array namespace {xp.__name__} has no {name} dtype")
    return cdtype


def is_writeable(x: Any) -> bool:
    """Whether ``x[i, ...] = value`` works on x, found by writing an element onto itself.

    Read-only NumPy arrays, JAX arrays and torch leaves that require grad all refuse;
    the element is written back unchanged (bit for bit) where they accept.
    """
    if x.ndim == 0:
        index: tuple[int, ...] = ()
    elif any(d == 0 for d in x.shape):
        return False
    else:
        index = (0,) * x.ndim
    try:
        x[index] = x[index]
    except Exception:
        return False
    return True


def perturbed_stack(
    xp: Any, flat: Any, first: tuple[Any, Any], second: tuple[Any, Any] | None = None
) -> Any:
    """Copies of ``flat``: row r has ``u[r]`` at ``i[r]`` (and ``v[r]`` at ``j[r]``).

    ``first = (i, u)`` and ``second = (j, v)`` are an integer index array and a value
    array of one length m (with ``i != j`` rowwise); the result has shape (m, n). Built
    with ``where`` on one-hot masks, so it works on immutable arrays, never indexes with
    integer arrays, and leaves every other element bit for bit as it was.
    """
    n = flat.shape[0]
    cols = xp.arange(n, device=flat.device)
    i, u = first
    out = xp.where(cols[None, :] == i[:, None], u[:, None], flat[None, :])
    if second is not None:
        j, v = second
        out = xp.where(cols[None, :] == j[:, None], v[:, None], out)
    return out


def scalar_value(value: Any, backend: Any) -> Any:
    """f's value as a 0-d array of the backend or a Python number; errors if not a scalar."""
    if backend.owns(value):
        if value.ndim != 0:
            raise ValueError(
                "f: expected a scalar (0-d) value, found an array of shape "
                f"{tuple(value.shape)}; numerical_gradient and hessian need a scalar-valued "
                "f (use jacobian for vector-valued f)"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | complex):
        shape = getattr(value, "shape", None)
        if shape is not None and tuple(shape) != ():
            raise ValueError(
                f"f: expected a scalar value, found {type(value).__name__} of shape "
                f"{tuple(shape)}; numerical_gradient and hessian need a scalar-valued f"
            )
        try:
            return complex(value) if np.iscomplexobj(value) else float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"f: expected a real scalar value, found {type(value).__name__}"
            ) from None
    return value


def stack_values(values: list[Any], backend: Any) -> Any:
    """Stack per-call values (0-d arrays of the backend or Python numbers) into one array."""
    xp = backend.xp
    if all(backend.owns(v) for v in values):
        return xp.stack(values)
    if not any(backend.owns(v) for v in values):
        return backend.asarray(np.asarray(values))
    return xp.stack([v if backend.owns(v) else backend.asarray(v) for v in values])


def eval_perturbed(
    call: Any,
    backend: Any,
    flat: Any,
    shape: tuple[int, ...],
    first: tuple[Any, Any],
    second: tuple[Any, Any] | None = None,
    *,
    batch_size: int | None = None,
    out_shape: tuple[int, ...] | None = (),
) -> Any:
    """f at every perturbed copy of x, in bounded memory: an array of shape (m, *out_shape).

    With ``batch_size`` f receives stacks of shape ``(k, *shape)`` and must return k
    values; otherwise it receives one copy (of shape ``shape``) per call. Copies are built
    ``chunk`` rows at a time, so memory stays O(chunk * n). ``out_shape`` None: any shape,
    taken from the first call (jacobian); ``()``: scalar values only.
    """
    xp = backend.xp
    n = flat.shape[0]
    i, u = first
    m = i.shape[0]
    chunk = batch_size if batch_size is not None else max(1, min(m, 2**20 // max(n, 1)))
    pieces: list[Any] = []
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        sel = (slice(start, stop),)
        sec = None if second is None else (second[0][sel], second[1][sel])
        rows = perturbed_stack(xp, flat, (i[sel], u[sel]), sec)
        if batch_size is not None:
            out = call(xp.reshape(rows, (stop - start, *shape)))
            if not backend.owns(out):
                out = backend.asarray(out)
            expected = (stop - start,) if out_shape == () else None
            if expected is not None and tuple(out.shape) != expected:
                raise ValueError(
                    f"f: with batch_size, f receives a stack of shape {(stop - start, *shape)} "
                    f"and must return {stop - start} values (shape {expected}), found shape "
                    f"{tuple(out.shape)}"
                )
            if out_shape is None and out.shape[0] != stop - start:
                raise ValueError(
                    f"f: with batch_size, f(stack of {stop - start}) must return an array "
                    f"whose first axis has length {stop - start}, found shape {tuple(out.shape)}"
                )
            pieces.append(out)
            continue
        values = []
        for r in range(stop - start):
            value = call(xp.reshape(rows[r, ...], shape))
            if out_shape == ():
                values.append(scalar_value(value, backend))
            else:
                values.append(value if backend.owns(value) else backend.asarray(value))
        pieces.append(stack_values(values, backend))
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)


def warn_enlarged(count: int, h: float, dtype_name: str) -> None:
    warnings.warn(
        f"h={h!r} does not change x at {count} element(s) in {dtype_name} (x + h == x); "
        "used the automatic step there",
        StepSizeWarning,
        stacklevel=3,
    )
