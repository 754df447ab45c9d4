"""How f is evaluated at perturbed points, for the one engine in `xgrad._engine`.

Each class supplies ``evaluate(points, active)`` and the elementwise arithmetic the engine
needs, on Python floats or on arrays of any array API namespace:

- `ScalarOps`: f of a Python float (the microsecond path of `numerical_diff`);
- `ElementwiseOps`: an elementwise f, called once on a stack of all stencil points;
- `PerturbOps`: f of a whole array, perturbed one element at a time, either in place
  (the book's semantics: f may read x through a closure) or on stacked copies (immutable
  arrays, ``batch_size``); its values are scalars (gradients) or arrays (Jacobians).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xgrad.backends import Backend
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "HessianValues",
    "ElementwiseOps",
    "PerturbOps",
    "ScalarOps",
    "is_writeable",
    "perturbed_stack",
    "quiet",
    "scalar_value",
    "stack_values",
]

_EPS32 = float(np.finfo(np.float32).eps)


# Probes of f outside its domain (log at x - h < 0) are expected and handled by the engine:
# NumPy's floating-point warnings about them would only alarm the user.
def quiet() -> Any:
    return np.errstate(all="ignore")


class ScalarOps:
    """Python floats; f is called once per point."""

    def __init__(self, f: Callable[[Any], Any], eps: float) -> None:
        self.f = f
        self.eps_f = eps
        self.tiny = 2.2250738585072014e-308
        self.err_floor = 0.0
        self.low_precision = False
        self.preset: dict[int, Any] = {}
        self.preset_top: Any = None
        # f(x), where the first stage needed it for its noise bar (the search reuses it).
        self.preset_fx: Any = None

    def evaluate(self, points: Sequence[float], active: bool) -> list[float]:
        if not active:
            return [math.nan] * len(points)
        with quiet():
            return [self._value(p) for p in points]

    def _value(self, p: float) -> float:
        # math.log/math.sqrt raise where NumPy returns nan: a point outside f's domain is
        # the same event either way, and the engine tries other steps.
        try:
            value = self.f(p)
        except (ArithmeticError, ValueError):
            return math.nan
        if isinstance(value, float):
            return value
        if isinstance(value, np.floating) and value.dtype.itemsize < 8:
            self.low_precision = True
            self.eps_f = max(self.eps_f, float(np.finfo(value.dtype).eps))
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                f"f: expected a real number for a scalar x, found {type(value).__name__} "
                f"{value!r:.80}"
            ) from None

    # -- arithmetic on floats --------------------------------------------------------------
    @staticmethod
    def quiet() -> Any:
        return _NoContext()

    def lift(self, a: Any) -> Any:
        return a

    @staticmethod
    def div(a: float, b: float) -> float:
        try:
            return a / b
        except ZeroDivisionError:
            return math.nan

    @staticmethod
    def where(cond: bool, a: Any, b: Any) -> Any:
        return a if cond else b

    @staticmethod
    def isfinite(a: float) -> bool:
        return math.isfinite(a)

    @staticmethod
    def any(cond: bool) -> bool:
        return bool(cond)

    element_any = element_all = staticmethod(lambda cond: cond)

    @staticmethod
    def logical_not(cond: bool) -> bool:
        return not cond

    @staticmethod
    def maximum(a: float, b: float) -> float:
        return a if a >= b or b != b else b

    @staticmethod
    def minimum(a: float, b: float) -> float:
        return a if a <= b or b != b else b

    @staticmethod
    def abs(a: float) -> float:
        return abs(a)

    @staticmethod
    def full_entry(value: Any) -> Any:
        return value

    @staticmethod
    def zeros_entry() -> float:
        return 0.0

    @staticmethod
    def finite_max(a: float) -> float:
        return a if math.isfinite(a) else 0.0

    @staticmethod
    def finite_or_inf(err: float, value: float) -> float:
        return err if math.isfinite(err) and math.isfinite(value) else math.inf


class _NoContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _ArrayMath:
    """Elementwise arithmetic on arrays of the namespace ``xp`` (entries shaped ``shape``)."""

    def __init__(self, xp: Any, backend: Any, like: Any, entry_shape: tuple[int, ...]) -> None:
        self.xp = xp
        self.backend = backend
        self.dtype = like.dtype
        self.device = like.device
        self.entry_shape = entry_shape
        self.eps_f = float(xp.finfo(like.dtype).eps)
        self.tiny = float(xp.finfo(like.dtype).smallest_normal)
        # Backends that flush subnormal results to zero (XLA on CPU) lose the rounding
        # terms of values near the underflow threshold: no error below tiny / eps there.
        if xp.isdtype(like.dtype, "real floating"):
            real = like.dtype
        else:  # the complex copies of method="complex"
            real = xp.float64 if self.eps_f < 1e-10 else xp.float32
        probe = xp.asarray(self.tiny, dtype=real, device=like.device) / 4.0
        self.err_floor = self.tiny / self.eps_f if not bool(probe > 0.0) else 0.0
        self.low_precision = False
        # Values of f the first stage computed, by level, for the search to reuse.
        self.preset: dict[int, Any] = {}
        self.preset_top: Any = None
        # f(x), where the first stage needed it for its noise bar (the search reuses it).
        self.preset_fx: Any = None

    quiet = staticmethod(quiet)

    def lift(self, a: Any) -> Any:
        return a

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        return a / b

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        if not hasattr(a, "shape") and not hasattr(b, "shape"):
            # The standard's where takes at most one Python scalar.
            a = self.xp.full(cond.shape, a, dtype=self.dtype, device=self.device)
        return self.xp.where(cond, a, b)

    def isfinite(self, a: Any) -> Any:
        return self.xp.isfinite(a)

    def any(self, cond: Any) -> bool:
        return bool(self.xp.any(cond))

    def element_any(self, cond: Any) -> Any:
        return cond

    def element_all(self, cond: Any) -> Any:
        return cond

    def logical_not(self, cond: Any) -> Any:
        return self.xp.logical_not(cond)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.xp.maximum(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.xp.minimum(a, b)

    def abs(self, a: Any) -> Any:
        return self.xp.abs(a)

    def full_entry(self, value: Any) -> Any:
        dtype = self.xp.bool if isinstance(value, bool) else self.dtype
        return self.xp.full(self.entry_shape, value, dtype=dtype, device=self.device)

    def zeros_entry(self) -> Any:
        return self.full_entry(0.0)

    def finite_max(self, a: Any) -> Any:
        xp = self.xp
        return xp.max(xp.where(xp.isfinite(a), a, 0.0))

    def finite_or_inf(self, err: Any, value: Any) -> Any:
        xp = self.xp
        return xp.where(xp.isfinite(err) & xp.isfinite(value), err, math.inf)

    def _as_values(self, out: Any, expected: tuple[int, ...], what: str) -> Any:
        """f's output as a real array of x's dtype, noting when f computed in less."""
        xp, b = self.xp, self.backend
        if not b.owns(out):
            out = b.asarray(out)
        if tuple(out.shape) != expected:
            raise ArgumentError(what.format(shape=tuple(out.shape)))
        if xp.isdtype(out.dtype, "complex floating"):
            raise ArgumentTypeError("f: returned complex values for real input")
        if xp.isdtype(out.dtype, "real floating"):
            eps_out = float(xp.finfo(out.dtype).eps)
            if eps_out > self.eps_f:
                # f rounds to a coarser dtype than x: its noise, not x's, limits the result.
                self.low_precision = True
                self.eps_f = eps_out
        if out.dtype != self.dtype:
            out = xp.astype(out, self.dtype)
        return out


# Small arrays: one call of f on a stack of all stencil points saves per-call overhead.
# Large ones: one call per point, as stacking costs a copy of every point in fresh memory.
_STACK_LIMIT = 2**14


class ElementwiseOps(_ArrayMath):
    """An elementwise f: ``f(X)`` has X's shape; all points go to f in one stacked call."""

    def __init__(self, f: Callable[[Any], Any], xp: Any, backend: Any, x: Any) -> None:
        super().__init__(xp, backend, x, tuple(x.shape))
        self.f = f

    def evaluate(self, points: Sequence[Any], active: Any) -> list[Any]:
        xp = self.xp
        with quiet():
            if math.prod(points[0].shape) > _STACK_LIMIT or len(points) == 1:
                return [self._check(self.f(p), p) for p in points]
            stacked = xp.stack(list(points))
            out = self._check(self.f(stacked), stacked)
        return [out[k, ...] for k in range(len(points))]

    def _check(self, out: Any, arg: Any) -> Any:
        return self._as_values(
            out,
            tuple(arg.shape),
            "f: numerical_diff needs an elementwise f (output shape = input shape); f on "
            f"an array of shape {tuple(arg.shape)} returned shape {{shape}}. Use "
            "numerical_gradient for a scalar-valued f, jacobian for a vector-valued one",
        )


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
            raise ArgumentError(
                "f: expected a scalar (0-d) value, found an array of shape "
                f"{tuple(value.shape)}; numerical_gradient and hessian need a scalar-valued "
                "f (use jacobian for vector-valued f)"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | complex):
        shape = getattr(value, "shape", None)
        if shape is not None and tuple(shape) != ():
            raise ArgumentError(
                f"f: expected a scalar value, found {type(value).__name__} of shape "
                f"{tuple(shape)}; numerical_gradient and hessian need a scalar-valued f"
            )
        try:
            return complex(value) if np.iscomplexobj(value) else float(value)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
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


class PerturbOps(_ArrayMath):
    """f of a whole array x, at x with one element replaced, for every element at once.

    ``x`` is flattened: entries are per element (scalar f, gradients) or rows of shape
    ``(n, m)`` (array f, Jacobian columns, ``out_shape`` the shape of f(x)). ``inplace``:
    write each perturbed element into the caller's own array, call f, and write the exact
    original back (also when f raises); else build perturbed copies (``batch_size`` at a
    time when f takes stacks). Inactive elements are not evaluated (their values are nan).
    """

    def __init__(
        self,
        call: Callable[[Any], Any],
        backend: Any,
        arr: Any,
        *,
        inplace: bool,
        batch_size: int | None,
        out_shape: tuple[int, ...] = (),
        columns: tuple[int, int] | None = None,
    ) -> None:
        xp = backend.xp
        n = math.prod(tuple(arr.shape))
        m = math.prod(out_shape)
        # The elements perturbed: all of x, or the range `columns` (a Jacobian chunk).
        lo, hi = columns if columns is not None else (0, n)
        k = hi - lo
        super().__init__(xp, backend, arr, (k,) if not out_shape else (k, m))
        self.call = call
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.flat = xp.reshape(arr, (-1,))
        self.inplace = inplace
        self.batch_size = batch_size
        self.out_shape = out_shape
        self.n, self.m, self.lo, self.k = n, m, lo, k
        self.count = 0
        # A `xgrad.workers.Dispatch`: f's values come from workers, same numbers.
        self.dispatch: Any = None
        if inplace:
            self._host = backend.to_numpy(arr).reshape(-1).tolist()
            self._where = list(np.ndindex(*self.shape)) if self.shape else [()]

    def lift(self, a: Any) -> Any:
        return a[:, None] if self.out_shape else a

    def element_any(self, cond: Any) -> Any:
        return self.xp.any(cond, axis=1) if self.out_shape else cond

    def element_all(self, cond: Any) -> Any:
        return self.xp.all(cond, axis=1) if self.out_shape else cond

    def evaluate(self, points: Sequence[Any], active: Any) -> list[Any]:
        b = self.backend
        act = b.to_numpy(active).reshape(-1)
        idx = np.flatnonzero(act)
        if self.dispatch is not None:
            return self._dispatched(points, idx)
        with quiet():
            return [self._at(p, idx, bool(act.all())) for p in points]

    def _dispatched(self, points: Sequence[Any], idx: np.ndarray) -> list[Any]:
        """`evaluate` on workers: every point's active elements in one round of tasks."""
        b = self.backend
        self.count += idx.size * len(points)
        full = np.full((self.k, *self._row()), np.nan)
        if idx.size == 0:
            return [b.asarray(full, dtype=self.dtype) for _ in points]
        rows = idx + self.lo
        segments = [(rows, b.to_numpy(p).reshape(-1)[idx]) for p in points]
        out = []
        for host in self.dispatch.run(segments):
            values = self._as_values(b.asarray(host), (idx.size, *self._row()), "{shape}")
            if idx.size == self.k:
                out.append(values)
                continue
            part = full.copy()
            part[idx] = b.to_numpy(values).reshape(part[idx].shape)
            out.append(b.asarray(part, dtype=self.dtype))
        return out

    def worker_rows(self, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """`raw_rows` on the host (a worker's reply)."""
        return self.backend.to_numpy(self.raw_rows(idx, vals))

    def raw_rows(self, idx: np.ndarray, vals: np.ndarray) -> Any:
        """f's values (as f returned them, stacked) with ``x[idx[r]] = vals[r]``, row r.

        What a worker runs for one piece of a round: the serial evaluation, in place or
        on stacked copies as the serial path would do it.
        """
        if self.inplace:
            return self._inplace_raw(idx, vals)
        b = self.backend
        index = b.asarray(idx.astype(np.int64))
        return self._stacked_raw(index, b.asarray(vals, dtype=self.flat.dtype))

    def _at(self, point: Any, idx: np.ndarray, every: bool) -> Any:
        xp, b = self.xp, self.backend
        self.count += idx.size
        full = np.full((self.k, *self._row()), np.nan)
        if idx.size == 0:
            return b.asarray(full, dtype=self.dtype)
        if self.inplace:
            host = b.to_numpy(point).reshape(-1)[idx]
            raw = self._inplace_raw(idx, host)
            values = self._as_values(raw, (idx.size, *self._row()), "{shape}")
        else:
            lo = self.lo
            index = (
                xp.arange(lo, lo + self.k, device=self.device)
                if every
                else b.asarray((idx + lo).astype(np.int64))
            )
            moved = point if every else xp.take(point, b.asarray(idx.astype(np.int64)), axis=0)
            values = self._stacked(index, moved)
        if every:
            return values
        # Scatter the active values into a nan-filled result (on the host: integer-array
        # assignment is not in the array API standard).
        full[idx] = b.to_numpy(values).reshape(full[idx].shape)
        return b.asarray(full, dtype=self.dtype)

    def _inplace_raw(self, idx: np.ndarray, vals: np.ndarray) -> Any:
        """f at x with element ``idx[r]`` set to ``vals[r]`` in place, restored bit for bit."""
        b, arr = self.backend, self.arr
        values = []
        for i, v in zip(idx.tolist(), vals.tolist(), strict=True):
            where = self._where[i]
            try:
                arr[where] = v
                out = self.call(arr)
            finally:
                arr[where] = self._host[i]
            values.append(self._one(out))
        return stack_values(values, b)

    def _row(self) -> tuple[int, ...]:
        return (self.m,) if self.out_shape else ()

    def _one(self, out: Any) -> Any:
        b = self.backend
        if not self.out_shape:
            return scalar_value(out, b)
        out = out if b.owns(out) else b.asarray(out)
        if tuple(out.shape) != self.out_shape:
            raise ArgumentError(
                f"f: returned shape {tuple(out.shape)} for a perturbed x, but "
                f"{self.out_shape} at x; jacobian needs an f whose output shape does not "
                "depend on x's values"
            )
        return self.xp.reshape(out, (self.m,))

    def _stacked(self, index: Any, moved: Any) -> Any:
        out = self._stacked_raw(index, moved)
        return self._as_values(out, (index.shape[0], *self._row()), "{shape}")

    def _stacked_raw(self, index: Any, moved: Any) -> Any:
        """f's values at copies of x with ``moved[r]`` at ``index[r]``, as f returned them."""
        xp, b = self.xp, self.backend
        if self.dispatch is not None:
            self.count += int(index.shape[0])
            (host,) = self.dispatch.run([(b.to_numpy(index), b.to_numpy(moved))])
            return b.asarray(host)
        total = index.shape[0]
        chunk = self.batch_size or max(1, min(total, 2**20 // max(self.n, 1)))
        pieces = []
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            rows = perturbed_stack(xp, self.flat, (index[start:stop], moved[start:stop]))
            if self.batch_size is not None:
                pieces.append(self._batch(xp.reshape(rows, (stop - start, *self.shape))))
            else:
                values = [
                    self._one(self.call(xp.reshape(rows[r, ...], self.shape)))
                    for r in range(stop - start)
                ]
                pieces.append(stack_values(values, b))
        return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)

    def _batch(self, stack: Any) -> Any:
        b = self.backend
        k = stack.shape[0]
        out = self.call(stack)
        out = out if b.owns(out) else b.asarray(out)
        expected = (k, *self.out_shape)
        if tuple(out.shape) != expected:
            raise ArgumentError(
                f"f: with batch_size, f receives a stack of shape {(k, *self.shape)} and must "
                f"return {k} values (shape {expected}), found shape {tuple(out.shape)}"
            )
        return self.xp.reshape(out, (k, *self._row()))


class HessianValues:
    """f at x with one or two elements moved, as host float64 arrays.

    In place on a private copy where the backend allows (two element writes per value,
    no copy of x), else on stacked copies built with ``where``.
    """

    def __init__(
        self,
        f: Callable[[Any], Any],
        b: Backend,
        xa: Any,
        batch_size: int | None,
        chunk_size: int | None,
    ) -> None:
        xp = b.xp
        self.f, self.b, self.xp = f, b, xp
        self.shape = tuple(xa.shape)
        self.n = math.prod(self.shape)
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.work = xp.asarray(xa, copy=True)
        self.inplace = batch_size is None and is_writeable(self.work)
        self.flat = xp.reshape(xa, (-1,))
        self.orig = b.to_numpy(self.flat).tolist()
        self.index = list(np.ndindex(*self.shape)) if self.shape else [()]
        self.count = 0
        # A `xgrad.workers.Dispatch`: singles and pairs come from workers, same numbers.
        self.dispatch: Any = None

    def _float(self, out: Any) -> float:
        """f's value (checked to be a scalar) as a Python float."""
        if type(out) is float:  # the common case, without the checks below (per pair)
            return out
        if isinstance(out, np.floating) and out.dtype.itemsize >= 4:
            return float(out)
        value = scalar_value(out, self.b)
        return float(self.b.to_numpy(value)) if self.b.owns(value) else float(value)

    def center(self) -> float:
        self.count += 1
        return self._float(self.f(self.xp.asarray(self.work, copy=True)))

    def singles(self, moved: np.ndarray) -> np.ndarray:
        if self.dispatch is not None:
            self.count += self.n
            return self.dispatch.run([(np.arange(self.n), moved)])[0]
        if self.inplace:
            out = np.empty(self.n)
            work, idx = self.work, self.index
            for i in range(self.n):
                try:
                    work[idx[i]] = float(moved[i])
                    out[i] = self._float(self.f(work))
                finally:
                    work[idx[i]] = self.orig[i]
            self.count += self.n
            return out
        rows = np.arange(self.n)
        return self._stacked(rows, moved, None, None)

    def pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(n, n) host array: entry (i, j), i < j, is f with x[i] = first[i], x[j] = second[j]."""
        n = self.n
        out = np.zeros((n, n))
        if self.dispatch is not None:
            ii, jj = np.triu_indices(n, 1)
            if ii.size:
                segment = (ii, first[ii], jj, second[jj])
                out[ii, jj] = self.dispatch.run([segment])[0]
            self.count += int(ii.size)
        elif self.inplace:
            work, idx, orig, f = self.work, self.index, self.orig, self.f
            for i in range(n):
                wi = idx[i]
                try:
                    work[wi] = float(first[i])
                    for j in range(i + 1, n):
                        wj = idx[j]
                        try:
                            work[wj] = float(second[j])
                            out[i, j] = self._float(f(work))
                        finally:
                            work[wj] = orig[j]
                finally:
                    work[wi] = orig[i]
            self.count += n * (n - 1) // 2
        else:
            ii, jj = np.triu_indices(n, 1)
            if ii.size:
                out[ii, jj] = self._stacked(ii, first[ii], jj, second[jj])
        return out + out.T

    def worker_rows(
        self,
        i: np.ndarray,
        u: np.ndarray,
        j: np.ndarray | None = None,
        v: np.ndarray | None = None,
    ) -> np.ndarray:
        """f with ``x[i[r]] = u[r]`` (and ``x[j[r]] = v[r]``), row r, as the serial loops
        compute it (a worker's share of singles or pairs)."""
        if not self.inplace:
            return self._stacked(i, u, j, v)
        out = np.empty(i.size)
        work, idx, orig, f = self.work, self.index, self.orig, self.f
        for r in range(i.size):
            wi = idx[i[r]]
            try:
                work[wi] = float(u[r])
                if j is None or v is None:
                    out[r] = self._float(f(work))
                    continue
                wj = idx[j[r]]
                try:
                    work[wj] = float(v[r])
                    out[r] = self._float(f(work))
                finally:
                    work[wj] = orig[j[r]]
            finally:
                work[wi] = orig[i[r]]
        return out

    def _stacked(
        self, i: np.ndarray, u: np.ndarray, j: np.ndarray | None, v: np.ndarray | None
    ) -> np.ndarray:
        b, xp = self.b, self.xp
        total = i.size
        chunk = self.batch_size or self.chunk_size or max(1, min(total, 2**20 // max(self.n, 1)))
        out = np.empty(total)
        dt = self.flat.dtype
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            sel = slice(start, stop)
            first = (b.asarray(i[sel].astype(np.int64)), b.asarray(u[sel], dtype=dt))
            second = None
            if j is not None and v is not None:
                second = (b.asarray(j[sel].astype(np.int64)), b.asarray(v[sel], dtype=dt))
            rows = perturbed_stack(xp, self.flat, first, second)
            k = stop - start
            if self.batch_size is not None:
                res = self.f(xp.reshape(rows, (k, *self.shape)))
                res = res if b.owns(res) else b.asarray(res)
                if tuple(res.shape) != (k,):
                    raise ArgumentError(
                        f"f: with batch_size, f receives a stack of shape {(k, *self.shape)} "
                        f"and must return {k} values, found shape {tuple(res.shape)}"
                    )
                out[sel] = b.to_numpy(res).astype(np.float64)
            else:
                out[sel] = [
                    self._float(self.f(xp.reshape(rows[r, ...], self.shape))) for r in range(k)
                ]
        self.count += total
        return out
