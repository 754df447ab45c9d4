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
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xgrad import _compat, _policy
from xgrad._arrays import as_float_array, to_numpy
from xgrad.backends import Backend, resolve_backend
from xgrad.errors import (
    AccuracyWarning,
    ArgumentError,
    ArgumentTypeError,
    InputIgnoredWarning,
    StepSizeWarning,
)

__all__ = [
    "FunctionCheck",
    "FunctionCheckResult",
    "GradcheckResult",
    "ParamCheck",
    "gradcheck",
    "miss_probability",
]

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


def _float_result(value: Any, what: str) -> float:
    """A scalar result (f's or a model's loss) as a float; an error naming ``what``."""
    try:
        out = float(to_numpy(value))
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"{what}: expected a scalar result, found {type(value).__name__} ({exc})"
        ) from None
    return out


def _perturbed(xp: Any, flat: Any, k: int, value: Any) -> Any:
    # A new array (JAX arrays are immutable): element k replaced by `value`.
    index = xp.arange(flat.shape[0], device=_compat.device(flat))
    return xp.where(index == k, value, flat)


def _element_differences(f: Callable[[Any], float], x: Any, h: float) -> _Differences:
    """``(up, down, step_up, step_down)`` of scalar ``f`` at every element of array ``x``."""
    xp = _compat.array_namespace(x)
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


def _model_differences(
    model: Any, x: Any, t: Any, h: float, workers: Any = None
) -> dict[str, _Differences]:
    """Per-parameter differences of ``model.loss(x, t)``.

    Uses the model's own ``loss_differences(x, t, h)`` when it has one (TwoLayerNet: fast);
    otherwise perturbs one element at a time, replacing the entry of ``model.params``
    (arrays are not modified in place, so immutable JAX arrays work too).
    """
    if workers is not None:  # the per-element loop below, on the workers
        from xgrad.workers import model_differences

        return model_differences(workers, model, x, t, h)  # type: ignore[return-value]
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
            return _float_result(model.loss(x, t), "model.loss")

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
    grad: Callable[..., Any] | Any = None,
    h: float | None = None,
    rtol: float | None = None,
    method: str = "auto",
    backend: str | Backend | None = None,
    vjp: Callable[..., Any] | None = None,
    mode: str = "full",
    probes: int = 3,
    seed: int = 0,
    resample: int = 0,
    workers: Any = None,
) -> GradcheckResult | FunctionCheckResult:
    """Check an analytic gradient against numerical differences.

    Parameters
    ----------
    target : model or callable
        A model with ``params`` (dict of arrays), ``loss(x, t)`` and ``gradient(x, t)``
        (the book's nets; :class:`xgrad.nn.TwoLayerNet`), called as
        ``gradcheck(net, x, t)``; or a function ``f(*inputs)`` of arrays returning a
        scalar or an array, called as ``gradcheck(f, x, grad=g)``, ``gradcheck(f, x, y,
        vjp=v)`` or, for torch and JAX inputs, ``gradcheck(f, x)``.
    *inputs :
        ``x, t`` for a model; the arrays f takes, for a function.
    grad : callable or array
        Function mode: the analytic gradient (scalar f) or Jacobian (array f, shape
        ``(*out.shape, *x.shape)``), ``grad(*inputs)`` or its value; a tuple of them for
        several inputs.
    vjp : callable, optional
        Function mode, instead of ``grad``: ``vjp(u, *inputs)`` returns ``u^T J`` per input.
        With neither, inputs of a backend with autodiff are checked against its own
        gradient (``torch.autograd``, ``jax.vjp``): a custom autograd Function in float32.
    mode : {"full", "fast"}
        Function mode: ``"full"`` compares every Jacobian element with the engine's
        error-controlled reference and names the worst ones; ``"fast"`` compares
        ``probes`` random projections ``u^T J v`` per input (a few evaluations, whatever
        the size) and states the probability of missing an error (`miss_probability`).
    probes, seed : int
        Fast mode's number of probes per input, and the seed of their directions.
    resample : int
        Function mode: where f has a kink at the point, move the point (randomly, by
        ~1e-4 relative) up to this many times and check there.
    h : float, optional
        Step of the central differences (default: 1e-4 in float64, 1e-3 in float32; for
        ``method="richardson"`` 1e-3 and 1e-2, halved once). For a function, ``h`` or a
        ``method`` other than ``"auto"`` selects the fixed-step check of one input with
        ``grad=``; by default its reference and error bar come from the engine.
    rtol : float, optional
        Tolerance on ``|analytic - reference| / max|reference|`` per parameter (default:
        1e-6 in float64, 1e-4 in float32).
    method : {"auto", "central", "float64", "richardson"}
        How the reference is computed: ``"central"`` in the dtype of the gradient,
        ``"float64"`` on a float64 copy, ``"richardson"`` as ``(4 D(h/2) - D(h)) / 3`` in
        the dtype of the gradient (Richardson extrapolation, as `numerical_diff`'s with
        an explicit h). ``"auto"``: central in float64; in float32, float64 if
        the backend has it (and a model has ``astype``), else Richardson.
    backend : str or Backend, optional
        Backend of the inputs (default: theirs).
    workers : int, executor, map-like, distributed.Client or list of devices, optional
        Evaluate the reference's perturbations in parallel (see :mod:`xgrad.workers`);
        for a model, the per-element loop of ``model.loss`` runs on the workers.

    Returns
    -------
    GradcheckResult or FunctionCheckResult
        True if every parameter passed; ``str()`` gives the table. A function's result
        has a ``verdict``: ``"gradient wrong"`` (beyond the reference's error bar),
        ``"finite differences too noisy"`` (the error bar exceeds the tolerance), or
        ``"f is nondeterministic"`` (two calls at the point differ).

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
        return _check_model(target, inputs[0], inputs[1], h, rtol, method, backend, workers)
    if not callable(target):
        raise ArgumentTypeError(
            "target: expected a model (params, loss, gradient) or a scalar function, found"
            f" {type(target).__name__}"
        )
    if not inputs:
        raise ArgumentTypeError("gradcheck(f, x, grad=g): a function needs its input arrays")
    if h is None and method == "auto":
        return check_function(
            target,
            inputs,
            grad=grad,
            vjp=vjp,
            rtol=rtol,
            mode=mode,
            probes=probes,
            seed=seed,
            resample=resample,
            backend=backend,
            workers=workers,
        )
    if len(inputs) != 1 or grad is None or vjp is not None or mode != "full":
        raise ArgumentTypeError(
            "gradcheck(f, x, grad=g, h=..., method=...): the fixed-step check takes one input"
            " and grad= (leave h and method unset for several inputs, vjp= or mode=)"
        )
    return _check_fixed_step(target, inputs[0], grad, h, rtol, method, backend)


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
        xp = _compat.array_namespace(v)
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
    workers: Any = None,
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
    reference, spread = _reference(
        lambda s: _model_differences(ref_model, x, t, s, workers), method, h
    )
    if set(analytic) != set(reference):
        raise ArgumentError(
            f"model.gradient: expected keys {sorted(reference)}, found {sorted(analytic)}"
        )
    rows = {k: _compare(k, analytic[k], reference[k], spread[k], rtol) for k in reference}
    return GradcheckResult(rows, b.spec, dtype, _describe(method, dtype), h, rtol)


def _check_fixed_step(
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
        return {"x": _element_differences(lambda v: _float_result(f(v), "f(x)"), point, step)}

    reference, spread = _reference(diffs, method, h)
    rows = {"x": _compare("x", analytic, reference["x"], spread["x"], rtol)}
    return GradcheckResult(rows, b.spec, dtype, _describe(method, dtype), h, rtol)


# -- functions of several arrays, against the engine -----------------------------------
_MODES = ("full", "fast")
#: Fast mode's miss probability is stated for an error of this relative norm.
FAST_DELTA = 1e-3
_WORST = 5
_UNCONVERGED_MARGIN = 10.0


@dataclass(frozen=True)
class FunctionCheck:
    """The comparison for one input array of a function (`gradcheck` on f).

    Attributes
    ----------
    name : str
        ``"x"`` for a function of one array, ``"x0"``, ``"x1"``... for several.
    failed : int
        Full mode: Jacobian elements wrong beyond the reference's error bar and the
        tolerance; fast mode: probes ``u^T J v`` that are.
    noisy : int
        Elements (probes) the reference cannot judge: its error bar exceeds the tolerance
        and the mismatch is within it ("finite differences too noisy here").
    kinks : int
        Elements where f has no derivative at the point (the engine's status 3: one-sided
        slopes disagree); not judged.
    max_rel : float
        ``max |analytic - reference| / scale`` over the judged elements.
    scale : float
        Full mode: ``max |reference|``; fast mode: ``||J^T u|| / sqrt(n)``, the typical size
        of a projection.
    worst : list of (index, analytic, reference, error)
        Full mode: the elements with the largest mismatch (index into ``(*out, *x)``).
    """

    name: str
    shape: tuple[int, ...]
    failed: int
    noisy: int
    kinks: int
    max_abs: float
    max_rel: float
    scale: float
    rtol: float
    worst: list[tuple[tuple[int, ...], float, float, float]] = field(default_factory=list)
    analytic: np.ndarray | None = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)
    error: np.ndarray | None = field(default=None, repr=False)
    kink_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.noisy == 0

    @property
    def verdict(self) -> str:
        if self.failed:
            return "gradient wrong"
        if self.noisy:
            return "finite differences too noisy"
        return "ok"


@dataclass(frozen=True)
class FunctionCheckResult:
    """Outcome of `gradcheck` on a function; true in a boolean context if it passed.

    ``verdict`` is ``"passed"``, ``"gradient wrong"``, ``"finite differences too noisy"``
    or ``"f is nondeterministic"``; ``str()`` is the report.
    """

    params: dict[str, FunctionCheck]
    backend: str
    dtype: str
    reference: str
    analytic: str
    mode: str
    rtol: float
    nfev: int
    probes: int
    miss_probability: float | None
    nondeterministic: float
    resampled: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.nondeterministic == 0 and all(p.passed for p in self.params.values())

    @property
    def verdict(self) -> str:
        if self.nondeterministic:
            return "f is nondeterministic"
        if any(p.failed for p in self.params.values()):
            return "gradient wrong"
        if any(p.noisy for p in self.params.values()):
            return "finite differences too noisy"
        return "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, key: str) -> FunctionCheck:
        return self.params[key]

    def report(self) -> str:
        head = (
            f"gradcheck on {self.backend}, {self.dtype}, {self.mode} mode: {self.analytic}"
            f" against {self.reference}; rtol={self.rtol:g}; {self.nfev} evaluations of f"
        )
        lines = [head]
        if self.nondeterministic:
            lines.append(
                f"f is nondeterministic: two calls at the same point differ by"
                f" {self.nondeterministic:.3e}; no finite difference can check it"
            )
        unit = "probes" if self.mode == "fast" else "elements"
        for p in self.params.values():
            shape = "x".join(map(str, p.shape)) or "()"
            line = (
                f"{p.name} ({shape}): max rel diff {p.max_rel:.3e}, {p.failed} wrong,"
                f" {p.noisy} too noisy, {p.kinks} kinks -> {p.verdict}"
            )
            lines.append(line)
            for index, a, r, e in p.worst:
                lines.append(
                    f"    {unit[:-1]} {index}: analytic {a:.9g}, reference {r:.9g} +- {e:.2g}"
                )
        if self.miss_probability is not None:
            lines.append(
                f"fast mode: {self.probes} random probes u^T J v per input; an error of"
                f" relative norm {FAST_DELTA:g} is missed with probability <="
                f" {self.miss_probability:.1e}"
            )
        if any(p.kinks for p in self.params.values()):
            lines.append(
                "kinks: f has no derivative there (one-sided slopes disagree); pass"
                " resample=1 to move the point"
                + (f" (moved {self.resampled} times)" if self.resampled else "")
            )
        if any(p.noisy for p in self.params.values()):
            lines.append(
                "too noisy: the reference's error bar is larger than the tolerance there,"
                " so those elements cannot be judged (not a wrong gradient)"
            )
        lines.append("PASSED" if self.passed else f"FAILED: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def backend_hook(b: Backend | str, name: str) -> Callable[..., Any] | None:
    """The optional capability ``name`` (``vjp``, ``jit``, ``enable_float64``) of a backend.

    Declared on its `xgrad.backends.BackendEntry`; None where the backend has none.
    """
    from xgrad.backends import registered_backends

    if name not in ("vjp", "jit", "enable_float64"):
        raise ArgumentError(f"name: expected 'vjp', 'jit' or 'enable_float64', found {name!r}")
    entry = registered_backends().get(b if isinstance(b, str) else b.name)
    return None if entry is None else getattr(entry, name)


def miss_probability(rtol: float, probes: int, delta: float = FAST_DELTA) -> float:
    """Fast mode's chance to miss an error of relative norm ``delta`` with ``probes`` probes.

    A probe passes a wrong gradient when ``|e . v| <= rtol ||a|| / sqrt(n)`` for the error
    vector e (``||e|| = delta ||a||``) and a random Gaussian v of norm ~1: e . v is then
    ``N(0, ||e||^2 / n)``, so one probe misses with probability ``P(|Z| <= rtol / delta)``
    ``<= sqrt(2/pi) rtol / delta``, and independent probes all miss with its power.
    """
    one = min(1.0, math.erf(rtol / delta / math.sqrt(2.0)))
    return one**probes


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _analytic_vjp(
    f: Callable[..., Any], xs: tuple[Any, ...], b: Backend, grad: Any, vjp: Any
) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str, tuple[int, ...]]:
    """``(u -> [u^T J_i for each input], description, output shape)`` on the host."""
    xp = b.xp
    shapes = [tuple(x.shape) for x in xs]
    if grad is not None:
        value = grad(*xs) if callable(grad) else grad
        jac = [to_numpy(j).astype(np.float64) for j in _as_tuple(value)]
        if len(jac) != len(xs):
            raise ArgumentError(
                f"grad: expected {len(xs)} arrays (one per input), found {len(jac)}"
            )
        out_shape = tuple(jac[0].shape[: jac[0].ndim - len(shapes[0])])
        for i, (j, s) in enumerate(zip(jac, shapes, strict=True)):
            if tuple(j.shape) != out_shape + s:
                raise ArgumentError(
                    f"grad: expected the Jacobian of input {i} to have shape"
                    f" {out_shape + s} (output shape + input shape), found {tuple(j.shape)}"
                )

        def from_jacobian(u: np.ndarray) -> list[np.ndarray]:
            return [np.tensordot(u, j, axes=len(out_shape)) for j in jac]

        return from_jacobian, "grad=", out_shape
    out = f(*xs)
    out_shape = tuple(getattr(out, "shape", ()))
    dtype = xs[0].dtype
    if vjp is not None:

        def given(u: np.ndarray) -> list[np.ndarray]:
            cot = xp.asarray(u, dtype=dtype, device=b.device)
            return [to_numpy(g).astype(np.float64) for g in _as_tuple(vjp(cot, *xs))]

        return given, "vjp=", out_shape
    hook = backend_hook(b, "vjp")
    if hook is None:
        raise ArgumentTypeError(
            f"gradcheck(f, x, grad=g): {b.name} has no autodiff of its own, so pass grad= (the"
            " gradient or Jacobian, callable or array) or vjp= (cotangent, *inputs) -> grads"
        )

    def own(u: np.ndarray) -> list[np.ndarray]:
        cot = xp.asarray(u, dtype=dtype, device=b.device)
        _, grads = hook(f, xs, cot)
        return [to_numpy(g).astype(np.float64) for g in grads]

    return own, f"{b.name}'s own autodiff", out_shape


def _scalarized(f: Callable[..., Any], names: list[str], u: Any, xp: Any, count: list[int]) -> Any:
    def g(d: Any) -> float:
        count[0] += 1
        out = f(*(d[k] for k in names))
        if u is None:
            return _float_result(out, "f(x)")
        return float(to_numpy(xp.sum(out * u)))

    return g


def _judge(
    name: str,
    shape: tuple[int, ...],
    a: np.ndarray,
    r: np.ndarray,
    err: np.ndarray,
    kink: np.ndarray,
    converged: np.ndarray,
    scale: float,
    rtol: float,
    worst: bool,
) -> FunctionCheck:
    diff = np.abs(a - r)
    tol = rtol * scale
    judged = ~kink
    # A converged element's error bounds the reference's error; an unconverged one's
    # (noisy f, tolerance not met) only estimates it, so it gets a margin before a
    # mismatch counts as a wrong gradient rather than as noise.
    bar = np.where(converged, err, _UNCONVERGED_MARGIN * err)
    wrong = judged & ~(diff <= tol + bar)  # NaN is wrong
    noisy = judged & ~wrong & ((diff > tol) | ~converged & (err > tol))
    d = diff[judged]
    max_abs = float(np.max(d, initial=0.0)) if not np.isnan(d).any() else math.inf
    rows: list[tuple[tuple[int, ...], float, float, float]] = []
    if worst and a.size:
        key = np.where(judged, np.nan_to_num(diff, nan=np.inf), -1.0).ravel()
        for k in np.argsort(-key, kind="stable")[:_WORST]:
            if key[k] <= tol:
                break
            idx = tuple(int(i) for i in np.unravel_index(int(k), a.shape))
            rows.append((idx, float(a.flat[k]), float(r.flat[k]), float(err.flat[k])))
    return FunctionCheck(
        name=name,
        shape=shape,
        failed=int(np.count_nonzero(wrong)),
        noisy=int(np.count_nonzero(noisy)),
        kinks=int(np.count_nonzero(kink)),
        max_abs=max_abs,
        max_rel=max_abs / scale if scale else (0.0 if max_abs == 0 else math.inf),
        scale=scale,
        rtol=rtol,
        worst=rows,
        analytic=a,
        reference=r,
        error=err,
        kink_mask=kink,
    )


def _runs_in_float64(f: Callable[..., Any], xs: tuple[Any, ...], b: Backend) -> bool:
    # A float32 f may mix its inputs with float32 constants in ways that float64 inputs
    # break (torch's matmul does not promote): then the reference stays in float32.
    try:
        f(*(b.xp.astype(x, b.float_dtype("float64")) for x in xs))
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def check_function(
    f: Callable[..., Any],
    inputs: tuple[Any, ...],
    *,
    grad: Any = None,
    vjp: Any = None,
    rtol: float | None = None,
    mode: str = "full",
    probes: int = 3,
    seed: int = 0,
    resample: int = 0,
    backend: str | Backend | None = None,
    workers: Any = None,
) -> FunctionCheckResult:
    """`gradcheck` for ``f(*inputs)`` (arrays in, array or scalar out) against the engine.

    In phases: the arguments; the inputs on one backend and dtype; two calls at the point
    (a nondeterministic f makes every difference meaningless); then, per point (the given
    one, and where kinks are found and ``resample`` allows, moved ones), the analytic
    vector-Jacobian products against the engine's references, every element (``"full"``)
    or random projections (``"fast"``).
    """
    _check_function_options(mode, probes, resample, grad, vjp)
    start = time.perf_counter()
    b, xs, dtype = _function_inputs(inputs, backend)
    if rtol is None:
        rtol = _RTOL[dtype]
    if not (isinstance(rtol, int | float) and rtol > 0):
        raise ArgumentError(f"rtol: expected a number > 0, found {rtol!r}")
    names = ["x"] if len(xs) == 1 else [f"x{i}" for i in range(len(xs))]
    rng = np.random.default_rng(seed)
    count = [0]

    def counted(*a: Any) -> Any:
        count[0] += 1
        return f(*a)

    nondet = _nondeterminism(counted, xs)
    up64 = dtype == "float32" and b.supports_float64 and _runs_in_float64(f, xs, b)
    ref = _Reference(f, names, b, up64, dtype, count)
    resampled = 0
    while True:
        avjp, analytic, out_shape = _analytic_vjp(counted, xs, b, grad, vjp)
        point = {k: ref.cast(x) for k, x in zip(names, xs, strict=True)}
        with warnings.catch_warnings():
            # full_output reports, per element, what these warnings would say.
            for category in (AccuracyWarning, StepSizeWarning, InputIgnoredWarning):
                warnings.simplefilter("ignore", category)
            if mode == "full":
                rows = _full_rows(ref, xs, point, avjp, out_shape, rtol, workers)
            else:
                rows = _fast_rows(ref, xs, point, avjp, out_shape, rtol, probes, rng)
        if resampled >= resample or not any(p.kinks for p in rows.values()):
            break
        # A kink at the point (ReLU at 0): any nearby point checks the same gradient code.
        resampled += 1
        xs = tuple(
            x
            + b.asarray(
                1e-4 * rng.standard_normal(tuple(x.shape)) * (1.0 + np.abs(to_numpy(x))),
                dtype=dtype,
            )
            for x in xs
        )
    on_copies = " on float64 copies" if up64 else ""
    reference = (
        "the error-controlled engine (numerical_gradient, full_output)" + on_copies
        if mode == "full"
        else "the engine's directional derivatives (numerical_diff)" + on_copies
    )
    return FunctionCheckResult(
        params=rows,
        backend=b.spec,
        dtype=dtype,
        reference=reference,
        analytic=analytic,
        mode=mode,
        rtol=float(rtol),
        nfev=count[0],
        probes=probes if mode == "fast" else 0,
        miss_probability=miss_probability(float(rtol), probes) if mode == "fast" else None,
        nondeterministic=nondet,
        resampled=resampled,
        seconds=time.perf_counter() - start,
    )


def _check_function_options(mode: Any, probes: Any, resample: Any, grad: Any, vjp: Any) -> None:
    """check_function's options, checked before any input is touched."""
    if mode not in _MODES:
        raise ArgumentError(f"mode: expected one of {_MODES}, found {mode!r}")
    if not (isinstance(probes, int) and probes >= 1):
        raise ArgumentError(f"probes: expected an int >= 1, found {probes!r}")
    if not (isinstance(resample, int) and resample >= 0):
        raise ArgumentError(f"resample: expected an int >= 0, found {resample!r}")
    if grad is not None and vjp is not None:
        raise ArgumentTypeError("gradcheck: pass grad= or vjp=, not both")
    if resample and grad is not None and not callable(grad):
        raise ArgumentTypeError("resample: needs grad= as a callable (an array is for one point)")


def _function_inputs(
    inputs: tuple[Any, ...], backend: str | Backend | None
) -> tuple[Backend, tuple[Any, ...], str]:
    """The inputs as float arrays of one backend and one dtype xgrad can check."""
    b = resolve_backend(backend, *inputs)
    xs = tuple(as_float_array(x, backend=b, name=f"inputs[{i}]")[0] for i, x in enumerate(inputs))
    dtype = b.dtype_name(xs[0].dtype)
    if any(b.dtype_name(x.dtype) != dtype for x in xs):
        raise ArgumentError(
            f"inputs: expected one float dtype, found {[b.dtype_name(x.dtype) for x in xs]}"
        )
    if dtype not in _RTOL:
        raise ArgumentTypeError(f"inputs: expected float32 or float64 arrays, found {dtype}")
    return b, xs, dtype


def _nondeterminism(counted: Callable[..., Any], xs: tuple[Any, ...]) -> float:
    """How much two calls of f at the same point differ (inf: in shape, or not finite).

    A nondeterministic f (atomics on a GPU, an unseeded dropout) makes every finite
    difference meaningless; check_function says so instead of reporting a wrong gradient.
    """
    first, second = to_numpy(counted(*xs)), to_numpy(counted(*xs))
    nondet = float(np.max(np.abs(first.astype(np.float64) - second), initial=0.0))
    if first.shape != second.shape or not np.isfinite(nondet):
        nondet = math.inf
    return nondet


class _Reference:
    """What the engine's reference needs: f scalarized, on float64 copies where ``up64``."""

    def __init__(
        self,
        f: Callable[..., Any],
        names: list[str],
        b: Backend,
        up64: bool,
        dtype: str,
        count: list[int],
    ) -> None:
        self.f, self.names, self.b, self.up64, self.count = f, names, b, up64, count
        self.dtype = "float64" if up64 else dtype

    def cast(self, x: Any) -> Any:
        """An input as the reference sees it: a float64 copy where ``up64``, else itself."""
        b = self.b
        return b.xp.astype(x, b.float_dtype("float64")) if self.up64 else x

    def cotangent(self, host_u: np.ndarray) -> Any:
        """A host cotangent as an array of the backend, in the reference dtype."""
        b = self.b
        return b.xp.asarray(host_u, dtype=b.float_dtype(self.dtype), device=b.device)

    def scalarized(self, u: Any) -> Callable[[Any], float]:
        """``d -> sum(f(*d) * u)`` (``f(*d)`` for scalar f, u None), counted."""
        return _scalarized(self.f, self.names, u, self.b.xp, self.count)


def _full_rows(
    ref: _Reference,
    xs: tuple[Any, ...],
    point: dict[str, Any],
    avjp: Callable[[np.ndarray], list[np.ndarray]],
    out_shape: tuple[int, ...],
    rtol: float,
    workers: Any,
) -> dict[str, FunctionCheck]:
    """Full mode: every Jacobian element, one row ``e_i^T J`` of f's output at a time."""
    from xgrad.numdiff import DiffStatus, numerical_gradient

    names = ref.names
    m = math.prod(out_shape)
    a_rows: list[list[np.ndarray]] = []
    r_rows: dict[str, list[Any]] = {k: [] for k in names}
    for i in range(max(m, 1)):
        u = None
        host_u: np.ndarray = np.ones(())
        if out_shape:
            host_u = np.zeros(m)
            host_u[i] = 1.0
            host_u = host_u.reshape(out_shape)
            u = ref.cotangent(host_u)
        a_rows.append(avjp(host_u))
        res = numerical_gradient(ref.scalarized(u), point, full_output=True, workers=workers)
        for k in names:
            r_rows[k].append(res[k])
    rows: dict[str, FunctionCheck] = {}
    for j, k in enumerate(names):
        shape = tuple(xs[j].shape)
        a = np.stack([row[j] for row in a_rows]).reshape(out_shape + shape)
        r = np.stack([to_numpy(d.df) for d in r_rows[k]]).astype(np.float64)
        e = np.stack([to_numpy(d.error) for d in r_rows[k]]).astype(np.float64)
        st = np.stack([np.asarray(to_numpy(d.status)) for d in r_rows[k]])
        r, e = r.reshape(a.shape), e.reshape(a.shape)
        kink = st.reshape(a.shape) == int(DiffStatus.NOT_DIFFERENTIABLE)
        converged = st.reshape(a.shape) == int(DiffStatus.CONVERGED)
        scale = float(np.max(np.abs(r[~kink]), initial=0.0)) or float(
            np.max(np.abs(a), initial=0.0)
        )
        rows[k] = _judge(k, shape, a, r, e, kink, converged, scale, rtol, worst=True)
    return rows


def _fast_rows(
    ref: _Reference,
    xs: tuple[Any, ...],
    point: dict[str, Any],
    avjp: Callable[[np.ndarray], list[np.ndarray]],
    out_shape: tuple[int, ...],
    rtol: float,
    probes: int,
    rng: np.random.Generator,
) -> dict[str, FunctionCheck]:
    """Fast mode: ``probes`` random projections ``u^T J v`` per input, as directional
    derivatives of the engine."""
    from xgrad.numdiff import DiffStatus, numerical_diff

    b = ref.b
    rows: dict[str, FunctionCheck] = {}
    for j, k in enumerate(ref.names):
        shape = tuple(xs[j].shape)
        n = max(math.prod(shape), 1)
        a_p, r_p, e_p, kink_p, conv_p = [], [], [], [], []
        scales = []
        for _ in range(probes):
            host_u = rng.standard_normal(out_shape) if out_shape else np.ones(())
            v = rng.standard_normal(shape)
            v /= np.linalg.norm(v) or 1.0
            g = avjp(host_u)[j]
            a_p.append(float(np.sum(g * v)))
            scales.append(float(np.linalg.norm(g)) / math.sqrt(n))
            u = ref.cotangent(host_u) if out_shape else None
            direction = b.asarray(v, dtype=ref.dtype)
            scalar = ref.scalarized(u)

            def along(
                t: float,
                scalar: Any = scalar,
                k: str = k,
                d: Any = direction,
                p: Any = point,
            ) -> float:
                moved = dict(p)
                moved[k] = p[k] + t * d
                return scalar(moved)

            res = numerical_diff(along, 0.0, full_output=True)
            r_p.append(float(res.df))
            e_p.append(float(res.error))
            kink_p.append(int(res.status) == int(DiffStatus.NOT_DIFFERENTIABLE))
            conv_p.append(int(res.status) == int(DiffStatus.CONVERGED))
        rows[k] = _judge(
            k,
            shape,
            np.array(a_p),
            np.array(r_p),
            np.array(e_p),
            np.array(kink_p),
            np.array(conv_p),
            max(scales) if scales else 0.0,
            rtol,
            worst=True,
        )
    return rows
