"""The one home of xgrad's finite-difference rules: stencils, steps, tolerances, status codes.

Every derivative in xgrad (`numerical_diff`, `numerical_gradient`, `jacobian`, `hessian`,
the reference differences of `gradcheck`) takes its stencil, its step rule and its error
control from here; no other module holds a step constant or a stencil.

Step rule for ``h=None`` (the search, run by `xgrad._engine`): central differences at the
steps ``TOP * scale * step_factor(k)`` (shrinking by ratios with no common divisor, against
aliasing) for two scales per element, ``wide = max(|x|, 1)`` (steps
relative to x, right for log at 1e6 or sqrt at 1e12) and ``narrow = min(|x|, 1)`` (absolute
steps for |x| >= 1, right for cos at 3e4 or exp at 600; steps relative to |x| for |x| < 1,
right at domain edges such as log at 1e-10), each extrapolated by Neville's tableau
(Richardson, Numerical Recipes' ``dfridr``, with the factors of the steps actually taken),
shrinking until successive estimates agree to the tolerance; the level after the one that
converged confirms it (its nearest entry's distance bounds the error from below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "FIRST_LEVELS",
    "FIRST_STEPS",
    "NEXT_STEP",
    "RHO",
    "HESSIAN_RTOL",
    "FLOOR",
    "KINK_FACTOR",
    "MAX_LEVELS",
    "METHODS",
    "NET_STEP",
    "DIVERGENCE_RATIO",
    "NOISE_FACTOR",
    "NOISE_SCREEN",
    "NOISE_WEIGHT",
    "NOISE_KAPPA",
    "EVEN_WEIGHTS",
    "ENTRY_GAIN",
    "even_residual",
    "RESOLVED",
    "STALL_LEVELS",
    "TOP",
    "TOP32",
    "DiffStatus",
    "Stencil",
    "argument_noise",
    "argument_rounding",
    "check_method",
    "check_on_failure",
    "check_step",
    "check_tolerances",
    "complex_dtype",
    "complex_step",
    "differencing_rtol",
    "extrapolate",
    "finfo",
    "fixed_step",
    "jump_weights",
    "neville_ratio",
    "reference_step",
    "representable",
    "representable_steps",
    "second_step",
    "step_factor",
    "top",
    "width_ratio",
]


class DiffStatus(IntEnum):
    """Per-element outcome of a numerical derivative (``DiffResult.status``).

    Only ``CONVERGED`` counts as success; every other code is flagged.
    """

    #: Successive estimates agree within ``atol + rtol * |df|``; ``error`` bounds the error.
    CONVERGED = 0
    #: No step gave an estimate within the tolerance (``error`` says how far it is).
    TOLERANCE_NOT_MET = 1
    #: f is not finite around the point, even with smaller and one-sided steps.
    NOT_FINITE = 2
    #: A kink, jump, pole or infinite derivative: one-sided slopes disagree or diverge.
    NOT_DIFFERENTIABLE = 3
    #: f is noisier than its dtype's rounding (it computes in lower precision, or is noisy).
    NOISY = 4


@dataclass(frozen=True)
class Stencil:
    """A difference quotient ``(f(x + a h) - f(x + b h)) / ((x + a h) - (x + b h))``.

    ``ratio`` is the factor by which its leading error term shrinks when h is halved
    (4 for the even expansion of central differences, 2 for one-sided ones): Neville's
    tableau divides by ``ratio**j - 1``. ``exponent`` gives the single fixed step
    ``eps**exponent * scale`` where one step is all a caller can afford (gradcheck's
    reference, a complex step).
    """

    name: str
    a: float
    b: float
    ratio: float
    exponent: float


#: The methods. "richardson" is the central stencil with Richardson extrapolation carried
#: as far as it helps: with h=None an exhaustive search (every scale, every level of the
#: tableau until the error grows) instead of stopping at the tolerance; with an explicit h
#: the one step of `extrapolate` from h and h/2.
METHODS: dict[str, Stencil] = {
    "central": Stencil("central", 1.0, -1.0, 4.0, 1.0 / 3.0),
    "forward": Stencil("forward", 1.0, 0.0, 2.0, 1.0 / 2.0),
    "backward": Stencil("backward", 0.0, -1.0, 2.0, 1.0 / 2.0),
    "richardson": Stencil("central", 1.0, -1.0, 4.0, 1.0 / 3.0),
    # Im f(x + ih) / h has no cancellation: any tiny step works, eps**2 keeps h**2 f''' / 6
    # below eps relative to f'.
    "complex": Stencil("complex", 0.0, 0.0, 4.0, 2.0),
}

# -- the search (see the module docstring) ----------------------------------------------
#: First step, as a fraction of the scale. Large enough that the 8th-order tableau entries
#: reach ~1e-14 on smooth f, small enough that most f are resolved at the first scale.
TOP = 1.0 / 8.0
#: float32's first step, four times float64's: its rounding (eps |f| / h) dominates, and
#: the smooth-suite median falls from 1.9e-6 (1/8) to 4.7e-7. At 1/8 this was kept because
#: larger steps let oscillatory f alias into false agreement at float32's looser tolerance
#: (cos(1e3 x) at 0.3 passed as -5.3 for 1000; tan at 1.5707963 and cos(1837 x) at 2 passed
#: wrong at 1/4); with the confirming level and f's argument noise in the bars they are
#: right or flagged, and cos(w x), w to 2e4, x in {0.3, 0.7, 2, 5} stays at 0 wrong
#: (answered 3,877 -> 3,508, bars covering all of them). Measured at 1/4: median 1.02e-6;
#: 0.35: 9.5e-7; 0.3: 2.2e-6 (rounding luck at this few points).
TOP32 = 1.0 / 2.0


def top(eps: float) -> float:
    """The first step of the search, as a fraction of the scale, for a dtype's eps."""
    return TOP if eps < 1e-10 else TOP32


def argument_rounding(eps: float) -> float:
    """The multiple of ``eps |x| |f''|`` added to a search's error in a dtype (by its eps).

    float32 answers must hold for every x within float32's rounding of x: f computed in
    float32 rounds its own intermediate arguments (cos(w x) rounds w x by up to 2**-24 of
    itself), and f' is then known no better than to ``|f''| eps |x|``. On cos(w x),
    w = 3..2e4, x in {0.3, 0.7, 2, 5} (25,720 float32 cases) answers more than 1e-2 off
    fell from 568 to 67 (answered: 9,238 -> 6,897); in the hard suite every float32
    success is now within its bars (48 of 48; cos at 3e4 and at -2e4, right to 4e-7 but
    with f' moving 3e-3 within x's rounding, are flagged). float64 adds nothing: there x's
    rounding moves f' beyond the tolerance only from |x| ~ 1e8 on (sin at 1e10 is answered
    right to 2e-16 with f's exact argument), and no float64 case is wrong without it.
    """
    return 1.0 if eps > 1e-10 else 0.0


def argument_noise(eps: float) -> float:
    """The multiple of ``|x| |D|`` added to ``|f|`` in a level's rounding bound, by dtype.

    A level's rounding bound is ``2 eps max|f| / width``, and its extrapolated entries add
    twice that. An f computed in float32 that scales its argument (cos(w x) rounds w x by
    up to 2**-24 of itself) moves its values by up to ``|x f'| eps / 2`` each, so one
    quotient by up to ``|x f'| eps / width``: 1/4 of ``|x| |D|`` beside ``|f|`` makes the
    entries' bound that, once. Only steps below ~1e-4 |x| feel it: f varying on a scale
    of 1e-4 |x| or less (oscillating at large |x|). On cos(w x), w = 3..2e4 step 3.11,
    x in {0.3, 0.7, 2, 5} (25,720 float32 cases): answers more than 1e-2 off 67 -> 0,
    answered 6,897 -> 3,877, bars covering 86.5 -> 99.97 % of them (1/16: 6,174 answered
    and 94.8 % covered; 1/8: 98.9 %; 1/2, the worst case twice over: 2,417). The cost: an
    f that does not round its argument is flagged there too (float32 sin(x) and tan at
    1e4, right to 1e-5, in the hard suite). float64 adds nothing: no float64 case is wrong
    without it, and its bars already cover (`argument_rounding`).
    """
    return 0.25 if eps > 1e-10 else 0.0


def width_ratio(coarse: Any, fine: Any, ratio: float) -> Any:
    """Neville's factor between two levels from the widths of their stencils as taken.

    ``(coarse / fine) ** log2(ratio)``: the square of the width ratio for central
    differences (their error is even in h), the ratio itself for one-sided ones.
    """
    q = coarse / fine
    return q * q if ratio == 4.0 else q


#: Levels (pairs of evaluations) computed at each scale before looking at the other one.
FIRST_LEVELS = 4
#: The steps' ratios. Not halvings: for cos(w x) a central quotient is
#: D(h) = f'(x) sin(w h) / (w h), 0 wherever w h is a multiple of pi, and at halving steps
#: once the smallest step aliases every larger one does, so that all levels agree on a
#: false value (cos(402 x) at 0.3 gave 0.116 for -377, flagged converged). Nor any steps
#: with a common divisor: the earlier 1, 1/2, 1/4, 7/64 are all multiples of 1/64, and
#: wherever w * top is near 2 pi 64 m every level aliases at once (cos(3217 x) at 0.3 gave
#: 0.0054 for 1898, converged; in float32 random sin(w x + p) e^(a x) with w near 3220 or
#: 1024 the same). The steps shrink by a ratio with no small rational form, first
#: RHO = 0.4787 (the first stage's four levels span the same factor 9 as before), then
#: NEXT_STEP = 0.4431, so that no period divides two steps exactly. cos(w x), w = 3..2e4
#: in steps of 1.37, x in {0.3, 0.7, 2, 5} (58,388 cases, float64, error against mpmath
#: where float64's own w x rounds): silently wrong 5 -> 0, answered 48,020 -> 56,241.
RHO = 0.4787
FIRST_STEPS = (1.0, RHO, RHO**2, RHO**3)
NEXT_STEP = 0.4431


def _lagrange_at_zero(z: list[Any]) -> tuple[Any, ...]:
    """Lagrange's weights at 0 of nodes z: sum ``w_k z_k**j`` is 1 for j = 0 and 0 for
    j = 1..3 (four nodes), so ``sum w_k S_k`` is the even parts' cubic in h**2
    extrapolated to h = 0 (and Neville's T33 is ``sum w_k D_k``, the same weights)."""
    weights = []
    for k, zk in enumerate(z):
        w: Any = 1.0
        for m, zm in enumerate(z):
            if m != k:
                w *= zm / (zm - zk)
        weights.append(w)
    return tuple(weights)


#: The even parts of the first levels, extrapolated to h = 0, are 2 f(x) up to an h**8 term
#: and rounding: their residual ``R = sum EVEN_WEIGHTS[k] S_k - 2 f(x)`` measures f's noise
#: on its own. It is independent of the odd parts that make D (where noise in f is
#: independent from point to point, odd and even combinations of it are uncorrelated),
#: unlike T33 - T22, Numerical Recipes' error estimate, whose noise is 0.92 correlated with
#: T33's own: on pure noise |T33 - truth| exceeds |T33 - T22| 38 % of the time, and f(x)
#: (1 + a N(0, 1)) at a = 1e-10..1e-8 in float64 was answered 112 times off by up to
#: 4.5e-7, unflagged (benchmarks/bench_noisy.py).
EVEN_WEIGHTS = _lagrange_at_zero([s * s for s in FIRST_STEPS])


def _noise_weight(kappa: float) -> float:
    """``kappa`` times the ratio of T33's noise gain to R's, for independent noise in f.

    T33 = sum over levels of ``EVEN_WEIGHTS[k] (f(x + h_k) - f(x - h_k)) / (2 h_k)``, so
    noise of size s in each value moves it by ``s sqrt(sum w_k**2 / (2 s_k**2)) / top``
    (9.0 s / top); R moves by ``s sqrt(2 sum w_k**2 + 4)`` (2.9 s).
    """
    pairs = zip(EVEN_WEIGHTS, FIRST_STEPS, strict=True)
    gain_t = math.sqrt(sum(w * w / (2.0 * s * s) for w, s in pairs))
    gain_r = math.sqrt(2.0 * sum(w * w for w in EVEN_WEIGHTS) + 4.0)
    return kappa * gain_t / gain_r


#: A first-stage estimate's noise bar is ``NOISE_WEIGHT |R| / top``: eight of R's standard
#: deviations in T33's units, so that on pure noise the true error exceeds the bar (with
#: T33 - T22 beside it) about 1 % of the time.
NOISE_KAPPA = 8.0
NOISE_WEIGHT = _noise_weight(NOISE_KAPPA)
#: Beyond the first levels, any entry of level k moves by at most ENTRY_GAIN s / h_k for
#: noise of size s in each value (0.71 for D_k itself, 0.99 for T33, 0.93 for the deep
#: columns at NEXT_STEP: Lagrange's weights at 0 of geometric nodes stay bounded).
ENTRY_GAIN = 1.0


def even_residual(z: list[Any], with_fx: bool) -> tuple[list[Any], Any]:
    """Weights on the even parts ``S_k`` at squared half-widths ``z``, and their noise gain.

    ``sum w_k S_k`` (minus ``2 f(x)`` where ``with_fx``: four levels) vanishes on every
    even polynomial of degree 6 in h, so on smooth f it is an h**8 term, and otherwise it
    is noise; five levels need no f(x) (a fourth divided difference in h**2, scaled to unit
    norm). ``z`` may be floats or arrays (per element: the steps as taken).
    """
    if with_fx:
        weights = list(_lagrange_at_zero(z))
        return weights, (2.0 * sum(w * w for w in weights) + 4.0) ** 0.5
    raw = []
    for m, zm in enumerate(z):
        d: Any = 1.0
        for n, zn in enumerate(z):
            if n != m:
                d = d * (zm - zn)
        raw.append(1.0 / d)
    norm = sum(w * w for w in raw) ** 0.5
    return [w / norm for w in raw], math.sqrt(2.0)


#: The noise bar is computed (one evaluation more, f(x)) only where T33 - T22 exceeds the
#: tolerance / NOISE_SCREEN: below that, T33's noise would have to be NOISE_SCREEN times
#: T33 - T22's for the answer to be off by the tolerance, and smooth f stays at 8 calls.
NOISE_SCREEN = 256.0


def step_factor(k: int) -> float:
    """Level k's step as a fraction of the tableau's first: `FIRST_STEPS`, then `NEXT_STEP`."""
    if k < FIRST_LEVELS:
        return FIRST_STEPS[k]
    return FIRST_STEPS[-1] * NEXT_STEP ** (k - FIRST_LEVELS + 1)


def neville_ratio(k: int, j: int, ratio: float) -> float:
    """Column j's factor at level k of Neville's tableau for arbitrary steps.

    The leading error term of a stencil shrinks by ``ratio`` per halving, so by
    ``(h[k - j] / h[k]) ** log2(ratio)`` from level k - j to level k; at halvings this is
    ``ratio**j`` exactly (as in `extrapolate`).
    """
    return (step_factor(k - j) / step_factor(k)) ** math.log2(ratio)


def jump_weights(k: int) -> tuple[float, float]:
    """(a, b) with ``J = (a (S0 - S1) + b (S1 - S2)) / h0`` for levels k - 2, k - 1, k.

    S(h) = 2 f(x) + J h + c h**2 at steps h0 > h1 > h2 (u = h / h0): J is the linear
    coefficient of the parabola through the three; at halvings (a, b) = (-2, 8).
    """
    h0 = step_factor(k - 2)
    u1, u2 = step_factor(k - 1) / h0, step_factor(k) / h0
    return -(u1 + u2) / ((1.0 - u2) * (1.0 - u1)), (1.0 + u1) / ((1.0 - u2) * (u1 - u2))


#: Most levels at one scale (steps down to TOP * step_factor(MAX_LEVELS - 1) * scale, about
#: TOP * 2**-27).
MAX_LEVELS = 24
#: Ridders' stopping rule: STALL_LEVELS levels in a row that do not improve the best error
#: estimate mean rounding has taken over; the search stops there for that element.
STALL_LEVELS = 3
#: An estimate counts as resolved (so that a stall means rounding, not steps still too
#: large for f) once its relative error estimate is below this.
RESOLVED = 1e-2
#: Growth of |D(h)| per halving of h that marks a divergent quotient (a jump: 2, a pole
#: straddled by the stencil: 4, an infinite one-sided slope such as sqrt at 0: 1.41).
DIVERGENCE_RATIO = 1.3
#: Disagreement between levels this many times above the rounding model marks noisy f.
NOISE_FACTOR = 30.0
#: Rounding floor of the tolerance, in units of eps * |f| / max(|x|, 1): a derivative known
#: to within that (f'(x) = 0, or far below |f| / |x|) cannot be resolved any better by
#: differences of f, and counts as converged.
FLOOR = 1024.0
#: A slope jump is reported when it exceeds KINK_FACTOR times the tolerance plus the error.
KINK_FACTOR = 32.0

# Default relative tolerance by dtype: the largest error a default result may carry
# unflagged. float64 results are usually 1e-13 or better; float32 ones 1e-5.
_RTOL = {"float64": 1e-8, "float32": 1e-3}


#: hessian's default rtol by dtype: second differences keep about half the digits.
HESSIAN_RTOL = {"float64": 1e-5, "float32": 1e-1}


def second_step(eps: float, scale: Any) -> Any:
    """hessian's first step: ``4 eps**(1/4) * scale`` balances rounding (eps / h**2) against
    the h**2 truncation of a second difference; the second step is half of it."""
    return 4.0 * eps**0.25 * scale


# gradcheck's reference: one central difference per element with a fixed step (the
# book's 1e-4 in float64), or, where only float32 exists, one Richardson step from h and
# h/2, which cancels the h**2 term and so affords a larger step (less rounding).
_REFERENCE_STEP = {
    ("central", "float64"): 1e-4,
    ("central", "float32"): 1e-3,
    ("richardson", "float64"): 1e-3,
    ("richardson", "float32"): 1e-2,
}


#: TwoLayerNet.numerical_gradient's step (see xgrad.nn.default_step): the book's 1e-4 in
#: float64; 1e-3 in float32, where its cancellation-free loss differences leave the
#: truncation error to dominate.
NET_STEP = {"float64": 1e-4, "float32": 1e-3}


def reference_step(method: str, dtype_name: str) -> float:
    """gradcheck's fixed step for its reference differences (see above)."""
    return _REFERENCE_STEP[(method, dtype_name)]


def extrapolate(coarse: Any, fine: Any, ratio: float = 4.0) -> Any:
    """Richardson extrapolation, xgrad's one formula for it: ``fine + (fine - coarse) / (r - 1)``.

    ``coarse`` and ``fine`` are estimates at steps h and h/2 whose leading error term
    shrinks by ``ratio`` when h is halved; the result cancels that term. For central
    differences (``ratio`` 4) it is ``(4 D(h/2) - D(h)) / 3``: ``method="richardson"`` with
    an explicit h (`numerical_diff`, `numerical_gradient`, `jacobian`), gradcheck's
    float32 reference and `hessian`'s two levels take this one step. The search's Neville
    tableau (`xgrad._engine`) applies it repeatedly, with ``ratio**j`` at column j; with
    ``h=None``, ``method="richardson"`` runs that tableau to the end (see `METHODS`).

    >>> extrapolate(5.0, 2.0)  # D(h) = 1 + 16 h**2 at h = 1/2 and 1/4: the limit, 1
    1.0
    """
    return fine + (fine - coarse) / (ratio - 1.0)


def finfo(xp: Any, dtype: Any) -> tuple[float, float]:
    """(eps, smallest normal) of a real floating dtype, as Python floats."""
    info = xp.finfo(dtype)
    return float(info.eps), float(info.smallest_normal)


def differencing_rtol(dtype_name: str, what: str = "x") -> float:
    """The default ``rtol`` of a derivative in a dtype (by name); refuses dtypes xgrad
    cannot difference. (Not `xgrad.testing.default_rtol`: that one compares arrays.)"""
    try:
        return _RTOL[dtype_name]
    except KeyError:
        raise ArgumentTypeError(
            f"{what}: expected float32 or float64 values (or integers, promoted to float64), "
            f"found {dtype_name}; finite differences in {dtype_name} keep too few digits: "
            "pass dtype='float32'"
        ) from None


def check_method(method: Any, allowed: tuple[str, ...] = tuple(METHODS)) -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ArgumentError(
            f"method: expected one of {', '.join(map(repr, allowed))}, found {method!r}"
        )
    return method


def check_step(h: Any) -> float | None:
    """Validate an explicit step: None or a positive finite real number."""
    if h is None:
        return None
    if isinstance(h, bool) or not hasattr(h, "__float__"):
        raise ArgumentTypeError(f"h: expected a positive float or None, found {h!r}")
    try:
        value = float(h)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"h: expected a positive float or None, found {h!r}") from None
    if not value > 0.0 or value == math.inf:
        raise ArgumentError(f"h: expected a positive finite step, found {h!r}")
    return value


def check_tolerances(rtol: Any, atol: Any, dtype_name: str) -> tuple[float, float | None]:
    """(rtol, atol) with defaults filled in; atol None means "the caller's default"."""
    values: list[float | None] = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is None:
            values.append(None)
            continue
        if isinstance(value, bool) or not hasattr(value, "__float__"):
            raise ArgumentTypeError(f"{name}: expected a non-negative float, found {value!r}")
        v = float(value)
        if not (v >= 0.0 and math.isfinite(v)):
            raise ArgumentError(f"{name}: expected a non-negative finite float, found {value!r}")
        values.append(v)
    r = values[0] if values[0] is not None else differencing_rtol(dtype_name)
    return r, values[1]


def check_on_failure(on_failure: Any) -> str:
    if on_failure not in ("warn", "raise"):
        raise ArgumentError(f"on_failure: expected 'warn' or 'raise', found {on_failure!r}")
    return on_failure


def representable(x: Any, h: Any) -> Any:
    """The step actually taken: ``(x + h) - x``, so the quotient divides by a true distance."""
    return (x + h) - x


def representable_steps(x: Any, h: Any) -> tuple[Any, Any]:
    """The steps a central difference at x actually takes: ``((x + h) - x, (x - h) - x)``.

    The distances to the two points as they are represented, so that the quotient
    ``(f(x + h) - f(x - h)) / (up - down)`` divides by their distance, not by ``2h``.

    >>> representable_steps(1.0, 1e-17)  # both points round to x
    (0.0, 0.0)
    """
    return (x + h) - x, (x - h) - x


def fixed_step(method: str, eps: float, scale: Any) -> Any:
    """One step for callers that take a single difference (``eps**exponent * scale``)."""
    return eps ** METHODS[method].exponent * scale


def complex_step(eps: float, scale: Any) -> Any:
    """The step of ``Im f(x + ih) / h`` (no cancellation, so any tiny step is exact)."""
    return fixed_step("complex", eps, scale)


def complex_dtype(xp: Any, dtype: Any, what: str = "method='complex'") -> Any:
    """The complex dtype matching a real one, or a clear error if the namespace has none."""
    eps, _ = finfo(xp, dtype)
    name = "complex128" if eps < 1e-10 else "complex64"
    cdtype = getattr(xp, name, None)
    if cdtype is None:
        raise ArgumentTypeError(f"{what}: the array namespace {xp.__name__} has no {name} dtype")
    return cdtype
