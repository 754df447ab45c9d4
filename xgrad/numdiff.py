"""Numerical derivatives: the book's ``numerical_diff`` and ``numerical_gradient``, made accurate.

Both run on every backend through the array API. An explicit step ``h`` is used as given
(so the book's and DeZero's numbers come out bit for bit); ``h=None`` chooses steps from the
dtype's machine epsilon and the scale of x, keeps the stencil inside f's domain and
detects steps too small to change x.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xgrad import _steps
from xgrad._arrays import as_float_array
from xgrad._richardson import ArrayOps, ScalarOps, central_tableau, one_sided, quiet
from xgrad.backends import Backend, resolve_backend
from xgrad.backends._base import DtypeLike
from xgrad.backends._registry import backend_of
from xgrad.errors import InputIgnoredWarning, StepSizeWarning

__all__ = [
    "DiffResult",
    "InputIgnoredWarning",
    "StepSizeWarning",
    "numerical_diff",
    "numerical_gradient",
]

_EPS64 = float(np.finfo(np.float64).eps)
_TINY64 = float(np.finfo(np.float64).smallest_normal)
# method="richardson": central differences at 6 steps halving from eps^(1/7)*scale,
# extrapolated by Neville's tableau up to order 12.
_RICHARDSON_LEVELS = 6


@dataclass(frozen=True)
class DiffResult:
    """What ``full_output=True`` returns.

    Attributes
    ----------
    df : float or array
        The derivative (same type and shape as ``numerical_diff`` returns).
    error : float or array
        Estimated absolute error of ``df`` (truncation from comparing steps, plus roundoff).
    nfev : int
        Evaluations of f per element of x.
    method : str
        The method used.
    step : float or array
        The step used (per element), after making it representable.
    """

    df: Any
    error: Any
    nfev: int
    method: str
    step: Any


# -- numerical_diff ----------------------------------------------------------------------


def numerical_diff(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    method: str = "central",
    full_output: bool = False,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Derivative of an elementwise function f at x (a scalar, or each element of an array).

    Parameters
    ----------
    f : callable
        Elementwise: ``f(X)`` has the shape of ``X``. For an array x, f is called on one
        stack of all stencil points (shape ``(k, *x.shape)``); for a Python scalar x it is
        called with Python floats. A DeZero ``Function`` works with a ``Variable`` x.
    x : float, array or xgrad.dezero.Variable
        Where to differentiate. Integer input is promoted to float64.
    h : float, optional
        Step. Given: used as given, ``(f(x+h) - f(x-h)) / (2*h)`` for ``"central"``
        (where ``x + h == x`` the step is enlarged, with a `StepSizeWarning`). None: chosen
        from the dtype's eps and the scale of x (see Notes).
    method : {"central", "forward", "backward", "complex", "richardson"}
        ``"complex"``: ``Im f(x + ih) / h``, one evaluation and no cancellation, for f
        real-analytic and computing in complex (needs complex dtypes in the backend).
        ``"richardson"``: central differences at 6 steps extrapolated to high order, the
        most accurate result by error estimate (24 evaluations for ``|x| < 1``, else 12).
    full_output : bool
        Return a `DiffResult` (derivative, error estimate, evaluations, method, step).
    backend : str or Backend, optional
        Backend for x given as Python numbers; arrays otherwise decide.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype (default: x's floating dtype, else float64).

    Returns
    -------
    float, array or DiffResult
        A Python float for a Python scalar x, else an array shaped like x.

    Raises
    ------
    ValueError
        If f is not finite around x even with smaller and one-sided steps (the message
        names the element), or f is not elementwise.
    TypeError
        For ``method="complex"`` when f does not compute in complex or the backend has no
        complex dtype.

    Notes
    -----
    ``h=None`` with ``"central"`` evaluates central differences at two steps, ``2h`` and
    ``h`` with ``2h = eps^(1/5) * max(|x|, 1)``, and combines them by one Richardson step
    (4th order, 4 evaluations). Where ``|x| < 1`` and the error estimate shows f varying
    faster than that scale (``log`` or ``sqrt`` at 1e-3) or the stencil leaves f's domain,
    the steps are redone relative to ``|x|`` and the better estimate wins; points where f
    is still not finite fall back to one-sided differences. ``"forward"``/``"backward"``
    use ``sqrt(eps) * max(|x|, 1)``; every step is made representable (``(x + h) - x``).

    Examples
    --------
    >>> numerical_diff(lambda x: 0.01 * x**2 + 0.1 * x, 5.0, h=1e-4)  # the book
    0.1999999999990898
    >>> import math
    >>> round(numerical_diff(math.log, 1e-3), 3)
    1000.0
    >>> r = numerical_diff(lambda x: x**3, 2.0, full_output=True)
    >>> round(r.df, 9), r.nfev, abs(r.df - 12.0) <= r.error
    (12.0, 4, True)
    """
    if not callable(f):
        raise TypeError(f"f: expected a callable, found {type(f).__name__}")
    _steps.check_method(method)
    h = _steps.check_step(h)
    variable = _variable_type()
    if variable is not None and isinstance(x, variable):

        def through_variable(a: Any) -> Any:
            out = f(variable(a))
            return out.data if isinstance(out, variable) else out

        return _diff_array(through_variable, x.data, h, method, full_output, backend, dtype)
    if backend is None and dtype is None and isinstance(x, int | float) and not isinstance(x, bool):
        return _diff_scalar(f, float(x), h, method, full_output)
    return _diff_array(f, x, h, method, full_output, backend, dtype)


def _variable_type() -> type | None:
    # A Variable can only exist if xgrad.dezero was imported: don't import it here.
    module = sys.modules.get("xgrad.dezero")
    return getattr(module, "Variable", None) if module is not None else None


def _diff_scalar(
    f: Callable[[Any], Any], x: float, h: float | None, method: str, full_output: bool
) -> Any:
    if not math.isfinite(x):
        raise ValueError(f"x: expected a finite number, found {x!r}")
    if method == "complex":
        step = h if h is not None else _EPS64**2 * max(abs(x), 1.0)
        value = _call_complex(f, complex(x, step))
        imag = getattr(value, "imag", None)
        if not isinstance(value, complex | np.complexfloating):
            raise TypeError(_real_for_complex(type(value).__name__))
        df = float(imag) / step
        err, nfev = _EPS64 * abs(df), 1
    else:
        fast = _fast_central(f, x) if h is None and method == "central" else None
        if fast is not None:
            df, err, step, nfev = fast
        else:
            df, err, step, nfev = _diff_core(
                ScalarOps(f), x, h, method, _EPS64, _TINY64, full_output
            )
        df = float(df)
    if not math.isfinite(df):
        raise ValueError(_not_finite_message("x", x))
    if full_output:
        return DiffResult(df=df, error=err, nfev=nfev, method=method, step=step)
    return df


_TOP64 = _EPS64**0.2
_LIMIT64 = 10.0 * _TOP64 * _TOP64


def _fast_central(f: Callable[[Any], Any], x: float) -> tuple[float, float, float, int] | None:
    """`_diff_auto` for a Python float where its first try succeeds, in ~1 us of overhead.

    None where the general path is needed: the stencil could cross 0 (and leave f's
    domain, which NumPy would warn about), f failed, or the error estimate calls for a
    smaller step. Mirrors `central_tableau` with two levels operation by operation.
    """
    ax = abs(x)
    h0 = (ax if ax > 1.0 else 1.0) * _TOP64
    if ax <= h0:
        return None
    h1 = h0 * 0.5
    a, b, c, d = x + h0, x + h1, x - h1, x - h0
    try:
        fa, fb, fc, fd = float(f(a)), float(f(b)), float(f(c)), float(f(d))
    except (ArithmeticError, ValueError, TypeError, RuntimeWarning):
        return None
    d0 = (fa - fd) / (a - d)
    width = b - c
    d1 = (fb - fc) / width
    t = d1 + (d1 - d0) / 3.0
    rnd = 2.0 * _EPS64 * max(abs(fb), abs(fc)) / width
    err = max(abs(t - d1), abs(t - d0)) + 2.0 * rnd + _EPS64 * abs(t)
    if not (math.isfinite(t) and math.isfinite(err)) or (ax < 1.0 and not err <= _LIMIT64 * abs(t)):
        return None
    return t, err, h1, 4


def _fast_central_array(
    ops: ArrayOps, x: Any, eps: float, full_output: bool
) -> tuple[Any, Any, Any, int] | None:
    """`_diff_auto` for arrays where its first try succeeds everywhere, in few array passes.

    Same numbers as `central_tableau` with two levels; the roundoff part of the error
    estimate is only computed for ``full_output``. None where the general path is needed
    (non-finite values, or the error estimate calls for steps relative to |x|).
    """
    xp = ops.xp
    top = eps**0.2
    ax = xp.abs(x)
    h0 = xp.maximum(ax, 1.0)
    h0 *= top
    h1 = h0 * 0.5
    a, b = x + h0, x + h1
    c, d = x - h1, x - h0
    with quiet():
        fa, fb, fc, fd = ops.evaluate([a, b, c, d])
        width = b - c
        a -= d  # a is now the outer width
        d0 = fa - fd
        d0 /= a
        d1 = fb - fc
        d1 /= width
        corr = d1 - d0  # T11 - T10 = corr/3, T11 - T00 = 4 corr/3
        corr /= 3.0
        t = d1 + corr
        trunc = xp.abs(corr)
        trunc *= 4.0
        ok = trunc <= (10.0 * top * top) * xp.abs(t)
        if not bool(xp.all(ok | (ax >= 1.0))) or not bool(xp.all(xp.isfinite(trunc))):
            return None
        err: Any = math.nan
        if full_output:
            rnd = xp.maximum(xp.abs(fb), xp.abs(fc))
            rnd *= 4.0 * eps
            rnd /= width
            err = trunc + rnd + eps * xp.abs(t)
    return t, err, h1, 4


# Large arrays are differentiated in blocks: a handful of block-sized temporaries stay in
# the allocator's reused memory, where full-size ones cost fresh pages on every call
# (3-5x slower on 1e5 points with glibc's default thresholds).
_BLOCK = 2**14


def _diff_array(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None,
    method: str,
    full_output: bool,
    backend: Any,
    dtype: Any,
) -> Any:
    xa, b = as_float_array(x, backend=backend, dtype=dtype, name="x")
    xp = b.xp
    if not bool(xp.all(xp.isfinite(xa))):
        raise ValueError("x: expected finite values, found inf or nan")
    eps, tiny = _steps.finfo(xp, xa.dtype)
    ops = ArrayOps(f, xp, b)
    shape = tuple(xa.shape)
    size = math.prod(shape)
    if size <= _BLOCK:
        df, err, step, nfev = _diff_block(ops, xa, h, method, eps, tiny, full_output)
    else:
        flat = xp.reshape(xa, (-1,))
        parts: list[tuple[Any, Any, Any]] = []
        nfev = 0
        for start in range(0, size, _BLOCK):
            block = flat[start : min(size, start + _BLOCK)]
            d, e, st, n = _diff_block(ops, block, h, method, eps, tiny, full_output)
            nfev = max(nfev, n)
            if full_output:
                e, st = _like(xp, e, block), _like(xp, st, block)
            parts.append((d, e, st))
        df = xp.reshape(xp.concat([p[0] for p in parts]), shape)
        err = xp.reshape(xp.concat([p[1] for p in parts]), shape) if full_output else None
        step = xp.reshape(xp.concat([p[2] for p in parts]), shape) if full_output else None
    bad = xp.logical_not(xp.isfinite(df))
    if bool(xp.any(bad)):
        index = tuple(int(i) for i in np.argwhere(b.to_numpy(bad))[0])
        value = float(b.to_numpy(xa)[index])
        raise ValueError(_not_finite_message(f"x[{', '.join(map(str, index))}]", value))
    if full_output:
        return DiffResult(df=df, error=err, nfev=nfev, method=method, step=step)
    return df


def _like(xp: Any, value: Any, block: Any) -> Any:
    """``value`` (a number or an array) as an array shaped like ``block``."""
    if getattr(value, "shape", None) is not None and tuple(value.shape) == tuple(block.shape):
        return value
    return xp.zeros_like(block) + value


def _diff_block(
    ops: ArrayOps, xa: Any, h: float | None, method: str, eps: float, tiny: float, full_output: bool
) -> tuple[Any, Any, Any, int]:
    xp = ops.xp
    if method == "complex":
        b = ops.backend
        cdtype = _steps.complex_dtype(xp, xa.dtype)
        step = h if h is not None else (eps**2) * xp.maximum(xp.abs(xa), 1.0)
        istep = xp.astype(xp.asarray(step, dtype=xa.dtype, device=xa.device), cdtype) * 1j
        z = xp.astype(xa, cdtype) + istep
        out = _call_complex(ops.f, z)
        if not b.owns(out):
            out = b.asarray(out)
        if not xp.isdtype(out.dtype, "complex floating"):
            raise TypeError(_real_for_complex(f"an array of dtype {out.dtype}"))
        if tuple(out.shape) != tuple(xa.shape):
            raise ValueError(
                f"f: numerical_diff needs an elementwise f; f on shape {tuple(xa.shape)} "
                f"returned shape {tuple(out.shape)}"
            )
        df = xp.imag(out) / step
        return df, eps * xp.abs(df), step, 1
    fast = (
        _fast_central_array(ops, xa, eps, full_output)
        if h is None and method == "central"
        else None
    )
    if fast is not None:
        return fast
    return _diff_core(ops, xa, h, method, eps, tiny, full_output)


def _call_complex(f: Callable[[Any], Any], z: Any) -> Any:
    try:
        return f(z)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"method='complex': f failed on complex input ({type(exc).__name__}: {exc}); "
            "complex step needs an f that computes in complex (no math.*, abs, maximum)"
        ) from exc


def _real_for_complex(found: str) -> str:
    return (
        f"method='complex': f returned {found} for complex input; complex step needs f "
        "to compute with its complex argument and to be real-analytic (no abs, "
        "comparisons or real-only functions)"
    )


def _not_finite_message(where: str, value: float) -> str:
    return (
        f"f: not finite around {where} = {value!r}, even with smaller and one-sided steps; "
        "the derivative does not exist there or f fails near it"
    )


def _diff_core(
    ops: Any, x: Any, h: float | None, method: str, eps: float, tiny: float, full_output: bool
) -> tuple[Any, Any, Any, int]:
    """(derivative, error estimate, step, evaluations per element) for the real methods."""
    if h is None:
        return _diff_auto(ops, x, method, eps, tiny)
    if method == "richardson":
        return (
            *central_tableau(ops, x, 1.0 + 0.0 * x, h, _RICHARDSON_LEVELS, eps),
            2 * _RICHARDSON_LEVELS,
        )
    with quiet():
        if method == "central":
            fp, fm = ops.evaluate([x + h, x - h])
            df = (fp - fm) / (2 * h)
            stuck = (x + h == x) | (x - h == x)
        elif method == "forward":
            fp, f0 = ops.evaluate([x + h, x])
            df = (fp - f0) / h
            stuck = x + h == x
        else:
            f0, fm = ops.evaluate([x, x - h])
            df = (f0 - fm) / h
            stuck = x - h == x
        nfev = 2
        err: Any = math.nan
        if full_output:
            # Same stencil at 2h: the difference estimates the truncation error.
            order = 2.0 if method == "central" else 1.0
            if method == "central":
                g1, g2 = ops.evaluate([x + 2 * h, x - 2 * h])
                df2 = (g1 - g2) / (4 * h)
                fmax = ops.maximum(ops.abs(fp), ops.abs(fm))
            else:
                sign = 1.0 if method == "forward" else -1.0
                (g1,) = ops.evaluate([x + sign * 2 * h])
                df2 = sign * (g1 - f0) / (2 * h)
                fmax = ops.abs(f0)
            nfev = 4 if method == "central" else 3
            err = ops.abs(df - df2) / (2.0**order - 1.0) + 2.0 * eps * fmax / h
    step: Any = h
    if ops.any(stuck):
        count = (
            int(ops.xp.sum(ops.xp.astype(stuck, ops.xp.int64))) if isinstance(ops, ArrayOps) else 1
        )
        _steps.warn_enlarged(count, h, "float32" if eps > 1e-10 else "float64")
        auto, auto_err, auto_step, auto_nfev = _diff_auto(ops, x, method, eps, tiny)
        df = ops.where(stuck, auto, df)
        err = ops.where(stuck, auto_err, err)
        step = ops.where(stuck, auto_step, step)
        nfev += auto_nfev
    return df, err, step, nfev


def _diff_auto(ops: Any, x: Any, method: str, eps: float, tiny: float) -> tuple[Any, Any, Any, int]:
    ax = ops.abs(x)
    wide = ops.maximum(ax, 1.0)
    narrow_: list[Any] = []

    def narrow() -> Any:
        # Relative to |x|, bounded away from 0 so that h stays a normal number.
        if not narrow_:
            narrow_.append(ops.where(ax > 0.0, ops.maximum(ax, math.sqrt(tiny)), 1.0))
        return narrow_[0]

    if method in ("forward", "backward"):
        sign = 1.0 if method == "forward" else -1.0
        return _one_step(ops, x, wide, narrow, ops.any(ax < 1.0), sign, eps)
    if method == "richardson":
        levels = _RICHARDSON_LEVELS
        top = eps ** (1.0 / 7.0)
    else:
        levels, top = 2, eps**0.2
    df, err, step = central_tableau(ops, x, wide, top, levels, eps)
    nfev = 2 * levels
    # Error estimate of the 4th-order result ~ (relative correction)^2: a correction above
    # 10*top^2 means f varies on a scale shorter than the step: redo relative to |x|.
    limit = 10.0 * top * top if method == "central" else 0.0
    retry = (ax < 1.0) & ops.logical_not(err <= limit * ops.abs(df))
    if ops.any(retry):
        df2, err2, step2 = central_tableau(ops, x, narrow(), top, levels, eps)
        nfev += 2 * levels
        better = err2 < err
        df = ops.where(better, df2, df)
        err = ops.where(better, err2, err)
        step = ops.where(better, step2, step)
    for sign in (1.0, -1.0):
        bad = ops.logical_not(ops.isfinite(err))
        if not ops.any(bad):
            break
        df3, err3, step3 = one_sided(ops, x, narrow(), sign, eps)
        nfev += 3
        better = err3 < err
        df = ops.where(better, df3, df)
        err = ops.where(better, err3, err)
        step = ops.where(better, step3, step)
    return df, err, step, nfev


def _one_step(
    ops: Any, x: Any, wide: Any, narrow: Callable[[], Any], small: bool, sign: float, eps: float
) -> tuple[Any, Any, Any, int]:
    """Forward (sign=1) or backward difference with a sqrt(eps) step and an error estimate.

    Steps relative to max(|x|, 1) first; where some |x| < 1 (``small``) or f is not finite,
    also relative to |x|, keeping the smaller error estimate per element.
    """
    nfev = 0
    df: Any = math.nan
    err: Any = math.inf
    step: Any = math.nan
    for scale in (wide, None):
        scale = narrow() if scale is None else scale
        h = scale * math.sqrt(eps) * sign
        x1 = x + h
        h = x1 - x
        with quiet():
            f0, f1, f2 = ops.evaluate([x, x1, x + 2.0 * h])
            d1 = ops.div(f1 - f0, h)
            d2 = ops.div(f2 - f0, 2.0 * h)
            rnd = ops.div(4.0 * eps * ops.maximum(ops.abs(f0), ops.abs(f1)), ops.abs(h))
            e = ops.abs(d1 - d2) + rnd
            e = ops.where(ops.isfinite(d1) & ops.isfinite(e), e, math.inf)
        nfev += 3
        better = e < err
        df = ops.where(better, d1, df)
        err = ops.where(better, e, err)
        step = ops.where(better, h, step)
        if not small and not ops.any(ops.logical_not(ops.isfinite(err))):
            break
    return df, err, step, nfev


# -- numerical_gradient ------------------------------------------------------------------


def numerical_gradient(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    method: str = "central",
    batch_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Gradient of a scalar-valued f with respect to an array x (or a dict of arrays).

    Book semantics: where x is a writeable floating array, each element is perturbed in
    place, ``f(x)`` is called, and the exact original value is written back (bit for bit,
    also when f raises), so ``numerical_gradient(lambda W: net.loss(x, t), net.W)`` works.
    Immutable arrays (JAX, read-only NumPy, torch leaves requiring grad) are perturbed
    functionally: f receives the perturbed copy and must use its argument.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar (Python number or 0-d array). For a dict x, f receives
        the dict (with the perturbed array in place of the original).
    x : array or dict of arrays
        Integer (and bool) arrays are promoted to float64: the gradient is computed on a
        float copy, which f receives (a closure over the integer array would not see the
        perturbations; an `InputIgnoredWarning` says so when no perturbation changed f).
    h : float, optional
        Step, used as given (``(f(x+h) - f(x-h)) / (2*h)``, as in the book). None:
        ``4 * eps^(1/3) * max(|x_i|, 1)`` per element for ``"central"`` (``eps^(1/2)``
        for one-sided, ``eps^(1/5)`` for ``"richardson"``); the factor 4 favours the
        roundoff in f, which dominates for gradient entries much smaller than the loss.
    method : {"central", "forward", "backward", "complex", "richardson"}
        Evaluations per element: 2, 1 (+1 in all), 1 (+1), 1, 4. ``"complex"`` is always
        functional (f receives a complex copy). ``"richardson"`` combines central
        differences at h and 2h (4th order).
    batch_size : int, optional
        Fast path: f receives stacks of shape ``(k, *x.shape)`` of up to ``k`` perturbed
        copies and returns ``k`` values. Not for dict input.
    backend : str or Backend, optional
        Backend for x given as lists or NumPy arrays (moving an array means a copy).
    dtype : {"float32", "float64"}, optional
        Compute in this dtype (a copy when it differs from x's).

    Returns
    -------
    array or dict of arrays
        Shaped like x, in x's floating dtype.

    Raises
    ------
    ValueError
        f returns a non-scalar; f is not finite at some perturbation even with smaller
        and one-sided steps (the message names the element).

    Examples
    --------
    >>> import numpy as np
    >>> numerical_gradient(lambda x: x[0]**2 + x[1]**2, np.array([3.0, 4.0]), h=1e-4)
    array([6., 8.])
    >>> numerical_gradient(lambda x: x[0]**2 + x[1]**2, np.array([3, 4]))  # int input
    array([6., 8.])
    """
    if not callable(f):
        raise TypeError(f"f: expected a callable, found {type(f).__name__}")
    _steps.check_method(method)
    h = _steps.check_step(h)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected a positive int or None, found {batch_size!r}")
    if isinstance(x, Mapping):
        if batch_size is not None:
            raise ValueError("batch_size: not supported for a dict x; pass one array at a time")
        params = x
        grads = {}
        for key, value in params.items():
            arr, b, same = _prepare(value, backend, dtype, f"x[{key!r}]")

            def call(a: Any, key: Any = key, same: bool = same) -> Any:
                return f(params) if same and a is params[key] else f({**params, key: a})

            grads[key] = _gradient(call, arr, b, not same, h, method, None, f"x[{key!r}]")
        return grads
    arr, b, same = _prepare(x, backend, dtype, "x")
    return _gradient(f, arr, b, not same, h, method, batch_size, "x")


def _prepare(value: Any, backend: Any, dtype: Any, name: str) -> tuple[Any, Backend, bool]:
    """(array to perturb, its backend, whether it is the caller's own array)."""
    owner = backend_of(value, strict=False)
    if owner is not None and (backend is None or resolve_backend(backend) == owner):
        xp = owner.xp
        same_dtype = dtype is None or owner.dtype_name(dtype) == owner.dtype_name(value.dtype)
        if xp.isdtype(value.dtype, "real floating") and same_dtype:
            return value, owner, True
    arr, b = as_float_array(value, backend=backend, dtype=dtype, name=name)
    return arr, b, False


def _gradient(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    copied: bool,
    h: float | None,
    method: str,
    batch_size: int | None,
    name: str,
) -> Any:
    xp = b.xp
    shape = tuple(arr.shape)
    n = math.prod(shape)
    if n == 0:
        return xp.zeros_like(arr)
    if not bool(xp.all(xp.isfinite(arr))):
        raise ValueError(f"{name}: expected finite values, found inf or nan")
    eps, _ = _steps.finfo(xp, arr.dtype)
    if method == "complex":
        return _gradient_complex(call, arr, b, h, eps, batch_size)
    offsets = {
        "central": (1.0, -1.0),
        "forward": (1.0,),
        "backward": (-1.0,),
        "richardson": (1.0, -1.0, 2.0, -2.0),
    }[method]
    exponent = {"central": 1 / 3, "forward": 1 / 2, "backward": 1 / 2, "richardson": 1 / 5}
    auto = _steps.GRADIENT_STEP_FACTOR * eps ** exponent[method] * xp.maximum(xp.abs(arr), 1.0)
    if h is None:
        step = auto
    else:
        stuck = xp.zeros(shape, dtype=xp.bool, device=arr.device)
        for o in offsets:
            stuck = stuck | (arr + o * h == arr)
        count = int(xp.sum(xp.astype(stuck, xp.int64)))
        step = xp.where(stuck, auto, h) if count else h
        if count:
            _steps.warn_enlarged(count, h, b.dtype_name(arr.dtype))
    points = [arr + o * step for o in offsets]
    inplace = batch_size is None and _steps.is_writeable(arr)
    # Overflow or domain warnings from f are NumPy's way of saying "not finite", which is
    # handled below (retried, or an error naming the element).
    with quiet():
        values, f0 = _evaluate(call, arr, b, points, inplace, batch_size, method)
        grad = _combine(method, values, points, arr, f0, h, step)
    grad = _repair(call, arr, b, grad, inplace, batch_size, eps, auto, name)

    grad = xp.astype(grad, arr.dtype)
    if (copied or not inplace) and not bool(xp.any(grad != 0.0)):
        warnings.warn(
            "every perturbation of x left f unchanged, and f received a copy of x (x is "
            "integer, immutable, on another backend or dtype, or batch_size was given): if f "
            "reads the array through a closure (lambda W: net.loss(x, t)), pass a writeable "
            "floating array or use the argument f receives",
            InputIgnoredWarning,
            stacklevel=3,
        )
    return grad


def _evaluate(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    points: list[Any],
    inplace: bool,
    batch_size: int | None,
    method: str,
) -> tuple[list[Any], Any]:
    """f at each perturbation of each element (one array per offset), and f(x) if needed."""
    xp = b.xp
    shape = tuple(arr.shape)
    if inplace:
        values = _values_inplace(call, arr, b, points)
    else:
        flat = xp.reshape(arr, (-1,))
        index = xp.arange(flat.shape[0], device=arr.device)
        values = [
            xp.reshape(
                _steps.eval_perturbed(
                    call, b, flat, shape, (index, xp.reshape(p, (-1,))), batch_size=batch_size
                ),
                shape,
            )
            for p in points
        ]
    f0 = _f_at(call, arr, b, batch_size) if method in ("forward", "backward") else None
    return values, f0


def _f_at(call: Callable[[Any], Any], arr: Any, b: Backend, batch_size: int | None) -> Any:
    """f at the unperturbed x, as an array of the backend."""
    if batch_size is not None:
        out = call(arr[None, ...])
        out = out if b.owns(out) else b.asarray(out)
        return out[0]
    value = _steps.scalar_value(call(arr), b)
    return value if b.owns(value) else b.asarray(value)


def _values_inplace(
    call: Callable[[Any], Any], arr: Any, b: Backend, points: list[Any]
) -> list[Any]:
    xp = b.xp
    shape = tuple(arr.shape)
    values: list[list[Any]] = [[] for _ in points]
    for idx in np.ndindex(*shape):
        old = xp.asarray(arr[idx], copy=True)
        try:
            for k, p in enumerate(points):
                arr[idx] = p[idx]
                values[k].append(_steps.scalar_value(call(arr), b))
        finally:
            arr[idx] = old
    return [xp.reshape(_steps.stack_values(v, b), shape) for v in values]


def _combine(
    method: str, values: list[Any], points: list[Any], arr: Any, f0: Any, h: float | None, step: Any
) -> Any:
    with quiet():
        if method == "central":
            width = (
                (2 * h) if h is not None and not hasattr(step, "shape") else (points[0] - points[1])
            )
            return (values[0] - values[1]) / width
        if method == "forward":
            width = h if h is not None and not hasattr(step, "shape") else points[0] - arr
            return (values[0] - f0) / width
        if method == "backward":
            width = h if h is not None and not hasattr(step, "shape") else arr - points[0]
            return (f0 - values[0]) / width
        d1 = (values[0] - values[1]) / (points[0] - points[1])
        d2 = (values[2] - values[3]) / (points[2] - points[3])
        return d1 + (d1 - d2) / 3.0


def _repair(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    grad: Any,
    inplace: bool,
    batch_size: int | None,
    eps: float,
    auto: Any,
    name: str,
) -> Any:
    """Redo elements whose result is not finite: smaller central step, then one-sided."""
    xp = b.xp
    bad = xp.logical_not(xp.isfinite(grad))
    if not bool(xp.any(bad)):
        return grad
    shape = tuple(arr.shape)
    flat = xp.reshape(arr, (-1,))
    cols = xp.arange(flat.shape[0], device=arr.device)

    def probe(i: int, value: Any) -> Any:
        if inplace:
            idx = tuple(int(k) for k in np.unravel_index(i, shape))
            old = xp.asarray(arr[idx], copy=True)
            try:
                arr[idx] = value
                out = _steps.scalar_value(call(arr), b)
            finally:
                arr[idx] = old
        else:
            row = xp.where(cols == i, value, flat)
            if batch_size is not None:
                out = call(xp.reshape(row, (1, *shape)))
                out = (out if b.owns(out) else b.asarray(out))[0]
            else:
                out = _steps.scalar_value(call(xp.reshape(row, shape)), b)
        return out if b.owns(out) else b.asarray(out)

    flat_auto = xp.reshape(auto, (-1,))
    fixed = xp.reshape(grad, (-1,))
    with quiet():  # f is probed where it may not be finite
        for i in np.flatnonzero(b.to_numpy(bad).reshape(-1)).tolist():
            xi = flat[i]
            hs = flat_auto[i] / 16.0
            found = None
            up, down = xi + hs, xi - hs
            d = (probe(i, up) - probe(i, down)) / (up - down)
            if bool(xp.isfinite(d)):
                found = d
            else:
                f0 = probe(i, xi)
                for sign in (1.0, -1.0):
                    other = xi + sign * math.sqrt(eps) * xp.maximum(xp.abs(xi), 1.0)
                    d = (probe(i, other) - f0) / (other - xi)
                    if bool(xp.isfinite(d)):
                        found = d
                        break
            if found is None:
                where = ", ".join(str(int(k)) for k in np.unravel_index(i, shape))
                raise ValueError(
                    f"f: not finite around {name}[{where}] = {float(xi)!r}, even with a smaller "
                    "and with one-sided steps"
                )
            fixed = xp.where(cols == i, xp.astype(found, fixed.dtype), fixed)
    return xp.reshape(fixed, shape)


def _gradient_complex(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    h: float | None,
    eps: float,
    batch_size: int | None,
) -> Any:
    xp = b.xp
    shape = tuple(arr.shape)
    cdtype = _steps.complex_dtype(xp, arr.dtype)
    flat = xp.reshape(arr, (-1,))
    step = h if h is not None else eps**2 * xp.maximum(xp.abs(flat), 1.0)
    step_arr = xp.asarray(step, dtype=arr.dtype, device=arr.device) * xp.ones_like(flat)
    flat_c = xp.astype(flat, cdtype)
    moved = flat_c + xp.astype(step_arr, cdtype) * 1j
    index = xp.arange(flat.shape[0], device=arr.device)
    try:
        values = _steps.eval_perturbed(
            call, b, flat_c, shape, (index, moved), batch_size=batch_size
        )
    except (TypeError, ValueError) as exc:
        if "scalar" in str(exc):
            raise
        raise TypeError(
            f"method='complex': f failed on complex input ({type(exc).__name__}: {exc})"
        ) from exc
    if not xp.isdtype(values.dtype, "complex floating"):
        raise TypeError(_real_for_complex(f"real values (dtype {values.dtype})"))
    return xp.reshape(xp.astype(xp.imag(values) / step_arr, arr.dtype), shape)
