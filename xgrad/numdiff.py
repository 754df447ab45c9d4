"""The book's ``numerical_diff`` and ``numerical_gradient``, error-controlled.

Both run on every backend through the array API. An explicit step ``h`` is used as given
(so the book's and DeZero's numbers come out bit for bit); ``h=None`` runs the
error-controlled search of `xgrad._engine` (policy: `xgrad._policy`), which gives every
element an error estimate and a status, and warns (`AccuracyWarning`) wherever the result
cannot be trusted to ``rtol``/``atol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xgrad import _allocator, _compat, _engine, _policy
from xgrad._arrays import as_float_array
from xgrad._evaluators import (
    ElementwiseOps,
    PerturbOps,
    ScalarOps,
    is_writeable,
    quiet,
    scalar_value,
)
from xgrad._flags import flag
from xgrad._policy import DiffStatus
from xgrad._warnings import warn
from xgrad.backends import Backend, resolve_backend
from xgrad.backends._base import DtypeLike
from xgrad.backends._registry import backend_of
from xgrad.errors import (
    ArgumentError,
    ArgumentTypeError,
    InputIgnoredWarning,
    NonFiniteError,
    StepSizeWarning,
)

__all__ = [
    "DiffResult",
    "DiffStatus",
    "InputIgnoredWarning",
    "StepSizeWarning",
    "numerical_diff",
    "numerical_gradient",
]

_EPS64 = float(np.finfo(np.float64).eps)
_TINY64 = float(np.finfo(np.float64).smallest_normal)


@dataclass(frozen=True)
class DiffResult:
    """What ``full_output=True`` returns.

    Attributes
    ----------
    df : float or array
        The derivative (same type and shape as without ``full_output``).
    error : float or array
        Estimated absolute error of ``df``, per element: the disagreement of successive
        extrapolations plus rounding. For ``success`` elements it bounds the true error.
    status : int or array of int
        Per element, a `DiffStatus` code: 0 converged, 1 tolerance not met, 2 not finite,
        3 not differentiable (kink, jump, pole, infinite slope), 4 noisy.
    success : bool or array of bool
        ``status == 0``: the element met ``atol + rtol * |df|``.
    nfev : int
        Evaluations of f per element (the most any element needed).
    method : str
        The method used.
    step : float or array
        The finest step behind each element's estimate, made representable.
    """

    df: Any
    error: Any
    nfev: int
    method: str
    step: Any
    status: Any = 0
    success: Any = True


# -- numerical_diff ----------------------------------------------------------------------


def numerical_diff(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    method: str = "central",
    rtol: float | None = None,
    atol: float | None = None,
    full_output: bool = False,
    on_failure: str = "warn",
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Derivative of an elementwise function f at x (a scalar, or each element of an array).

    Parameters
    ----------
    f : callable
        Elementwise: ``f(X)`` has the shape of ``X``. For an array x, f is called on one
        stack of stencil points (shape ``(k, *x.shape)``); for a Python scalar x it is
        called with Python floats. A DeZero ``Function`` works with a ``Variable`` x.
    x : float, array or xgrad.dezero.Variable
        Where to differentiate. Integer input is promoted to float64.
    h : float, optional
        Step, used as given: ``(f(x+h) - f(x-h)) / (2*h)`` for ``"central"`` (where
        ``x + h == x`` the step is enlarged, with a `StepSizeWarning`). No error control
        then: the caller chose the step. None: the error-controlled search (Notes).
    method : {"central", "forward", "backward", "complex", "richardson"}
        ``"complex"``: ``Im f(x + ih) / h``, one evaluation and no cancellation, for f
        real-analytic and computing in complex. ``"richardson"``: central quotients
        ``D(h)`` with Richardson extrapolation, ``(4 D(h/2) - D(h)) / 3``
        (`xgrad._policy.extrapolate`): with an explicit h that one step (four
        evaluations); with ``h=None`` the search of ``"central"`` with its tableau of
        such steps run exhaustively (every step until the error estimate grows), for the
        most accurate result. ``"forward"``/``"backward"``: one-sided quotients, for
        one-sided derivatives.
    rtol, atol : float, optional
        Tolerance per element: success means ``error <= atol + rtol * |df|`` (plus f's own
        rounding floor, ``1024 eps |f| / max(|x|, 1)``). Defaults: ``rtol`` 1e-8 in
        float64, 1e-3 in float32; ``atol`` 0.
    full_output : bool
        Return a `DiffResult` (derivative, error, status, success, evaluations, step)
        instead of warning.
    on_failure : {"warn", "raise"}
        Without ``full_output``, an element that misses its tolerance (or has no
        derivative) gives an `AccuracyWarning` naming it; ``"raise"`` makes that an
        `AccuracyError`.
    backend : str or Backend, optional
        Backend for x given as Python numbers; arrays otherwise decide.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype (default: x's floating dtype, else float64).

    Returns
    -------
    float, array or DiffResult
        A Python float for a Python scalar x, else an array shaped like x, in x's dtype.

    Raises
    ------
    NonFiniteError
        (a ValueError) f is not finite around x even with smaller and one-sided steps
        (the message names the element); with ``full_output`` this is status 2 instead.
    ArgumentError, ArgumentTypeError
        Bad arguments, or f not elementwise (ValueError / TypeError).

    Warns
    -----
    AccuracyWarning
        Some element did not meet its tolerance, or has no derivative (kink, jump, pole,
        infinite slope), or f is noisier than its dtype.

    Notes
    -----
    ``h=None`` evaluates central differences at steps ``scale / 8 / 2**k`` and
    extrapolates them in Neville's tableau (Richardson; error estimate as in Numerical
    Recipes' ``dfridr`` plus rounding), first at ``scale = max(|x|, 1)``, then, where that
    does not meet the tolerance, at ``min(|x|, 1)`` (absolute steps for large |x|, relative
    ones near 0) and on to smaller steps until successive estimates agree or rounding
    takes over. A domain edge at x falls back to one-sided differences. A converged
    estimate whose even part ``f(x+h) + f(x-h)`` grows linearly in h is a kink (status 3),
    as is one whose quotients diverge as h shrinks. On smooth f it costs 8 evaluations.

    Examples
    --------
    >>> numerical_diff(lambda x: 0.01 * x**2 + 0.1 * x, 5.0, h=1e-4)  # the book
    0.1999999999990898
    >>> import math
    >>> round(numerical_diff(math.log, 1e-3), 6)
    1000.0
    >>> r = numerical_diff(math.cos, 3e4, full_output=True)
    >>> bool(r.success), abs(r.df + math.sin(3e4)) <= r.error
    (True, True)
    >>> r = numerical_diff(lambda v: max(v, 0.0), 0.0, full_output=True)
    >>> r.status == DiffStatus.NOT_DIFFERENTIABLE
    True
    """
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, found {type(f).__name__}")
    _policy.check_method(method)
    h = _policy.check_step(h)
    _policy.check_on_failure(on_failure)
    return _diff_any(f, x, h, method, rtol, atol, full_output, on_failure, backend, dtype)


def _diff_any(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None,
    method: str,
    rtol: float | None,
    atol: float | None,
    full_output: bool,
    on_failure: str,
    backend: Any,
    dtype: Any,
) -> Any:
    """numerical_diff's checked arguments to the path for x's kind.

    A Dask array: per block on its scheduler; a wrapper (DeZero's Variable): the array it
    holds; a Python number: the scalar path; anything else: an array.
    """
    if _compat.is_dask_array(x):
        from xgrad import workers as _workers

        return _workers.dask_diff(
            numerical_diff,
            f,
            x,
            h=h,
            method=method,
            rtol=rtol,
            atol=atol,
            full_output=full_output,
            on_failure=on_failure,
            backend=backend,
            dtype=dtype,
        )
    unwrap = getattr(x, "__xgrad_unwrap__", None)
    if unwrap is not None:
        # A wrapper (DeZero's Variable) says what array it holds and how to wrap one: f
        # sees wrappers, the engine arrays.
        data, wrap = unwrap()

        def through_wrapper(a: Any) -> Any:
            out = f(wrap(a))
            inner = getattr(out, "__xgrad_unwrap__", None)
            return inner()[0] if inner is not None else out

        return _diff_array(
            through_wrapper, data, h, method, rtol, atol, full_output, on_failure, backend, dtype
        )
    if backend is None and dtype is None and isinstance(x, int | float) and not isinstance(x, bool):
        return _diff_scalar(f, float(x), h, method, rtol, atol, full_output, on_failure)
    return _diff_array(f, x, h, method, rtol, atol, full_output, on_failure, backend, dtype)


def _finish(
    out: _engine.Outcome,
    method: str,
    rtol: float,
    full_output: bool,
    on_failure: str,
    x_host: Any,
    name: str = "x",
    what: str = "numerical_diff",
    host: Callable[[Any], Any] = np.asarray,
) -> Any:
    """The caller's answer from an outcome: a DiffResult, or df after flagging."""
    status = host(out.status)
    if full_output:
        return _result(out, method, status)
    flag(
        status,
        host(out.df),
        host(out.error),
        x_host,
        name=name,
        what=what,
        rtol=rtol,
        on_failure=on_failure,
        result=_result(out, method, status) if on_failure == "raise" else None,
    )
    return out.df


def _result(out: _engine.Outcome, method: str, status: Any) -> DiffResult:
    codes = np.asarray(status).astype(np.int64)
    if codes.ndim == 0:
        code: Any = int(codes)
        success: Any = code == 0
    else:
        code, success = codes, codes == 0
    return DiffResult(
        df=out.df,
        error=out.error,
        nfev=out.nfev,
        method=method,
        step=out.step,
        status=code,
        success=success,
    )


def _diff_scalar(
    f: Callable[[Any], Any],
    x: float,
    h: float | None,
    method: str,
    rtol: float | None,
    atol: float | None,
    full_output: bool,
    on_failure: str,
) -> Any:
    if not math.isfinite(x):
        raise ArgumentError(f"x: expected a finite number, found {x!r}")
    r, a = (
        (_policy.differencing_rtol("float64"), None)
        if rtol is None and atol is None
        else _policy.check_tolerances(rtol, atol, "float64")
    )
    if method == "complex":
        step = h if h is not None else _policy.complex_step(_EPS64, max(abs(x), 1.0))
        value = _call_complex(f, complex(x, step))
        if not isinstance(value, complex | np.complexfloating):
            raise ArgumentTypeError(_real_for_complex(type(value).__name__))
        df = float(value.imag) / step
        out = _engine.Outcome(df, _EPS64 * abs(df), _status_finite(df), step, 1)
    elif h is not None:
        out = _explicit(ScalarOps(f, _EPS64), x, h, method, _EPS64, full_output, r, a)
    else:
        ops = ScalarOps(f, _EPS64)
        if method == "central":
            fast = _engine.first_stage_float(f, x, _EPS64, r, a, seed=ops)
            if fast is not None:
                if not full_output:
                    return fast[0]
                return DiffResult(fast[0], fast[1], fast[3], method, fast[2], 0, True)
            if not ops.preset:
                df, err, step, ok, calls = _engine.first_stage(ops, x, _EPS64, r, a)
                if ok:
                    if not full_output:
                        return float(df)
                    return DiffResult(df, err, calls, method, step, 0, True)
        out = _engine.search(
            ops, x, method, _EPS64, _TINY64, r, a, f0=lambda: ops.evaluate([x], True)[0]
        )
    result = _finish(out, method, r, full_output, on_failure, np.asarray(x))
    if isinstance(result, DiffResult):
        return result
    return float(result)


def _status_finite(df: Any) -> float:
    return float(DiffStatus.CONVERGED if math.isfinite(df) else DiffStatus.NOT_FINITE)


# Large arrays are differentiated in blocks: a handful of block-sized temporaries stay in
# the allocator's reused memory, where full-size ones cost fresh pages on every call
# (3-5x slower on 1e5 points with glibc's default thresholds).
# The per-element fields of an engine Outcome (nfev is one count).
_FIELDS = ("df", "error", "status", "step")
_BLOCK = 2**14
# A block's temporaries (the stencil points, f's values there, f's own temporaries, the
# tableau) add up to several times the largest of them: above one block, the allocator is
# warmed first (`xgrad._allocator`), or each block faults its pages in afresh.


def _diff_array(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None,
    method: str,
    rtol: float | None,
    atol: float | None,
    full_output: bool,
    on_failure: str,
    backend: Any,
    dtype: Any,
) -> Any:
    xa, b = _float_input(x, backend, dtype)
    xp = b.xp
    if not bool(xp.all(xp.isfinite(xa))):
        raise ArgumentError("x: expected finite values, found inf or nan")
    r, a = _policy.check_tolerances(rtol, atol, b.dtype_name(xa.dtype))
    eps, tiny = _policy.finfo(xp, xa.dtype)
    shape = tuple(xa.shape)
    size = math.prod(shape)
    flat = xp.reshape(xa, (-1,))
    if size <= _BLOCK:
        blocks = [flat]
    else:
        _allocator.warm()
        blocks = [flat[start : min(size, start + _BLOCK)] for start in range(0, size, _BLOCK)]
    outs = [_diff_block(f, b, blk, h, method, eps, tiny, r, a, full_output) for blk in blocks]
    if len(outs) == 1:
        out = outs[0]
    else:
        out = _engine.Outcome(
            **{k: xp.concat([getattr(o, k) for o in outs]) for k in _FIELDS},
            nfev=max(o.nfev for o in outs),
        )
    out = _engine.Outcome(**{k: xp.reshape(getattr(out, k), shape) for k in _FIELDS}, nfev=out.nfev)
    out.status = xp.astype(out.status, xp.int32)
    x_host = b.to_numpy(xa)
    return _finish(out, method, r, full_output, on_failure, x_host, host=b.to_numpy)


def _float_input(x: Any, backend: Any, dtype: Any, name: str = "x") -> tuple[Any, Backend]:
    given = str(getattr(x, "dtype", "")).rsplit(".", 1)[-1]
    if dtype is None and given in ("float16", "bfloat16"):
        _policy.differencing_rtol(given, name)  # the same refusal as for any dtype without a rule
    xa, b = as_float_array(x, backend=backend, dtype=dtype, name=name)
    _policy.differencing_rtol(b.dtype_name(xa.dtype), name)  # refuses dtypes it has no rule for
    return xa, b


def _full(xp: Any, like: Any, value: Any) -> Any:
    return xp.full(like.shape, value, dtype=like.dtype, device=like.device)


def _diff_block(
    f: Callable[[Any], Any],
    b: Backend,
    xa: Any,
    h: float | None,
    method: str,
    eps: float,
    tiny: float,
    rtol: float,
    atol: float | None,
    full_output: bool,
) -> _engine.Outcome:
    xp = b.xp
    ops = ElementwiseOps(f, xp, b, xa)
    if method == "complex":
        cdtype = _policy.complex_dtype(xp, xa.dtype)
        step = h if h is not None else _policy.complex_step(eps, xp.maximum(xp.abs(xa), 1.0))
        istep = xp.astype(xp.asarray(step, dtype=xa.dtype, device=xa.device), cdtype) * 1j
        z = xp.astype(xa, cdtype) + istep
        out = _call_complex(f, z)
        if not b.owns(out):
            out = b.asarray(out)
        if not xp.isdtype(out.dtype, "complex floating"):
            raise ArgumentTypeError(_real_for_complex(f"an array of dtype {out.dtype}"))
        if tuple(out.shape) != tuple(xa.shape):
            raise ArgumentError(
                f"f: numerical_diff needs an elementwise f; f on shape {tuple(xa.shape)} "
                f"returned shape {tuple(out.shape)}"
            )
        df = xp.astype(xp.imag(out) / step, xa.dtype)
        status = ops.where(xp.isfinite(df), 0.0, float(DiffStatus.NOT_FINITE))
        return _engine.Outcome(df, eps * xp.abs(df), status, _full(xp, xa, 0.0) + step, 1)
    if h is not None:
        return _explicit(ops, xa, h, method, eps, full_output, rtol, atol)
    if method == "central":
        df, err, step, ok, calls = _engine.first_stage(ops, xa, eps, rtol, atol)
        if bool(xp.all(ok)):
            zero = _full(xp, xa, 0.0)
            return _engine.Outcome(df, err, zero, zero + step, calls)
    return _engine.search(
        ops, xa, method, eps, tiny, rtol, atol, f0=lambda: ops.evaluate([xa], None)[0]
    )


def _call_complex(f: Callable[[Any], Any], z: Any) -> Any:
    try:
        return f(z)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"method='complex': f failed on complex input ({type(exc).__name__}: {exc}); "
            "complex step needs an f that computes in complex (no math.*, abs, maximum)"
        ) from exc


def _real_for_complex(found: str) -> str:
    return (
        f"method='complex': f returned {found} for complex input; complex step needs f "
        "to compute with its complex argument and to be real-analytic (no abs, "
        "comparisons or real-only functions)"
    )


def _explicit(
    ops: Any,
    x: Any,
    h: float,
    method: str,
    eps: float,
    full_output: bool,
    rtol: float,
    atol: float | None,
) -> _engine.Outcome:
    """The book's difference with the caller's step (bit for bit), no error control.

    With ``full_output`` the same stencil at 2h estimates the truncation error, and the
    status says whether that meets the tolerance. Where ``x + h == x`` the search takes
    over for those elements, with a `StepSizeWarning`.
    """
    stencil = _policy.METHODS[method]
    array = not isinstance(ops, ScalarOps)
    with quiet():
        if stencil.a == -stencil.b:
            fp, fm = ops.evaluate([x + h, x - h], True)
            df = (fp - fm) / (2 * h)
            stuck = (x + h == x) | (x - h == x)
        elif stencil.b == 0.0:
            fp, f0 = ops.evaluate([x + h, x], True)
            df = (fp - f0) / h
            stuck = x + h == x
        else:
            f0, fm = ops.evaluate([x, x - h], True)
            df = (f0 - fm) / h
            stuck = x - h == x
        if method == "richardson":
            # With a given step: one extrapolation, from h and h/2.
            gp, gm = ops.evaluate([x + h / 2, x - h / 2], True)
            df = _policy.extrapolate(df, (gp - gm) / h)
        nfev = 4 if method == "richardson" else 2
        err: Any = math.nan
        if full_output:
            if stencil.a == -stencil.b:
                g1, g2 = ops.evaluate([x + 2 * h, x - 2 * h], True)
                df2 = (g1 - g2) / (4 * h)
                fmax = ops.maximum(ops.abs(fp), ops.abs(fm))
                order = 2.0
            else:
                sign = 1.0 if method == "forward" else -1.0
                (g1,) = ops.evaluate([x + sign * 2 * h], True)
                df2 = sign * (g1 - f0) / (2 * h)
                fmax = ops.abs(f0)
                order = 1.0
            nfev += 2 if stencil.a == -stencil.b else 1
            err = ops.abs(df - df2) / (2.0**order - 1.0) + 2.0 * eps * fmax / h
    status: Any = ops.full_entry(0.0) if array else float(DiffStatus.CONVERGED)
    if full_output:
        tol = (atol or 0.0) + rtol * ops.abs(df)
        met = ops.isfinite(df) & (err <= tol)
        status = ops.where(met, status, float(DiffStatus.TOLERANCE_NOT_MET))
    status = ops.where(ops.isfinite(df), status, float(DiffStatus.NOT_FINITE))
    step: Any = h
    if ops.any(stuck):
        xp = getattr(ops, "xp", None)
        count = int(xp.sum(xp.astype(stuck, xp.int64))) if xp is not None else 1
        _warn_enlarged(count, h, "float32" if eps > 1e-10 else "float64")
        auto = _engine.search(ops, x, "central", eps, math.ulp(0.0), rtol, atol)
        df = ops.where(stuck, auto.df, df)
        err = ops.where(stuck, auto.error, err)
        status = ops.where(stuck, auto.status, status)
        step = ops.where(stuck, auto.step, step)
        nfev += auto.nfev
    if array and not hasattr(step, "shape"):
        step = ops.full_entry(0.0) + step
    if array and not hasattr(err, "shape"):
        err = ops.full_entry(0.0) + err
    return _engine.Outcome(df, err, status, step, nfev)


def _warn_enlarged(count: int, h: float, dtype_name: str) -> None:
    warn(
        f"h={h!r} does not change x at {count} element(s) in {dtype_name} (x + h == x); "
        "used the automatic step there",
        StepSizeWarning,
    )


# -- numerical_gradient ------------------------------------------------------------------


def numerical_gradient(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    method: str = "central",
    rtol: float | None = None,
    atol: float | None = None,
    full_output: bool = False,
    on_failure: str = "warn",
    batch_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
    workers: Any = None,
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
        Step, used as given (``(f(x+h) - f(x-h)) / (2*h)``, as in the book), without error
        control. None: the error-controlled search of `numerical_diff`, per element.
    method : {"central", "forward", "backward", "complex", "richardson"}
        As in `numerical_diff` (``"richardson"``: ``(4 D(h/2) - D(h)) / 3`` with an
        explicit h, the exhaustive search with ``h=None``). ``"complex"`` is always
        functional (f receives a complex copy).
    rtol, atol : float, optional
        Tolerance per element, norm-wise: success means ``error <= atol + rtol * |g_i|``
        with a default ``atol`` of ``rtol * max|g|`` (small entries are judged against the
        largest one), plus f's rounding floor. ``rtol``: 1e-8 in float64, 1e-3 in float32.
    full_output : bool
        Return a `DiffResult` (a dict of them for a dict x) instead of warning.
    on_failure : {"warn", "raise"}
        An element that misses its tolerance gives an `AccuracyWarning` naming it, or
        with ``"raise"`` an `AccuracyError`.
    batch_size : int, optional
        Fast path: f is batched, receiving stacks ``(k, *x.shape)`` of at most
        ``batch_size`` perturbed copies (the leading, batch axis, as a minibatch is for a
        net) and returning ``k`` values. Not for dict input.
    backend : str or Backend, optional
        Backend for x given as lists or NumPy arrays (moving an array means a copy).
    dtype : {"float32", "float64"}, optional
        Compute in this dtype (a copy when it differs from x's).
    workers : int, executor, map-like, distributed.Client or list of devices, optional
        Evaluate the perturbations in parallel (see `xgrad.workers`): bit for bit the
        serial result. f must compute from its argument (a `ClosureError` says so when it
        reads x through a closure), and f and x must be serializable (except for a list
        of devices).

    Returns
    -------
    array, dict of arrays, or DiffResult
        Shaped like x, in x's floating dtype.

    Raises
    ------
    NonFiniteError
        f is not finite at some perturbation even with smaller and one-sided steps (the
        message names the element).
    ArgumentError
        f returns a non-scalar, or bad arguments.

    Examples
    --------
    >>> import numpy as np
    >>> numerical_gradient(lambda x: x[0]**2 + x[1]**2, np.array([3.0, 4.0]), h=1e-4)
    array([6., 8.])
    >>> numerical_gradient(lambda x: x[0]**2 + x[1]**2, np.array([3, 4]))  # int input
    array([6., 8.])
    """
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, found {type(f).__name__}")
    _policy.check_method(method)
    h = _policy.check_step(h)
    _policy.check_on_failure(on_failure)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ArgumentError(f"batch_size: expected a positive int or None, found {batch_size!r}")
    settings = (h, method, rtol, atol, full_output, on_failure)
    runner = _workers_runner(workers, x, backend)
    if isinstance(x, Mapping):
        if batch_size is not None:
            raise ArgumentError("batch_size: not supported for a dict x; pass one array at a time")
        params = x
        grads = {}
        for key, value in params.items():
            arr, b, same = _prepare(value, backend, dtype, f"x[{key!r}]")

            def call(a: Any, key: Any = key, same: bool = same) -> Any:
                return f(params) if same and a is params[key] else f({**params, key: a})

            grads[key] = _gradient(
                call,
                arr,
                b,
                not same,
                None,
                f"x[{key!r}]",
                *settings,
                workers=runner,
                user=(f, value),
            )
        return grads
    arr, b, same = _prepare(x, backend, dtype, "x")
    return _gradient(f, arr, b, not same, batch_size, "x", *settings, workers=runner, user=(f, x))


def resolve_workers(workers: Any, like: Any) -> Any:
    """The runner of ``workers=`` (None: serial), checked before any evaluation.

    ``like`` is the backend of the array to be perturbed (None where it is not known yet),
    which a list of devices must match.
    """
    if workers is None:
        return None
    from xgrad import workers as _workers

    return _workers.resolve(workers, like)


def _workers_runner(workers: Any, x: Any, backend: Any) -> Any:
    """`resolve_workers` for x, an array or a dict of them (the backend of its first)."""
    if workers is None:
        return None
    first = next(iter(x.values()), None) if isinstance(x, Mapping) else x
    owner = backend_of(first, strict=False) if first is not None else None
    like = resolve_backend(backend) if backend is not None else owner
    return resolve_workers(workers, like)


def _prepare(value: Any, backend: Any, dtype: Any, name: str) -> tuple[Any, Backend, bool]:
    """(array to perturb, its backend, whether it is the caller's own array)."""
    owner = backend_of(value, strict=False)
    if owner is not None and (backend is None or resolve_backend(backend) == owner):
        xp = owner.xp
        same_dtype = dtype is None or owner.dtype_name(dtype) == owner.dtype_name(value.dtype)
        if xp.isdtype(value.dtype, "real floating") and same_dtype:
            _policy.differencing_rtol(owner.dtype_name(value.dtype), name)
            return value, owner, True
    arr, b = _float_input(value, backend, dtype, name)
    return arr, b, False


def _gradient(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    copied: bool,
    batch_size: int | None,
    name: str,
    h: float | None,
    method: str,
    rtol: float | None,
    atol: float | None,
    full_output: bool,
    on_failure: str,
    *,
    workers: Any = None,
    user: tuple[Any, Any] | None = None,
) -> Any:
    xp = b.xp
    shape = tuple(arr.shape)
    n = math.prod(shape)
    r, a = _policy.check_tolerances(rtol, atol, b.dtype_name(arr.dtype))
    if n == 0:
        zeros = xp.zeros_like(arr)
        if full_output:
            return _result(_engine.Outcome(zeros, zeros, 0, zeros, 0), method, 0)
        return zeros
    if not bool(xp.all(xp.isfinite(arr))):
        raise ArgumentError(f"{name}: expected finite values, found inf or nan")
    eps, tiny = _policy.finfo(xp, arr.dtype)
    inplace = batch_size is None and method != "complex" and is_writeable(arr)
    dispatch = None
    if workers is not None:
        from xgrad import workers as _workers

        f_user, target = user if user is not None else (call, arr)
        base = arr
        if method == "complex":
            base = xp.astype(arr, _policy.complex_dtype(xp, arr.dtype))
        dispatch = _workers.dispatch(
            workers,
            f=f_user,
            call=call,
            backend=b,
            arr=base,
            target=target,
            name=name,
            inplace=inplace,
            batch_size=batch_size,
        )
    try:
        out = _gradient_outcome(
            call, arr, b, h, method, inplace, batch_size, name, eps, tiny, r, a, dispatch
        )
    finally:
        if dispatch is not None:
            dispatch.close()
    out.df = xp.astype(out.df, arr.dtype)
    if (copied or not inplace or dispatch is not None) and not bool(xp.any(out.df != 0.0)):
        warn(
            "every perturbation of x left f unchanged, and f received a copy of x (x is "
            "integer, immutable, on another backend or dtype, or batch_size or workers was "
            "given): if f reads the array through a closure (lambda W: net.loss(x, t)), pass "
            "a writeable floating array or use the argument f receives",
            InputIgnoredWarning,
        )
    return _gradient_finish(out, arr, b, h, method, r, full_output, on_failure, name)


def _gradient_outcome(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    h: float | None,
    method: str,
    inplace: bool,
    batch_size: int | None,
    name: str,
    eps: float,
    tiny: float,
    r: float,
    a: float | None,
    dispatch: Any,
) -> _engine.Outcome:
    xp = b.xp
    shape = tuple(arr.shape)
    if method == "complex":
        grad = _gradient_complex(call, arr, b, h, eps, batch_size, dispatch)
        out = _engine.Outcome(grad, eps * xp.abs(grad), _full(xp, grad, 0.0), grad * 0.0, 1)
    elif h is not None:
        grad = _gradient_explicit(call, arr, b, h, method, inplace, batch_size, name, dispatch)
        out = _engine.Outcome(grad, _full(xp, grad, math.nan), _full(xp, grad, 0.0), h, 2)
    else:
        ops = PerturbOps(call, b, arr, inplace=inplace, batch_size=batch_size)
        ops.dispatch = dispatch
        flat = xp.reshape(arr, (-1,))

        def f0() -> Any:
            value = _f_at(call, arr, b, batch_size)
            return xp.zeros_like(flat) + xp.astype(value, arr.dtype)

        with quiet():
            found = _engine.search(ops, flat, method, eps, tiny, r, a, normwise=True, f0=f0)
        out = _engine.Outcome(
            **{k: xp.reshape(getattr(found, k), shape) for k in _FIELDS}, nfev=found.nfev
        )
        out.status = xp.astype(out.status, xp.int32)
    return out


def _gradient_finish(
    out: _engine.Outcome,
    arr: Any,
    b: Backend,
    h: float | None,
    method: str,
    r: float,
    full_output: bool,
    on_failure: str,
    name: str,
) -> Any:
    xp = b.xp
    if h is not None and not full_output:
        bad = xp.logical_not(xp.isfinite(out.df))
        if bool(xp.any(bad)):
            index = tuple(int(i) for i in np.argwhere(b.to_numpy(bad))[0])
            where = ", ".join(map(str, index))
            value = float(b.to_numpy(arr)[index])
            raise NonFiniteError(
                f"f: not finite around {name}[{where}] = {value!r} with h={h!r}",
                index=index,
                value=value,
            )
        return out.df
    return _finish(
        out,
        method,
        r,
        full_output,
        on_failure,
        b.to_numpy(arr),
        name,
        "numerical_gradient",
        host=b.to_numpy,
    )


def _f_at(call: Callable[[Any], Any], arr: Any, b: Backend, batch_size: int | None) -> Any:
    """f at the unperturbed x, as an array of the backend."""
    if batch_size is not None:
        out = call(arr[None, ...])
        out = out if b.owns(out) else b.asarray(out)
        return out[0]
    value = scalar_value(call(arr), b)
    return value if b.owns(value) else b.asarray(value)


def _gradient_explicit(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    h: float,
    method: str,
    inplace: bool,
    batch_size: int | None,
    name: str,
    dispatch: Any = None,
) -> Any:
    """The book's loop with the caller's step: ``(f(x+h) - f(x-h)) / (2h)`` per element.

    Where ``x + h == x`` the step is enlarged to the policy's fixed step (a
    `StepSizeWarning` says where).
    """
    xp = b.xp
    shape = tuple(arr.shape)
    eps, _ = _policy.finfo(xp, arr.dtype)
    stencil = _policy.METHODS[method]
    offsets = [o for o in (stencil.a, stencil.b) if o != 0.0]
    if method == "richardson":
        offsets = [1.0, -1.0, 0.5, -0.5]
    auto = _policy.fixed_step(method, eps, xp.maximum(xp.abs(arr), 1.0))
    stuck = xp.zeros(shape, dtype=xp.bool, device=arr.device)
    for o in offsets:
        stuck = stuck | (arr + o * h == arr)
    count = int(xp.sum(xp.astype(stuck, xp.int64)))
    step: Any = xp.where(stuck, auto, h) if count else h
    if count:
        _warn_enlarged(count, h, b.dtype_name(arr.dtype))
    points = [xp.reshape(arr + o * step, (-1,)) for o in offsets]
    ops = PerturbOps(call, b, arr, inplace=inplace, batch_size=batch_size)
    ops.dispatch = dispatch
    every = xp.ones(math.prod(shape), dtype=xp.bool, device=arr.device)
    with quiet():
        values = [xp.reshape(v, shape) for v in ops.evaluate(points, every)]
        pts = [xp.reshape(p, shape) for p in points]
        if stencil.a != -stencil.b:
            f0 = _f_at(call, arr, b, batch_size)
            if count:
                return (values[0] - f0) / (pts[0] - arr)
            return offsets[0] * (values[0] - f0) / h
        if count:
            d = (values[0] - values[1]) / (pts[0] - pts[1])
        else:
            d = (values[0] - values[1]) / (2 * h)
        if method == "richardson":
            return _policy.extrapolate(d, (values[2] - values[3]) / (pts[2] - pts[3]))
        return d


def _gradient_complex(
    call: Callable[[Any], Any],
    arr: Any,
    b: Backend,
    h: float | None,
    eps: float,
    batch_size: int | None,
    dispatch: Any = None,
) -> Any:
    xp = b.xp
    shape = tuple(arr.shape)
    cdtype = _policy.complex_dtype(xp, arr.dtype)
    flat = xp.reshape(arr, (-1,))
    step = h if h is not None else _policy.complex_step(eps, xp.maximum(xp.abs(flat), 1.0))
    step_arr = xp.asarray(step, dtype=arr.dtype, device=arr.device) * xp.ones_like(flat)
    flat_c = xp.astype(flat, cdtype)
    moved = flat_c + xp.astype(step_arr, cdtype) * 1j
    ops = PerturbOps(call, b, xp.reshape(flat_c, shape), inplace=False, batch_size=batch_size)
    ops.dtype = cdtype
    ops.dispatch = dispatch
    try:
        index = xp.arange(flat.shape[0], device=arr.device)
        values = ops._stacked_raw(index, moved)
    except ArgumentError:
        raise
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"method='complex': f failed on complex input ({type(exc).__name__}: {exc})"
        ) from exc
    if not xp.isdtype(values.dtype, "complex floating"):
        raise ArgumentTypeError(_real_for_complex(f"real values (dtype {values.dtype})"))
    return xp.reshape(xp.astype(xp.imag(values) / step_arr, arr.dtype), shape)
