"""Jacobians and Hessians by finite differences, error-controlled, in bounded memory.

f is called on perturbed copies of x (never on x itself). `jacobian` runs the search of
`xgrad._engine` column by column (a chunk of columns at a time, so memory is the result
plus a chunk, not the O(n^2) temporaries of ``scipy.differentiate.jacobian``); `hessian`
keeps its symmetric form (second differences on each pair, mirrored) at two steps, whose
Richardson extrapolation gives every entry an error estimate and a status.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from xgrad import _engine, _policy
from xgrad._evaluators import HessianValues, PerturbOps, is_writeable, quiet
from xgrad._flags import flag
from xgrad._policy import DiffStatus
from xgrad.backends import Backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError
from xgrad.numdiff import DiffResult, _float_input, resolve_workers

__all__ = ["HessianMemoryError", "hessian", "jacobian"]

_JACOBIAN_METHODS = ("central", "forward", "backward", "complex", "richardson")
# Jacobian entries the search holds at once (it keeps a few arrays of this size per level).
_SEARCH_ENTRIES = 2**16


class HessianMemoryError(XgradError, MemoryError):
    """The (n, n) Hessian would not fit in the memory available; nothing was computed."""


def _check_callable(f: Any) -> None:
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, found {type(f).__name__}")


def _check_positive(name: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ArgumentError(f"{name}: expected a positive int or None, found {value!r}")
    return value


def _columns_matrix(b: Backend, rows: int, cols: int, dtype: Any, device: Any, blocks: Any) -> Any:
    """Assemble a (rows, cols) matrix from (start, stop, block) column blocks.

    Writeable backends fill one preallocated result (memory: result + one block);
    immutable ones (JAX) concatenate the blocks at the end.
    """
    xp = b.xp
    out = xp.zeros((rows, cols), dtype=dtype, device=device)
    if is_writeable(out):
        for start, stop, block in blocks:
            out[:, start:stop] = block
        return out
    parts = [block for _, _, block in blocks]
    return xp.concat(parts, axis=1) if parts else out


def jacobian(
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
    chunk_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
    workers: Any = None,
) -> Any:
    """Jacobian of f at x: ``J[i..., j...] = d f(x)[i...] / d x[j...]``.

    The result has shape ``f(x).shape + x.shape``; for vectors, ``J`` is (m, n) with
    ``J[i, j] = d f_i / d x_j`` (so ``jacobian(lambda x: A @ x, x)`` is ``A``, not its
    transpose). Flatten x and f(x) to read any shape as that (m, n) matrix.

    Parameters
    ----------
    f : callable
        Array in, array out (any shapes, the output's not depending on x's values). It
        receives perturbed copies of x.
    x : array
        Integer input is promoted to float64.
    h : float, optional
        Step, used as given (no error control). None: the error-controlled search of
        `numerical_diff`, per column, every entry with an error estimate and a status.
    method : {"central", "forward", "backward", "complex", "richardson"}
        As in `numerical_diff` (``"richardson"``: ``(4 D(h/2) - D(h)) / 3`` with an
        explicit h, the exhaustive search with ``h=None``).
    rtol, atol : float, optional
        Tolerance per entry: ``error <= atol + rtol * |J_ij|``. Defaults: ``rtol`` 1e-8
        (float64), 1e-3 (float32); ``atol`` ``rtol * max|f(x)| / max(max|x|, 1)``, the
        scale of f's rate of change (entries far below it are judged against it).
    full_output : bool
        Return a `DiffResult` (shape of J for every field) instead of warning.
    on_failure : {"warn", "raise"}
        A flagged entry gives an `AccuracyWarning` naming it, or an `AccuracyError`.
    batch_size : int, optional
        f is batched: it receives stacks ``(k, *x.shape)`` of at most ``batch_size``
        perturbed copies (the leading, batch axis, as a minibatch is for a net) and
        returns ``(k, *f(x).shape)``.
    chunk_size : int, optional
        Perturbations per pass: columns of J (elements of x moved) computed together
        (memory: the result plus about ``chunk_size * (x.size + f(x).size)``). Default:
        ``batch_size``, else a bound on the search's temporaries.
    backend : str or Backend, optional
        Backend for x given as a list or NumPy array.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype.
    workers : int, executor, map-like, distributed.Client or list of devices, optional
        Evaluate the perturbed copies in parallel (see `xgrad.workers`), bit for bit the
        serial result.

    Returns
    -------
    array or DiffResult
        Shape ``f(x).shape + x.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> jacobian(lambda v: A @ v, np.array([0.5, -1.0]))
    array([[1., 2.],
           [3., 4.],
           [5., 6.]])
    """
    h, xa, b, runner = _checked_input(
        f, x, h, on_failure, chunk_size, batch_size, backend, dtype, workers, method
    )
    r, a = _policy.check_tolerances(rtol, atol, b.dtype_name(xa.dtype))
    f0 = f(xa)
    f0 = f0 if b.owns(f0) else b.asarray(f0)
    run = _JacobianRun(f, b, xa, f0, h, method, r, a, batch_size)
    if chunk_size is not None:
        chunk = chunk_size
    elif batch_size is not None:
        chunk = batch_size
    else:
        limit = _SEARCH_ENTRIES if h is None and method != "complex" else 2**20
        chunk = max(1, limit // max(run.m, run.n, 1))
    if runner is not None:
        run.dispatch = _jacobian_dispatch(runner, f, b, xa, x, method, batch_size, run.out_shape)
    try:
        for start in range(0, run.n, chunk):
            stop = min(run.n, start + chunk)
            run.results.append((start, stop, run.columns(start, stop)))
    finally:
        if run.dispatch is not None:
            run.dispatch.close()
    return _jacobian_answer(run, full_output, on_failure)


def _checked_input(
    f: Any,
    x: Any,
    h: Any,
    on_failure: Any,
    chunk_size: Any,
    batch_size: Any,
    backend: Any,
    dtype: Any,
    workers: Any,
    method: Any = None,
) -> tuple[float | None, Any, Backend, Any]:
    """The arguments jacobian and hessian share, checked before f is called.

    Returns the step (None: the search), x as a float array, its backend, and the
    runner of ``workers=`` (None: serial). ``method`` is checked where given (jacobian).
    """
    _check_callable(f)
    if method is not None:
        _policy.check_method(method, _JACOBIAN_METHODS)
    step = _policy.check_step(h)
    _policy.check_on_failure(on_failure)
    _check_positive("chunk_size", chunk_size)
    _check_positive("batch_size", batch_size)
    xa, b = _float_input(x, backend, dtype)
    return step, xa, b, resolve_workers(workers, b)


def _jacobian_dispatch(
    runner: Any,
    f: Callable[[Any], Any],
    b: Backend,
    xa: Any,
    x: Any,
    method: str,
    batch_size: int | None,
    out_shape: tuple[int, ...],
) -> Any:
    """The `xgrad.workers.Dispatch` that evaluates the columns' perturbed copies."""
    from xgrad import workers as _workers

    xp = b.xp
    base = xa
    if method == "complex":
        base = xp.astype(xa, _policy.complex_dtype(xp, xa.dtype))
    return _workers.dispatch(
        runner,
        f=f,
        call=f,
        backend=b,
        arr=base,
        target=x,
        name="x",
        batch_size=batch_size,
        out_shape=out_shape,
    )


class _JacobianRun:
    """One jacobian call: what every column block needs, and the blocks computed so far."""

    def __init__(
        self,
        f: Callable[[Any], Any],
        b: Backend,
        xa: Any,
        f0: Any,
        h: float | None,
        method: str,
        rtol: float,
        atol: float | None,
        batch_size: int | None,
    ) -> None:
        xp = b.xp
        self.f, self.b, self.xa, self.h, self.method = f, b, xa, h, method
        self.batch_size = batch_size
        self.shape = tuple(xa.shape)
        self.n = math.prod(self.shape)
        self.out_shape = tuple(f0.shape)
        self.m = math.prod(self.out_shape)
        self.eps, self.tiny = _policy.finfo(xp, xa.dtype)
        self.flat = xp.reshape(xa, (-1,))
        self.rtol = rtol
        self.atol = atol if atol is not None else self._default_atol(f0)
        self.f0_flat = xp.reshape(
            xp.astype(f0, xa.dtype) if xp.isdtype(f0.dtype, "real floating") else f0,
            (1, self.m),
        )
        # A `xgrad.workers.Dispatch`: the perturbed copies are evaluated on workers.
        self.dispatch: Any = None
        self.results: list[tuple[int, int, _engine.Outcome]] = []

    def _default_atol(self, f0: Any) -> float:
        """``rtol * max|f(x)| / max(max|x|, 1)``: the scale of f's rate of change."""
        xp = self.b.xp
        scale = float(xp.max(xp.abs(f0))) if self.m else 0.0
        reach = max(float(xp.max(xp.abs(self.flat))) if self.n else 0.0, 1.0)
        return self.rtol * scale / reach if math.isfinite(scale) else 0.0

    def columns(self, start: int, stop: int) -> _engine.Outcome:
        """The outcome of columns ``start:stop``, entries shaped (columns, outputs)."""
        sub = _Columns(
            self.f, self.b, self.xa, start, stop, self.out_shape, self.batch_size, self.dispatch
        )
        part = self.flat[start:stop]
        if self.method == "complex":
            return _complex_columns(sub, part, self.h, self.eps)
        if self.h is not None:
            return _explicit_columns(sub, part, self.h, self.method, self.eps)
        return self._searched(sub, part, start, stop)

    def _searched(self, sub: _Columns, part: Any, start: int, stop: int) -> _engine.Outcome:
        """The error-controlled search over a block of columns."""
        xp, xa, m = self.b.xp, self.xa, self.m
        entries = (stop - start, m) if self.out_shape else (stop - start,)

        def center() -> Any:
            zeros = xp.zeros((stop - start, m), dtype=xa.dtype, device=xa.device)
            return xp.reshape(zeros + self.f0_flat, entries)

        with quiet():
            found = _engine.search(
                sub.ops(), part, self.method, self.eps, self.tiny, self.rtol, self.atol, f0=center
            )
        if not self.out_shape:
            for name in ("df", "error", "status", "step"):
                value = getattr(found, name)
                value = value + xp.zeros(entries, dtype=xa.dtype, device=xa.device)
                setattr(found, name, xp.reshape(value, (stop - start, 1)))
        elif found.step.ndim == 1:
            found.step = found.step[:, None] + xp.zeros((1, m), dtype=xa.dtype, device=xa.device)
        return found

    def field(self, name: str) -> Any:
        """One field of the blocks' outcomes as a whole array of shape ``f(x).shape + x.shape``."""
        xp, xa = self.b.xp, self.xa
        blocks = (
            (s, e, xp.permute_dims(xp.astype(getattr(o, name), xa.dtype), (1, 0)))
            for s, e, o in self.results
        )
        return xp.reshape(
            _columns_matrix(self.b, self.m, self.n, xa.dtype, xa.device, blocks),
            (*self.out_shape, *self.shape),
        )


def _jacobian_answer(run: _JacobianRun, full_output: bool, on_failure: str) -> Any:
    """The caller's answer: J (after the non-finite check or the flagging) or a DiffResult."""
    b, xa = run.b, run.xa
    jac = run.field("df")
    if run.h is not None and not full_output:
        _refuse_non_finite(b, jac, xa, len(run.out_shape))
        return jac
    out = _engine.Outcome(
        jac,
        run.field("error"),
        run.field("status"),
        run.field("step"),
        max((o.nfev for _, _, o in run.results), default=0),
    )
    status = b.to_numpy(out.status).astype(np.int64)
    if full_output:
        return DiffResult(out.df, out.error, out.nfev, run.method, out.step, status, status == 0)
    flag(
        status,
        b.to_numpy(out.df),
        b.to_numpy(out.error),
        b.to_numpy(xa),
        what="jacobian",
        rtol=run.rtol,
        on_failure=on_failure,
        x_axes=len(run.shape),
    )
    return jac


def _refuse_non_finite(b: Backend, jac: Any, xa: Any, out_axes: int) -> None:
    """A NonFiniteError naming the first non-finite entry of an explicit-step Jacobian."""
    xp = b.xp
    bad = xp.logical_not(xp.isfinite(jac))
    if not bool(xp.any(bad)):
        return
    from xgrad.errors import NonFiniteError

    index = tuple(int(i) for i in np.argwhere(b.to_numpy(bad))[0])
    xi = index[out_axes:]
    value = float(b.to_numpy(xa)[xi])
    where = ", ".join(map(str, xi))
    raise NonFiniteError(
        f"f: not finite near x[{where}] = {value!r} (Jacobian entry {list(index)}); "
        "try method='forward' or 'backward' at a domain edge",
        index=xi,
        value=value,
    )


class _Columns:
    """Columns ``start:stop`` of a Jacobian: f at x with element j (in the range) moved."""

    def __init__(
        self,
        f: Callable[[Any], Any],
        b: Backend,
        xa: Any,
        start: int,
        stop: int,
        out_shape: tuple[int, ...],
        batch_size: int | None,
        dispatch: Any = None,
    ) -> None:
        self.f, self.b, self.xa = f, b, xa
        self.start, self.stop = start, stop
        self.out_shape, self.batch_size = out_shape, batch_size
        self.dispatch = dispatch

    def ops(self) -> PerturbOps:
        """Evaluator for the engine over this range (entries: (columns, outputs))."""
        ops = PerturbOps(
            self.f,
            self.b,
            self.xa,
            inplace=False,
            batch_size=self.batch_size,
            out_shape=self.out_shape,
            columns=(self.start, self.stop),
        )
        ops.dispatch = self.dispatch
        return ops

    def values(self, moved: Any, *, raw: bool = False) -> Any:
        """f at x with x[j] = moved[j - start] for each column j: shape (columns, outputs)."""
        ops = self.ops()
        index = ops.xp.arange(self.start, self.stop, device=self.xa.device)
        if raw:
            ops.flat = ops.xp.astype(ops.flat, moved.dtype)
            out = ops._stacked_raw(index, moved)
        else:
            out = ops._stacked(index, moved)
        return ops.xp.reshape(out, (self.stop - self.start, max(ops.m, 1)))


def _complex_columns(sub: _Columns, part: Any, h: float | None, eps: float) -> _engine.Outcome:
    b = sub.b
    xp = b.xp
    cdtype = _policy.complex_dtype(xp, part.dtype)
    step = h if h is not None else _policy.complex_step(eps, xp.maximum(xp.abs(part), 1.0))
    step = xp.asarray(step, dtype=part.dtype, device=part.device) * xp.ones_like(part)
    moved = xp.astype(part, cdtype) + xp.astype(step, cdtype) * 1j
    values = sub.values(moved, raw=True)
    if not xp.isdtype(values.dtype, "complex floating"):
        raise ArgumentTypeError(
            "method='complex': f returned real values for complex input; it must compute "
            "with its argument in complex (real-analytic f)"
        )
    with quiet():
        cols = xp.astype(xp.imag(values) / step[:, None], part.dtype)
    zero = xp.zeros_like(cols)
    status = xp.where(xp.isfinite(cols), zero, float(DiffStatus.NOT_FINITE))
    return _engine.Outcome(cols, eps * xp.abs(cols), status, step[:, None] + 0.0 * cols, 1)


def _explicit_columns(
    sub: _Columns, part: Any, h: float, method: str, eps: float
) -> _engine.Outcome:
    """Columns with the caller's step, as the book would: no error control."""
    b = sub.b
    xp = b.xp
    stencil = _policy.METHODS[method]
    step = h * xp.ones_like(part)
    with quiet():
        if stencil.a == -stencil.b:
            up, down = part + step, part - step
            cols = (sub.values(up) - sub.values(down)) / (up - down)[:, None]
            if method == "richardson":
                fu, fd = part + step / 2, part - step / 2
                fine = (sub.values(fu) - sub.values(fd)) / (fu - fd)[:, None]
                cols = _policy.extrapolate(cols, fine)
        else:
            sign = 1.0 if stencil.b == 0.0 else -1.0
            moved = part + sign * step
            f0 = xp.astype(sub.values(part), part.dtype)
            cols = (sub.values(moved) - f0) / (moved - part)[:, None]
    cols = xp.astype(cols, part.dtype)
    zero = xp.zeros_like(cols)
    status = xp.where(xp.isfinite(cols), zero, float(DiffStatus.NOT_FINITE))
    return _engine.Outcome(cols, zero + math.nan, status, zero + h, 2)


# -- hessian -----------------------------------------------------------------------------


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def hessian(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    full_output: bool = False,
    on_failure: str = "warn",
    batch_size: int | None = None,
    chunk_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
    workers: Any = None,
) -> Any:
    """Hessian of a scalar-valued f at x, symmetric by construction, error-controlled.

    Second central differences, ``(f(x+h_i e_i) - 2 f(x) + f(x-h_i e_i)) / h_i^2`` on the
    diagonal and ``(f(++) - f(+-) - f(-+) + f(--)) / (4 h_i h_j)`` above it, mirrored
    below, at steps h and h/2: their Richardson extrapolation is the result, their
    difference its error estimate. A kink or jump (``sum(abs(v))`` at 0) makes the two
    disagree and is flagged. Memory: the (n, n) result plus a few of its size, checked
    against the memory available before anything is computed.

    Parameters
    ----------
    f : callable
        Returns a scalar; receives perturbed copies of x (a private copy perturbed in
        place where the backend allows, else new arrays).
    x : array
        Shape ``s``; the result has shape ``s + s``. Integers are promoted to float64.
    h : float, optional
        Step, used as given (one step, no error control). None: ``eps^(1/4) *
        max(|x_i|, 1) * 4`` (the policy's second-difference step), and h/2.
    rtol, atol : float, optional
        Tolerance per entry, norm-wise: ``error <= atol + rtol * max|H|``. Defaults:
        ``rtol`` 1e-5 in float64, 1e-1 in float32 (second differences keep about half
        the digits of first ones); ``atol`` 0.
    full_output : bool
        Return a `DiffResult` instead of warning.
    on_failure : {"warn", "raise"}
        A flagged entry gives an `AccuracyWarning` naming it, or an `AccuracyError`.
    batch_size : int, optional
        f is batched: it receives stacks ``(k, *x.shape)`` of at most ``batch_size``
        perturbed copies and returns k values.
    chunk_size : int, optional
        Perturbations per pass: perturbed copies of x (one element moved for the
        diagonal, a pair above it) built together, where x cannot be perturbed in place
        and f takes one copy at a time. With ``batch_size``, copies are built
        ``batch_size`` at a time instead.
    backend : str or Backend, optional
        Backend for x given as a list or NumPy array.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype.
    workers : int, executor, map-like, distributed.Client or list of devices, optional
        Evaluate the singles and pairs in parallel (see `xgrad.workers`), bit for bit the
        serial result.

    Returns
    -------
    array or DiffResult
        Shape ``x.shape + x.shape``.

    Raises
    ------
    HessianMemoryError
        The result would not fit in the available memory (a MemoryError).

    Examples
    --------
    >>> import numpy as np
    >>> H = hessian(lambda v: v[0]**2 * v[1] + v[1]**3, np.array([1.0, 2.0]))
    >>> np.round(H, 6)
    array([[ 4.,  2.],
           [ 2., 12.]])
    """
    h, xa, b, runner = _checked_input(
        f, x, h, on_failure, chunk_size, batch_size, backend, dtype, workers
    )
    dname = b.dtype_name(xa.dtype)
    r, a = _policy.check_tolerances(
        rtol if rtol is not None else _policy.HESSIAN_RTOL.get(dname), atol, dname
    )
    shape = tuple(xa.shape)
    n = math.prod(shape)
    _check_hessian_memory(n, dname)
    xp = b.xp
    eps, _ = _policy.finfo(xp, xa.dtype)
    flat = xp.reshape(xa, (-1,))
    host = b.to_numpy(flat).astype(np.float64 if dname == "float64" else np.float32)
    steps = _hessian_steps(h, eps, host)
    values = HessianValues(f, b, xa, batch_size, chunk_size)
    if runner is not None:
        values.dispatch = _hessian_dispatch(runner, f, b, xa, x, batch_size, chunk_size)
    try:
        f0, estimates = _hessian_levels(values, host, steps)
    finally:
        if values.dispatch is not None:
            values.dispatch.close()
    hess_host, err, status = _hessian_judged(estimates, steps[-1], f0, eps, r, a)
    hess = xp.reshape(b.asarray(hess_host, dtype=xa.dtype), (*shape, *shape))
    status = status.reshape((*shape, *shape)).astype(np.int64)
    if full_output:
        error = xp.reshape(b.asarray(err, dtype=xa.dtype), (*shape, *shape))
        return DiffResult(hess, error, values.count, "central", steps[-1], status, status == 0)
    _flag_hessian(b, xa, hess_host, err, status, h is not None, r, on_failure)
    return hess


def _flag_hessian(
    b: Backend,
    xa: Any,
    hess_host: np.ndarray,
    err: np.ndarray,
    status: np.ndarray,
    explicit: bool,
    rtol: float,
    on_failure: str,
) -> None:
    """Without full_output: refuse an explicit step's inf/nan, else warn of (or raise for)
    the entries whose status is not 0."""
    if explicit and not bool(np.all(status == 0)):
        from xgrad.errors import NonFiniteError

        raise NonFiniteError("f: not finite at some perturbation of x; the Hessian has inf/nan")
    flag(
        status,
        hess_host.reshape(status.shape),
        err.reshape(status.shape),
        b.to_numpy(xa),
        what="hessian",
        rtol=rtol,
        on_failure=on_failure,
        x_axes=len(xa.shape),
    )


def _hessian_steps(h: float | None, eps: float, host: np.ndarray) -> list[np.ndarray]:
    """Per-element steps of each level: the caller's h, or the policy's step and its half."""
    if h is not None:
        return [np.full(host.size, h)]
    first = _policy.second_step(eps, np.maximum(np.abs(host), 1.0))
    return [first, first / 2]


def _hessian_dispatch(
    runner: Any,
    f: Callable[[Any], Any],
    b: Backend,
    xa: Any,
    x: Any,
    batch_size: int | None,
    chunk_size: int | None,
) -> Any:
    """The `xgrad.workers.Dispatch` that evaluates the singles and pairs."""
    from xgrad import workers as _workers

    return _workers.dispatch(
        runner,
        f=f,
        call=f,
        backend=b,
        arr=xa,
        target=x,
        name="x",
        kind="hessian",
        batch_size=batch_size,
        chunk_size=chunk_size,
    )


def _check_hessian_memory(n: int, dname: str) -> None:
    """Refuse a Hessian of n parameters that would not fit in the memory available."""
    itemsize = 8 if dname == "float64" else 4
    # The result, its error estimate, and the two step levels' pair values on the host.
    need = n * n * (itemsize * 2 + 8 * 4)
    avail = _available_bytes()
    if avail is not None and need > avail:
        raise HessianMemoryError(
            f"x: a Hessian of {n:,} parameters needs about {need / 2**30:.1f} GiB "
            f"({n}^2 entries with their error estimates) and {avail / 2**30:.1f} GiB are "
            "available; pass fewer parameters, or use jacobian of a gradient in chunks"
        )


def _hessian_judged(
    estimates: list[np.ndarray],
    fine_step: np.ndarray,
    f0: float,
    eps: float,
    rtol: float,
    atol: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Hessian, error estimate, status) from the estimates at each step level.

    One level (the caller's h): that estimate, no error estimate (nan), the status says
    only whether it is finite. Two (h and h/2): their Richardson extrapolation
    (`xgrad._policy.extrapolate`), an error of their difference plus rounding, and a
    status judged norm-wise against the tolerance.
    """
    if len(estimates) == 1:
        only = estimates[0]
        explicit = np.where(np.isfinite(only), 0, int(DiffStatus.NOT_FINITE))
        return only, np.full_like(only, np.nan), explicit
    coarse, fine = estimates
    hess = _policy.extrapolate(coarse, fine)
    err = (
        np.abs(fine - coarse)
        + eps * 64.0 * abs(f0) / np.outer(fine_step, fine_step)
        + eps * np.abs(hess)
    )
    finite = np.isfinite(hess) & np.isfinite(err)
    big = np.max(np.abs(np.where(finite, hess, 0.0))) if hess.size else 0.0
    tol = (atol or 0.0) + rtol * big
    status = np.where(err <= tol, 0, int(DiffStatus.TOLERANCE_NOT_MET))
    # A kink or jump: the second difference grows as h shrinks instead of settling.
    grows = np.abs(fine) > 1.5 * np.abs(coarse) + tol
    status = np.where((status != 0) & grows, int(DiffStatus.NOT_DIFFERENTIABLE), status)
    status = np.where(finite, status, int(DiffStatus.NOT_FINITE))
    return hess, err, status


def _hessian_levels(
    values: HessianValues, host: np.ndarray, steps: list[np.ndarray]
) -> tuple[float, list[np.ndarray]]:
    """f at x, and the Hessian estimate at each step level (host float64 arrays)."""
    f0 = values.center()
    estimates = []
    with quiet():
        for st in steps:
            up = (host + st).astype(host.dtype)
            down = (host - st).astype(host.dtype)
            hh = (up.astype(np.float64) - down.astype(np.float64)) / 2.0
            fu, fd = values.singles(up), values.singles(down)
            diag = (fu - 2.0 * f0 + fd) / (hh * hh)
            # (f(++) - f(+0) - f(0+) + 2 f(0) - f(-0) - f(0-) + f(--)) / (2 h_i h_j):
            # two evaluations per pair, the singles shared with the diagonal.
            pp, mm = values.pairs(up, up), values.pairs(down, down)
            single = fu + fd
            off = (pp + mm - single[:, None] - single[None, :] + 2.0 * f0) / (
                2.0 * np.outer(hh, hh)
            )
            est = off.copy()
            np.fill_diagonal(est, diag)
            estimates.append(est)
    return f0, estimates
