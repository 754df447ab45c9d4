"""Turning per-element statuses into the warning or error a user sees, pointing at their line."""

from __future__ import annotations

from typing import Any

import numpy as np

from xgrad._policy import DiffStatus
from xgrad._warnings import warn
from xgrad.errors import AccuracyError, AccuracyWarning, NonFiniteError

__all__ = ["flag"]

_HINTS = {
    DiffStatus.TOLERANCE_NOT_MET: (
        "try method='richardson', a larger rtol or atol, or full_output=True to inspect it"
    ),
    DiffStatus.NOT_DIFFERENTIABLE: (
        "f has a kink, jump, pole or infinite slope there: no derivative exists; use "
        "method='forward' or 'backward' for a one-sided slope"
    ),
    DiffStatus.NOISY: (
        "f is noisier than its dtype's rounding (does it compute in float32, or round?): "
        "compute f in x's dtype, or pass a larger rtol/atol or an explicit h"
    ),
}
_NAMES = {
    DiffStatus.TOLERANCE_NOT_MET: "tolerance not met",
    DiffStatus.NOT_DIFFERENTIABLE: "not differentiable",
    DiffStatus.NOISY: "noisy",
    DiffStatus.NOT_FINITE: "not finite",
}


def _where(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def flag(
    status: Any,
    df: Any,
    error: Any,
    x_host: np.ndarray,
    *,
    name: str = "x",
    what: str = "numerical_diff",
    rtol: float,
    on_failure: str = "warn",
    result: Any = None,
    x_axes: int | None = None,
) -> None:
    """Raise or warn for the elements whose status is not CONVERGED (host arrays).

    No finite value anywhere: `NonFiniteError` naming the first such element. Otherwise
    an `AccuracyWarning` (or `AccuracyError` with ``on_failure="raise"``) naming the first
    flagged element, its value, the estimate and its error, what went wrong and what to try.
    """
    codes = np.asarray(status).reshape(np.shape(status))
    bad = codes != int(DiffStatus.CONVERGED)
    if not bad.any():
        return
    x_host = np.asarray(x_host)
    # Which axes of an entry index name x's element: the first (gradients) or, for a
    # Jacobian or Hessian, the last x.ndim ones.
    lead = codes.ndim - (x_axes if x_axes is not None else codes.ndim)

    def x_index(index: tuple[int, ...]) -> tuple[int, ...]:
        return index[lead:][: x_host.ndim] if x_axes is not None else index[: x_host.ndim]

    not_finite = codes == int(DiffStatus.NOT_FINITE)
    if not_finite.any():
        index = tuple(int(i) for i in np.argwhere(not_finite)[0]) if codes.ndim else ()
        value = float(x_host[x_index(index)]) if x_host.ndim else float(x_host)
        where = _where(name, x_index(index))
        raise NonFiniteError(
            f"f: not finite around {where} = {value!r}, even with smaller and one-sided "
            "steps; the derivative does not exist there or f fails near it",
            index=index,
            value=value,
        )
    index = tuple(int(i) for i in np.argwhere(bad)[0]) if codes.ndim else ()
    code = DiffStatus(int(codes[index]))
    d = float(np.asarray(df)[index]) if np.ndim(df) else float(df)
    e = float(np.asarray(error)[index]) if np.ndim(error) else float(error)
    xi = x_index(index) if x_host.ndim else ()
    value = float(x_host[xi]) if x_host.ndim else float(x_host)
    more = int(bad.sum()) - 1
    message = (
        f"{what}: {_NAMES[code]} at {_where(name, xi)} = {value!r}"
        + (f" (entry {list(index)})" if len(index) > len(xi) or x_axes is not None else "")
        + f": estimate {d!r} with estimated error {e:.3g} (rtol={rtol:g}); {_HINTS[code]}"
        + (f"; {more} more element(s) flagged" if more else "")
    )
    if on_failure == "raise":
        raise AccuracyError(message, result=result)
    warn(message, AccuracyWarning)
