"""Gradient checking: backprop (or any analytic gradient) against numerical differences.

:func:`gradcheck` is the book's ``gradient_check.py`` made into a test that can fail: it
reports, per parameter, the largest absolute and relative difference and the mean absolute
difference (what the book prints), and decides pass/fail with a tolerance chosen for the
dtype. The logic, in three steps:

1. **Reference.** A central difference ``(f(p+) - f(p-)) / (p+ - p-)`` per element, where
   ``p+- = p +- h`` rounded to the dtype. In float64 it is taken in float64 (``h = 1e-4``,
   the book's). In float32 a float32 central difference is too noisy to see a 1e-3 error
   (the loss itself is rounded at ~1e-7, the change ``g * h`` is ~1e-6), so the reference is
   taken on a float64 copy of the point (the input, or the net through its ``astype``).
   Where float64 is unavailable (JAX without x64), it is the Richardson extrapolation
   ``(4 D(h/2) - D(h)) / 3`` of float32 central differences with a larger step.
2. **Compare.** Differences are measured relative to the parameter's scale, the largest
   ``|reference|`` entry: ``max_rel = max|analytic - reference| / max|reference|``. An
   element-wise relative error would explode on entries that are ~0. Tolerances: float64
   ``1e-6`` (the O(h^2) truncation of the reference is ~1e-9 for the book's nets); float32
   ``1e-4`` (~840 float32 epsilons; float32 backprop of the book's nets is within ~1e-6,
   so there is a 100x margin against false alarms and a 10x margin to catch a 1e-3 error).
3. **Kinks.** Where ``p - h`` and ``p + h`` lie on two sides of a kink (ReLU at 0), the
   central difference averages two slopes and misses the derivative. Such elements show
   one-sided slopes ``D+ = (f(p+) - f(p)) / (p+ - p)`` and ``D- = (f(p) - f(p-)) / (p - p-)``
   that disagree by at least the mismatch. They are counted as ``kinks`` and left out of
   pass/fail; every other element must be within tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device

from xgrad import _policy
from xgrad._arrays import as_float_array, to_numpy
from xgrad.backends import Backend, resolve_backend
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = ["GradcheckResult", "ParamCheck", "gradcheck"]

_RTOL = {"float64": 1e-6, "float32": 1e-4}
_METHODS = ("auto", "central", "float64", "richardson")

# (up, down, step_up, step_down): f(p+) - f(p), f(p-) - f(p), p+ - p, p- - p per element.
_Differences = tuple[Any, Any, Any, Any]


@dataclass(frozen=True)
class ParamCheck:
    """The comparison for one parameter (or input) array.

    Attributes
    ----------
    max_abs : float
        ``max |analytic - reference|`` over the elements not at a kink.
    max_rel : float
        ``max_abs / scale``.
    mean_abs : float
        Mean ``|analytic - reference|`` over all elements (the book's gradient_check.py).
    scale : float
        ``max |reference|`` (``max |analytic|`` if that is 0).
    kinks : int
        Elements whose one-sided slopes disagree at least as much as the mismatch.
    failed : int
        Other elements with ``|analytic - reference| > rtol * scale``.
    analytic, reference : numpy.ndarray
        Host copies of both gradients (float64), for inspection.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    scale: float
    kinks: int
    failed: int
    rtol: float
    analytic: np.ndarray = field(repr=False)
    reference: np.ndarray = field(repr=False)
    kink_mask: np.ndarray = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True)
class GradcheckResult:
    """Outcome of :func:`gradcheck`; true in a boolean context if every parameter passed.

    ``str(result)`` (or :meth:`report`) is a table with one row per parameter.
    """

    params: dict[str, ParamCheck]
    backend: str
    dtype: str
    reference: str
    h: float
    rtol: float

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.params.values())

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, key: str) -> ParamCheck:
        return self.params[key]

    def report(self) -> str:
        head = (
            f"gradcheck on {self.backend}, {self.dtype}: reference {self.reference},"
            f" h={self.h:g}, rtol={self.rtol:g} (relative to max|reference|)"
        )
        cols = (
            "param",
            "shape",
            "max abs diff",
            "max rel diff",
            "mean abs diff",
            "kinks",
            "result",
        )
        rows = [cols]
        for p in self.params.values():
            verdict = "ok" if p.passed else f"FAIL ({p.failed} elements)"
            rows.append(
                (
                    p.name,
                    "x".join(map(str, p.shape)) or "()",
                    f"{p.max_abs:.3e}",
                    f"{p.max_rel:.3e}",
                    f"{p.mean_abs:.3e}",
                    str(p.kinks),
                    verdict,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        notes = []
        if any(p.kinks for p in self.params.values()):
            notes.append(
                "kinks: elements whose one-sided slopes disagree by more than the"
                " mismatch, as where p-h and p+h straddle a ReLU kink; the central"
                " difference is no derivative there, so they are not judged"
            )
        return "\n".join([head, *lines, *notes, "PASSED" if self.passed else "FAILED"])

    def __str__(self) -> str:
        return self.report()


# -- numerical differences ---------------------------------------------------------------
def _is_model(target: Any) -> bool:
    return all(hasattr(target, a) for a in ("params", "loss", "gradient"))


def _scalar(value: Any, what: str) -> float:
    try:
        out = float(to_numpy(value))
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"{what}: expected a scalar result, found {type(value).__name__} ({exc})"
        ) from None
    return out


def _perturbed(xp: Any, flat: Any, k: int, value: Any) -> Any:
    # A new array (JAX arrays are immutable): element k replaced by `value`.
    index = xp.arange(flat.shape[0], device=_device(flat))
    return xp.where(index == k, value, flat)


def _element_differences(f: Callable[[Any], float], x: Any, h: float) -> _Differences:
    """``(up, down, step_up, step_down)`` of scalar ``f`` at every element of array ``x``."""
    xp = array_namespace(x)
    shape = tuple(x.shape)
    flat = xp.reshape(x, (-1,))
    plus, minus = flat + h, flat - h
    up = np.empty(flat.shape[0])
    down = np.empty(flat.shape[0])
    base = f(x)
    for k in range(flat.shape[0]):
        up[k] = f(xp.reshape(_perturbed(xp, flat, k, plus), shape)) - base
        down[k] = f(xp.reshape(_perturbed(xp, flat, k, minus), shape)) - base
    host = to_numpy(flat).astype(np.float64)
    step_up = to_numpy(plus).astype(np.float64) - host
    step_down = to_numpy(minus).astype(np.float64) - host
    return (
        up.reshape(shape),
        down.reshape(shape),
        step_up.reshape(shape),
        step_down.reshape(shape),
    )


def _model_differences(model: Any, x: Any, t: Any, h: float) -> dict[str, _Differences]:
    """Per-parameter differences of ``model.loss(x, t)``.

    Uses the model's own ``loss_differences(x, t, h)`` when it has one (TwoLayerNet: fast);
    otherwise perturbs one element at a time, replacing the entry of ``model.params``
    (arrays are not modified in place, so immutable JAX arrays work too).
    """
    own = getattr(model, "loss_differences", None)
    if callable(own):
        return {
            k: tuple(to_numpy(a).astype(np.float64) for a in v)  # type: ignore[misc]
            for k, v in own(x, t, h).items()
        }
    out = {}
    for key in list(model.params):
        original = model.params[key]

        def f(p: Any, key: str = key) -> float:
            model.params[key] = p
            return _scalar(model.loss(x, t), "model.loss")

        try:
            out[key] = _element_differences(f, original, h)
        finally:
            model.params[key] = original
    return out


def _central(d: _Differences) -> np.ndarray:
    up, down, step_up, step_down = d
    return (up - down) / (step_up - step_down)


def _one_sided(d: _Differences) -> tuple[np.ndarray, np.ndarray]:
    up, down, step_up, step_down = d
    return up / step_up, down / step_down


# -- gradcheck -------------------------------------------------------------------------
def gradcheck(
    target: Any,
    *inputs: Any,
    grad: Callable[[Any], Any] | Any = None,
    h: float | None = None,
    rtol: float | None = None,
    method: str = "auto",
    backend: str | Backend | None = None,
) -> GradcheckResult:
    """Check an analytic gradient against numerical differences.

    Parameters
    ----------
    target : model or callable
        A model with ``params`` (dict of arrays), ``loss(x, t)`` and ``gradient(x, t)``
        (the book's nets; :class:`xgrad.nn.TwoLayerNet`), called as
        ``gradcheck(net, x, t)``; or a scalar function ``f(x)``, called as
        ``gradcheck(f, x, grad=g)``.
    *inputs :
        ``x, t`` for a model; ``x`` (one array) for a function.
    grad : callable or array
        Function mode only: the analytic gradient, ``grad(x)`` or its value at ``x``.
    h : float, optional
        Step of the central differences (default: 1e-4 in float64, 1e-3 in float32; for
        ``method="richardson"`` 1e-3 and 1e-2, halved once).
    rtol : float, optional
        Tolerance on ``|analytic - reference| / max|reference|`` per parameter (default:
        1e-6 in float64, 1e-4 in float32).
    method : {"auto", "central", "float64", "richardson"}
        How the reference is computed: ``"central"`` in the dtype of the gradient,
        ``"float64"`` on a float64 copy, ``"richardson"`` as ``(4 D(h/2) - D(h)) / 3`` in
        the dtype of the gradient. ``"auto"``: central in float64; in float32, float64 if
        the backend has it (and a model has ``astype``), else Richardson.
    backend : str or Backend, optional
        Backend of the inputs (default: theirs).

    Returns
    -------
    GradcheckResult
        True if every parameter passed; ``str()`` gives the table.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, -2.0, 3.0])
    >>> result = gradcheck(lambda v: (v ** 3).sum(), x, grad=lambda v: 3 * v ** 2)
    >>> bool(result), result["x"].max_rel < 1e-8
    (True, True)
    >>> bool(gradcheck(lambda v: (v ** 3).sum(), x, grad=lambda v: 3.003 * v ** 2))
    False
    """
    if method not in _METHODS:
        raise ArgumentError(f"method: expected one of {_METHODS}, found {method!r}")
    if _is_model(target):
        if len(inputs) != 2 or grad is not None:
            raise ArgumentTypeError(
                "gradcheck(model, x, t): a model takes exactly x and t, no grad="
            )
        return _check_model(target, inputs[0], inputs[1], h, rtol, method, backend)
    if not callable(target):
        raise ArgumentTypeError(
            "target: expected a model (params, loss, gradient) or a scalar function, found"
            f" {type(target).__name__}"
        )
    if len(inputs) != 1 or grad is None:
        raise ArgumentTypeError("gradcheck(f, x, grad=g): a function takes one input x and grad=")
    return _check_function(target, inputs[0], grad, h, rtol, method, backend)


def _resolve_method(method: str, dtype: str, b: Backend, can_upcast: bool) -> str:
    if method != "auto":
        if method == "float64" and not b.supports_float64:
            raise ArgumentError(f"method: float64 is not available on {b.name}: {b.float64_error}")
        return method
    if dtype == "float64":
        return "central"
    return "float64" if (b.supports_float64 and can_upcast) else "richardson"


def _defaults(method: str, dtype: str, h: float | None, rtol: float | None) -> tuple[float, float]:
    if h is None:
        h = _policy.reference_step(
            "richardson" if method == "richardson" else "central",
            "float64" if method == "float64" else dtype,
        )
    if not (isinstance(h, int | float) and math.isfinite(h) and h > 0):
        raise ArgumentError(f"h: expected a finite number > 0, found {h!r}")
    if rtol is None:
        rtol = _RTOL[dtype]
    if not (isinstance(rtol, int | float) and rtol > 0):
        raise ArgumentError(f"rtol: expected a number > 0, found {rtol!r}")
    return float(h), float(rtol)


def _reference(
    diffs: Callable[[float], dict[str, _Differences]], method: str, h: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reference gradients and the one-sided-slope disagreement ``|D+ - D-|`` per key."""

    def spread(d: _Differences) -> np.ndarray:
        forward, backward = _one_sided(d)
        return np.abs(forward - backward)

    if method == "richardson":
        # A kink straddled by the coarse step spoils the extrapolation even if the fine
        # step misses it: take the larger disagreement of the two.
        coarse, fine = diffs(h), diffs(h / 2)
        ref = {k: _policy.extrapolate(_central(coarse[k]), _central(fine[k])) for k in fine}
        return ref, {k: np.maximum(spread(coarse[k]), spread(fine[k])) for k in fine}
    d = diffs(h)
    return {k: _central(v) for k, v in d.items()}, {k: spread(v) for k, v in d.items()}


def _compare(
    name: str, analytic: Any, reference: np.ndarray, spread: np.ndarray, rtol: float
) -> ParamCheck:
    a = to_numpy(analytic).astype(np.float64)
    if a.shape != reference.shape:
        raise ArgumentError(
            f"gradient[{name!r}]: expected shape {reference.shape}, found {a.shape}"
        )
    diff = np.abs(a - reference)
    scale = float(np.max(np.abs(reference), initial=0.0)) or float(np.max(np.abs(a), initial=0.0))
    limit = rtol * scale
    over = ~(diff <= limit)  # NaN counts as a failure
    kink = over & (diff <= spread)
    failed = over & ~kink
    judged = diff[~kink]
    max_abs = float(np.max(judged, initial=0.0)) if not np.isnan(judged).any() else math.nan
    return ParamCheck(
        name=name,
        shape=tuple(a.shape),
        max_abs=max_abs,
        max_rel=max_abs / scale if scale else (0.0 if max_abs == 0 else math.inf),
        mean_abs=float(np.mean(diff)) if diff.size else 0.0,
        scale=scale,
        kinks=int(np.count_nonzero(kink)),
        failed=int(np.count_nonzero(failed)),
        rtol=rtol,
        analytic=a,
        reference=reference,
        kink_mask=kink,
    )


def _rounded(v: Any, dtype: str) -> Any:
    """A floating array of higher precision than ``dtype``, rounded to ``dtype``."""
    try:
        xp = array_namespace(v)
    except TypeError:
        return v
    if xp.isdtype(v.dtype, "real floating") and v.dtype != getattr(xp, dtype):
        return xp.astype(v, getattr(xp, dtype))
    return v


def _describe(method: str, dtype: str) -> str:
    return {
        "central": f"{dtype} central difference",
        "float64": "float64 central difference on a float64 copy",
        "richardson": f"{dtype} Richardson extrapolation of central differences (h, h/2)",
    }[method]


def _check_model(
    model: Any,
    x: Any,
    t: Any,
    h: float | None,
    rtol: float | None,
    method: str,
    backend: str | Backend | None,
) -> GradcheckResult:
    params = model.params
    if not isinstance(params, dict) or not params:
        raise ArgumentTypeError("model.params: expected a non-empty dict of arrays")
    first = next(iter(params.values()))
    b = resolve_backend(backend, first)
    dtype = b.dtype_name(first.dtype)
    if dtype not in _RTOL:
        raise ArgumentTypeError(f"model.params: expected float32 or float64 arrays, found {dtype}")
    method = _resolve_method(method, dtype, b, callable(getattr(model, "astype", None)))
    h, rtol = _defaults(method, dtype, h, rtol)
    if method == "float64" and dtype == "float32":
        # The float32 model rounds float64 inputs to float32; the float64 copy must see
        # those same rounded values, or the two gradients are taken at different points.
        x, t = _rounded(x, dtype), _rounded(t, dtype)
    analytic = model.gradient(x, t)
    ref_model = model.astype("float64") if method == "float64" else model
    reference, spread = _reference(lambda s: _model_differences(ref_model, x, t, s), method, h)
    if set(analytic) != set(reference):
        raise ArgumentError(
            f"model.gradient: expected keys {sorted(reference)}, found {sorted(analytic)}"
        )
    rows = {k: _compare(k, analytic[k], reference[k], spread[k], rtol) for k in reference}
    return GradcheckResult(rows, b.spec, dtype, _describe(method, dtype), h, rtol)


def _check_function(
    f: Callable[[Any], Any],
    x: Any,
    grad: Any,
    h: float | None,
    rtol: float | None,
    method: str,
    backend: str | Backend | None,
) -> GradcheckResult:
    x, b = as_float_array(x, backend=backend, name="x")
    dtype = b.dtype_name(x.dtype)
    method = _resolve_method(method, dtype, b, True)
    h, rtol = _defaults(method, dtype, h, rtol)
    analytic = grad(x) if callable(grad) else grad
    point = b.xp.astype(x, b.float_dtype("float64")) if method == "float64" else x

    def diffs(step: float) -> dict[str, _Differences]:
        return {"x": _element_differences(lambda v: _scalar(f(v), "f(x)"), point, step)}

    reference, spread = _reference(diffs, method, h)
    rows = {"x": _compare("x", analytic, reference["x"], spread["x"], rtol)}
    return GradcheckResult(rows, b.spec, dtype, _describe(method, dtype), h, rtol)
