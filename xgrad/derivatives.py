"""Jacobians and Hessians by finite differences, in memory bounded by the result plus a chunk.

f is called on perturbed copies of x (never on x itself), one per call or, with
``batch_size``, a stack of them per call. Copies are built a chunk at a time, so a Jacobian
of 40,000 parameters needs the result and one chunk, not the O(n^2) temporaries of
``scipy.differentiate.jacobian``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from xgrad import _steps
from xgrad._arrays import as_float_array
from xgrad._richardson import quiet
from xgrad.backends import Backend
from xgrad.backends._base import DtypeLike

__all__ = ["hessian", "jacobian"]

_JACOBIAN_METHODS = ("central", "forward", "backward", "complex")
# Elements of perturbed copies built at once when f takes one copy per call.
_CHUNK_ELEMENTS = 2**20


def _chunk(chunk_size: int | None, batch_size: int | None, n: int) -> int:
    for name, value in (("chunk_size", chunk_size), ("batch_size", batch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name}: expected a positive int or None, found {value!r}")
    if batch_size is not None:
        return batch_size
    if chunk_size is not None:
        return chunk_size
    return max(1, _CHUNK_ELEMENTS // max(n, 1))


def _columns_matrix(b: Backend, rows: int, cols: int, dtype: Any, device: Any, blocks: Any) -> Any:
    """Assemble a (rows, cols) matrix from (start, stop, block) column blocks.

    Writeable backends fill one preallocated result (memory: result + one block);
    immutable ones (JAX) concatenate the blocks at the end.
    """
    xp = b.xp
    out = xp.zeros((rows, cols), dtype=dtype, device=device)
    if _steps.is_writeable(out):
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
    batch_size: int | None = None,
    chunk_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Jacobian of f at x: ``J[i..., j...] = d f(x)[i...] / d x[j...]``.

    The result has shape ``f(x).shape + x.shape``; for vectors, ``J`` is (m, n) with
    ``J[i, j] = d f_i / d x_j`` (so ``jacobian(lambda x: A @ x, x)`` is ``A``, not its
    transpose). Flatten x and f(x) to read any shape as that (m, n) matrix.

    Parameters
    ----------
    f : callable
        Array in, array out (any shapes). It receives perturbed copies of x.
    x : array
        Integer input is promoted to float64.
    h : float, optional
        Step; None: ``4 * eps^(1/3) * max(|x_j|, 1)`` per column (``eps^(1/2)`` for
        one-sided), made representable.
    method : {"central", "forward", "backward", "complex"}
        Evaluations per column: 2, 1, 1, 1 (plus one of f at x).
    batch_size : int, optional
        f receives stacks ``(k, *x.shape)`` of k perturbed copies and returns
        ``(k, *f(x).shape)``.
    chunk_size : int, optional
        Columns computed at once (memory: result + chunk * (x.size + f(x).size)).
    backend : str or Backend, optional
        Backend for x given as a list or NumPy array.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype.

    Returns
    -------
    array
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
    if not callable(f):
        raise TypeError(f"f: expected a callable, found {type(f).__name__}")
    _steps.check_method(method, _JACOBIAN_METHODS)
    h = _steps.check_step(h)
    xa, b = as_float_array(x, backend=backend, dtype=dtype, name="x")
    xp = b.xp
    shape = tuple(xa.shape)
    n = math.prod(shape)
    eps, _ = _steps.finfo(xp, xa.dtype)
    chunk = _chunk(chunk_size, batch_size, n)
    f0 = f(xa)
    f0 = f0 if b.owns(f0) else b.asarray(f0)
    out_shape = tuple(f0.shape)
    m = math.prod(out_shape)
    flat = xp.reshape(xa, (-1,))
    if method == "complex":
        cdtype = _steps.complex_dtype(xp, xa.dtype)
        step = h if h is not None else eps**2 * xp.maximum(xp.abs(flat), 1.0)
        step = xp.asarray(step, dtype=xa.dtype, device=xa.device) * xp.ones_like(flat)
        base = xp.astype(flat, cdtype)
        offsets = [(base + xp.astype(step, cdtype) * 1j, None)]
    else:
        if h is None:
            exponent = 1 / 3 if method == "central" else 1 / 2
            step = _steps.GRADIENT_STEP_FACTOR * eps**exponent * xp.maximum(xp.abs(flat), 1.0)
        else:
            step = h * xp.ones_like(flat)
        signs = {"central": (1.0, -1.0), "forward": (1.0,), "backward": (-1.0,)}[method]
        base = flat
        offsets = [(flat + s * step, s) for s in signs]

    def block(start: int, stop: int) -> Any:
        idx = xp.arange(start, stop, device=xa.device)
        sel = (slice(start, stop),)
        values = []
        for moved, _ in offsets:
            v = _steps.eval_perturbed(
                f, b, base, shape, (idx, moved[sel]), batch_size=batch_size, out_shape=None
            )
            if tuple(v.shape[1:]) != out_shape:
                raise ValueError(
                    f"f: returned shape {tuple(v.shape[1:])} for a perturbed x, but "
                    f"{out_shape} at x"
                )
            values.append(xp.reshape(v, (stop - start, m)))
        with quiet():
            if method == "complex":
                if not xp.isdtype(values[0].dtype, "complex floating"):
                    raise TypeError(
                        "method='complex': f returned real values for complex input; it "
                        "must compute with its argument in complex (real-analytic f)"
                    )
                cols = xp.imag(values[0]) / step[sel][:, None]
            elif method == "central":
                width = offsets[0][0][sel] - offsets[1][0][sel]
                cols = (values[0] - values[1]) / width[:, None]
            else:
                sign = offsets[0][1]
                width = sign * (offsets[0][0][sel] - flat[sel])
                f0_flat = xp.reshape(f0, (1, m))
                cols = sign * (values[0] - f0_flat) / width[:, None]
        cols = xp.astype(cols, xa.dtype)
        if not bool(xp.all(xp.isfinite(cols))):
            bad = np.argwhere(~np.isfinite(b.to_numpy(cols)))[0]
            j = int(bad[0]) + start
            where = ", ".join(str(int(k)) for k in np.unravel_index(j, shape))
            raise ValueError(
                f"f: not finite near x[{where}] = {float(b.to_numpy(flat)[j])!r} (column "
                f"{j}); try method='forward' or 'backward' at a domain edge"
            )
        return start, stop, xp.permute_dims(cols, (1, 0))

    blocks = (block(s, min(n, s + chunk)) for s in range(0, n, chunk))
    jac = _columns_matrix(b, m, n, xa.dtype, xa.device, blocks)
    return xp.reshape(jac, (*out_shape, *shape))


def hessian(
    f: Callable[[Any], Any],
    x: Any,
    h: float | None = None,
    *,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Hessian of a scalar-valued f at x, symmetric by construction.

    Second central differences: ``(f(x+h_i e_i) - 2 f(x) + f(x-h_i e_i)) / h_i^2`` on the
    diagonal and ``(f(++) - f(+-) - f(-+) + f(--)) / (4 h_i h_j)`` above it, mirrored below
    (``2 n^2 + 1`` evaluations). Memory: the (n, n) result plus one chunk of perturbed
    copies (JAX, whose arrays are immutable, also holds the rows once more).

    Parameters
    ----------
    f : callable
        Returns a scalar; receives perturbed copies of x.
    x : array
        Shape ``s``; the result has shape ``s + s``. Integers are promoted to float64.
    h : float, optional
        Step; None: ``eps^(1/4) * max(|x_i|, 1)``, made representable.
    batch_size : int, optional
        f receives stacks ``(k, *x.shape)`` and returns k values.
    chunk_size : int, optional
        Perturbed copies built at once.
    backend : str or Backend, optional
        Backend for x given as a list or NumPy array.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype.

    Returns
    -------
    array
        Shape ``x.shape + x.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> H = hessian(lambda v: v[0]**2 * v[1] + v[1]**3, np.array([1.0, 2.0]))
    >>> np.round(H, 6)
    array([[ 4.,  2.],
           [ 2., 12.]])
    """
    if not callable(f):
        raise TypeError(f"f: expected a callable, found {type(f).__name__}")
    h = _steps.check_step(h)
    xa, b = as_float_array(x, backend=backend, dtype=dtype, name="x")
    xp = b.xp
    shape = tuple(xa.shape)
    n = math.prod(shape)
    eps, _ = _steps.finfo(xp, xa.dtype)
    chunk = _chunk(chunk_size, batch_size, n)
    flat = xp.reshape(xa, (-1,))
    step = h * xp.ones_like(flat) if h is not None else eps**0.25 * xp.maximum(xp.abs(flat), 1.0)
    up, down = flat + step, flat - step
    hh = (up - down) / 2.0
    hh_host = b.to_numpy(hh)
    f0 = _steps.scalar_value(f(xa), b)
    f0 = f0 if b.owns(f0) else b.asarray(f0)

    def values(i: Any, u: Any, second: tuple[Any, Any] | None = None) -> Any:
        out = []
        m = i.shape[0]
        for start in range(0, m, chunk):
            sel = (slice(start, min(m, start + chunk)),)
            sec = None if second is None else (second[0][sel], second[1][sel])
            out.append(
                _steps.eval_perturbed(
                    f, b, flat, shape, (i[sel], u[sel]), sec, batch_size=batch_size
                )
            )
        return out[0] if len(out) == 1 else xp.concat(out, axis=0)

    all_idx = xp.arange(n, device=xa.device)
    with quiet():
        diag = (values(all_idx, up) - 2.0 * f0 + values(all_idx, down)) / (hh * hh)
    diag = xp.astype(diag, xa.dtype)

    def rows() -> Any:
        for i in range(n):
            cols = np.arange(i + 1, n)
            if cols.size == 0:
                yield i, None
                continue
            ii = b.asarray(np.full(cols.size, i, dtype=np.int64))
            jj = b.asarray(cols.astype(np.int64))
            ui, di = (
                up[i] * xp.ones_like(jj, dtype=xa.dtype),
                down[i] * xp.ones_like(jj, dtype=xa.dtype),
            )
            uj, dj = xp.take(up, jj, axis=0), xp.take(down, jj, axis=0)
            with quiet():
                total = (
                    values(ii, ui, (jj, uj))
                    - values(ii, ui, (jj, dj))
                    - values(ii, di, (jj, uj))
                    + values(ii, di, (jj, dj))
                )
                denom = b.asarray(4.0 * hh_host[i] * hh_host[i + 1 :], dtype=xa.dtype)
                yield i, xp.astype(total, xa.dtype) / denom

    hess = _symmetric(b, n, xa.dtype, xa.device, diag, rows())
    if not bool(xp.all(xp.isfinite(hess))):
        raise ValueError("f: not finite at some perturbation of x; the Hessian has inf/nan")
    return xp.reshape(hess, (*shape, *shape))


def _symmetric(b: Backend, n: int, dtype: Any, device: Any, diag: Any, rows: Any) -> Any:
    """(n, n) matrix from its diagonal and the rows of its strict upper triangle."""
    xp = b.xp
    out = xp.zeros((n, n), dtype=dtype, device=device)
    if _steps.is_writeable(out):
        for i, row in rows:
            out[i, i] = diag[i]
            if row is not None:
                out[i, i + 1 :] = row
                out[i + 1 :, i] = row
        return out
    full = []
    for i, row in rows:
        parts = [xp.zeros((i,), dtype=dtype, device=device), diag[i : i + 1]]
        if row is not None:
            parts.append(row)
        full.append(xp.concat(parts))
    upper = xp.stack(full) if full else out
    ar = xp.arange(n, device=device)
    return xp.where(ar[:, None] <= ar[None, :], upper, xp.permute_dims(upper, (1, 0)))
