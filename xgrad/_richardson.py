"""Central-difference tableaus with Richardson extrapolation, for Python floats or arrays.

One algorithm serves both: an ``ops`` object supplies the few operations that differ
between Python floats (the fast path of ``numerical_diff`` on a scalar, ~microseconds) and
arrays of any array API namespace (where all stencil points go to f in one stacked call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["ArrayOps", "ScalarOps", "central_tableau", "one_sided", "quiet"]


# Host probes of f outside its domain (log at x - h < 0) are expected and handled here:
# NumPy's floating-point warnings about them would only alarm the user.
def quiet() -> Any:
    return np.errstate(all="ignore")


# Small arrays: one call of f on a stack of all stencil points saves per-call overhead.
# Large ones: one call per point, as stacking costs a copy of every point in fresh memory.
_STACK_LIMIT = 2**14


class ScalarOps:
    """Operations on Python floats; f is called once per stencil point."""

    def __init__(self, f: Callable[[Any], Any]) -> None:
        self.f = f

    def evaluate(self, points: Sequence[float]) -> list[float]:
        return [self._value(p) for p in points]

    def _value(self, p: float) -> float:
        # math.log/math.sqrt raise where NumPy returns nan: a stencil point outside f's
        # domain is the same event either way, and the caller retries with other steps.
        try:
            value = self.f(p)
        except (ArithmeticError, ValueError):
            return math.nan
        return _as_float(value)

    @staticmethod
    def div(a: float, b: float) -> float:
        return a / b if b != 0.0 else math.nan

    @staticmethod
    def where(cond: bool, a: Any, b: Any) -> Any:
        return a if cond else b

    @staticmethod
    def isfinite(a: float) -> bool:
        return math.isfinite(a)

    @staticmethod
    def any(cond: bool) -> bool:
        return bool(cond)

    @staticmethod
    def logical_not(cond: bool) -> bool:
        return not cond

    @staticmethod
    def maximum(a: float, b: float) -> float:
        return a if a >= b else b

    @staticmethod
    def abs(a: float) -> float:
        return abs(a)


class ArrayOps:
    """Operations on arrays; f is called once on a stack of all stencil points.

    ``f`` must be elementwise: given an array of shape ``(k, *shape)`` it returns one of
    the same shape.
    """

    def __init__(self, f: Callable[[Any], Any], xp: Any, backend: Any) -> None:
        self.f = f
        self.xp = xp
        self.backend = backend

    def evaluate(self, points: Sequence[Any]) -> list[Any]:
        xp = self.xp
        if math.prod(points[0].shape) > _STACK_LIMIT:
            return [self._check(self.f(p), p) for p in points]
        stacked = xp.stack(list(points))
        out = self._check(self.f(stacked), stacked)
        return [out[k, ...] for k in range(len(points))]

    def _check(self, out: Any, arg: Any) -> Any:
        xp = self.xp
        if not self.backend.owns(out):
            out = self.backend.asarray(out)
        if tuple(out.shape) != tuple(arg.shape):
            raise ValueError(
                f"f: numerical_diff needs an elementwise f (output shape = input shape); "
                f"f on an array of shape {tuple(arg.shape)} returned shape "
                f"{tuple(out.shape)}. Use numerical_gradient for a scalar-valued f, "
                "jacobian for a vector-valued one"
            )
        if xp.isdtype(out.dtype, "complex floating"):
            raise TypeError("f: returned complex values for real input")
        if not xp.isdtype(out.dtype, "real floating"):
            out = xp.astype(out, arg.dtype)
        return out

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        return a / b

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.xp.where(cond, a, b)

    def isfinite(self, a: Any) -> Any:
        return self.xp.isfinite(a)

    def any(self, cond: Any) -> bool:
        return bool(self.xp.any(cond))

    def logical_not(self, cond: Any) -> Any:
        return self.xp.logical_not(cond)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.xp.maximum(a, b)

    def abs(self, a: Any) -> Any:
        return self.xp.abs(a)


def _as_float(value: Any) -> float:
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"f: expected a real number for a scalar x, found {type(value).__name__} {value!r:.80}"
        ) from None


def _finite_or_inf(ops: Any, err: Any, value: Any) -> Any:
    """The error estimate, or inf where the value or the estimate is not finite."""
    ok = ops.isfinite(value)
    ok = ok & ops.isfinite(err) if not isinstance(ok, bool) else ok and math.isfinite(err)
    return ops.where(ok, err, math.inf)


def central_tableau(
    ops: Any, x: Any, scale: Any, top: float, levels: int, eps: float
) -> tuple[Any, Any, Any]:
    # levels >= 2: the error estimate needs two steps.
    """Best Richardson-extrapolated central difference from steps ``top*scale/2**k``.

    Returns (derivative, error estimate, step). Each step is made representable (the
    denominator is the actual distance between the stencil points). The error estimate of
    a tableau entry is the larger of its distances to the two entries it was built from
    (Numerical Recipes' dfridr), plus roundoff ``eps*max|f|/h``; the entry with the
    smallest estimate wins, per element. Non-finite entries never win.
    """
    steps = [scale * (top / 2.0**k) for k in range(levels)]
    plus = [x + h for h in steps]
    minus = [x - h for h in steps]
    with quiet():
        values = ops.evaluate(plus + minus)
        fp, fm = values[:levels], values[levels:]
        width = [plus[k] - minus[k] for k in range(levels)]
        diffs = [ops.div(fp[k] - fm[k], width[k]) for k in range(levels)]
        best, err, step = diffs[0], None, steps[0]
        prev = [diffs[0]]
        for k in range(1, levels):
            rnd = ops.div(2.0 * eps * ops.maximum(ops.abs(fp[k]), ops.abs(fm[k])), width[k])
            row = [diffs[k]]
            for j in range(1, k + 1):
                t = row[j - 1] + (row[j - 1] - prev[j - 1]) / (4.0**j - 1.0)
                e = ops.maximum(ops.abs(t - row[j - 1]), ops.abs(t - prev[j - 1]))
                e = _finite_or_inf(ops, e + 2.0 * rnd + eps * ops.abs(t), t)
                if err is None:
                    best, err, step = t, e, steps[k]
                else:
                    better = e < err
                    best = ops.where(better, t, best)
                    err = ops.where(better, e, err)
                    step = ops.where(better, steps[k], step)
                row.append(t)
            prev = row
    return best, err, step


def one_sided(ops: Any, x: Any, scale: Any, sign: float, eps: float) -> tuple[Any, Any, Any]:
    """Second-order one-sided difference ``(-3 f(x) + 4 f(x+h) - f(x+2h)) / 2h``, h = sign*step.

    For points at the edge of f's domain. The error estimate is the distance to the
    first-order difference plus roundoff.
    """
    h = scale * (sign * eps ** (1.0 / 3.0))
    x1 = x + h
    h = x1 - x
    x2 = x + 2.0 * h
    with quiet():
        f0, f1, f2 = ops.evaluate([x, x1, x2])
        d2 = ops.div(-3.0 * f0 + 4.0 * f1 - f2, 2.0 * h)
        d1 = ops.div(f1 - f0, h)
        rnd = ops.div(8.0 * eps * ops.maximum(ops.abs(f0), ops.abs(f2)), ops.abs(h))
        err = _finite_or_inf(ops, ops.abs(d2 - d1) + rnd, d2)
    return d2, err, h
