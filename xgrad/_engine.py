"""The error-controlled search behind every ``h=None`` derivative, written once.

`search` runs the policy of `xgrad._policy` over an *evaluator*: an object whose
``evaluate(points, active)`` returns f at each element's perturbed point (for
`numerical_diff` f itself, elementwise; for `numerical_gradient` and `jacobian` f at x with
one element replaced). The same algorithm therefore serves Python floats (`ScalarOps`, the
microsecond path), arrays of any namespace, the in-place book evaluator and the stacked
functional one.

Per element (or per Jacobian entry), in order, stopping where the tolerance is met:

1. a Neville tableau of `FIRST_LEVELS` levels at the wide scale ``max(|x|, 1)``;
2. a tableau of as many levels at the narrow scale (absolute steps where |x| >= 1, steps
   relative to |x| where |x| < 1), started at least four levels below the first;
3. the narrow tableau (or, where the scales nearly coincide, the wide one) continued to
   smaller steps until it converges or stalls; where the narrow one did not converge, the
   wide one continued as well (f smooth on the scale of 1 but computed with cancellation
   at relative steps);
4. where no central estimate is finite (a domain edge at x), one-sided tableaus;
5. where an estimate converged at the last level computed, one level more: a converged
   estimate's error is at least the distance from it to the nearest entry of the level
   after it. Two levels that agree may agree by chance (f noisier than its rounding:
   sin(100 x) in float32 agreed to 1.2e-3 at one level, the next lay 8.7e-3 away, the
   error was 1.8e-3), and a search that stops at the first agreement stops at exactly
   such a chance. richardson's exhaustive search is confirmed the same way (its best of
   every level's estimates is the likeliest chance of all: hard-suite float64 coverage
   53/62 -> 58/61), and its error is also at least the scatter of the levels after its
   best one (58/61 -> 60/61). In float32 the error is also at least how far f' moves
   within x's own rounding (`xgrad._policy.argument_rounding`), and each level's rounding
   bound holds f's rounding of its own arguments (`xgrad._policy.argument_noise`).

Then each element gets a status: a converged estimate whose even part grows linearly in h
(a slope jump: ``f(x+h) + f(x-h) - 2 f(x)`` ~ J|h| instead of ~ h**2) is a kink; an
unconverged one whose quotients grow as h shrinks is a jump, pole or infinite slope; one
whose levels disagree far above the rounding model is noisy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xgrad import _policy
from xgrad._policy import DiffStatus

__all__ = ["Outcome", "first_stage", "search"]


@dataclass
class Outcome:
    """What `search` finds: per element (entry) arrays, or Python floats for a scalar."""

    df: Any
    error: Any
    status: Any
    step: Any
    nfev: int


class _Tableau:
    """Neville's tableau of one stencil at steps ``top * step_factor(k)`` (``top`` per element).

    The steps are not halvings (`xgrad._policy.FIRST_STEPS`), so column j at level k
    extrapolates with the factor of their ratio, taken from the widths actually used
    (`xgrad._policy.width_ratio`).
    """

    def __init__(self, ops: Any, x: Any, top: Any, stencil: _policy.Stencil, eps: float):
        self.ops, self.x, self.top, self.stencil, self.eps = ops, x, top, stencil, eps
        self.k = 0
        # Per element, the level where this tableau's own history starts (a continued
        # tableau restarts some elements at a new scale).
        self.first: Any = 0.0
        self.fmax: Any = None
        self.prev: list[Any] = []
        self.before: list[Any] = []
        # Per level: quotient D, even part S = f(x+h) + f(x-h), step, rounding bound, and
        # the slope jump J estimated from the last three levels (0 where none is seen).
        self.D: list[Any] = []
        self.S: list[Any] = []
        self.h: list[Any] = []
        # Per level, the distance between its two points as represented: at large |x| (and
        # in float32) small steps round to multiples of x's spacing, and Neville's factors
        # are those of the steps taken, not the nominal ones (tan at 1e4 in float32: the
        # bar was 2.7 times below the error). The first FIRST_LEVELS levels, at least 1 %
        # of the scale, use the nominal factors, as `first_stage` does (the same bits).
        self.width: list[Any] = []
        self.rnd: list[Any] = []
        self.jump: list[Any] = []
        self.raw: list[Any] = []
        # Per level, the step up as taken (with width, the one down): the even residual's
        # nodes (`_residual_noise`).
        self.up: list[Any] = []

    def level(self, active: Any, f0: Any) -> list[tuple[Any, Any]]:
        """Evaluate the next level; return its extrapolated entries ``(value, error)``."""
        ops, st, x = self.ops, self.stencil, self.x
        h = self.top * _policy.step_factor(self.k)
        pa = x + st.a * h if st.a else x
        pb = x + st.b * h if st.b else x
        if self.k in ops.preset and self.top is ops.preset_top:
            va, vb = ops.preset.pop(self.k)
        elif st.b == 0.0:
            (va,) = ops.evaluate([pa], active)
            vb = f0
        elif st.a == 0.0:
            (vb,) = ops.evaluate([pb], active)
            va = f0
        else:
            va, vb = ops.evaluate([pa, pb], active)
        width = ops.lift(pa - pb)
        with ops.quiet():
            d = ops.div(va - vb, width)
            fmax = ops.maximum(ops.abs(va), ops.abs(vb))
            noise, moved = fmax, _policy.argument_noise(self.eps)
            if moved:
                # f rounds its own arguments (w x in cos(w x)): its values move with |x f'|.
                noise = noise + moved * ops.lift(ops.abs(x)) * ops.abs(d)
            rnd = ops.div(2.0 * ops.eps_f * noise, ops.abs(width))
            self.fmax = fmax
            row = [d]
            entries = []
            self.width.append(ops.abs(width))
            for j in range(1, self.k + 1):
                lower = row[j - 1]
                r = (
                    _policy.neville_ratio(self.k, j, st.ratio)
                    if self.k < _policy.FIRST_LEVELS
                    else _policy.width_ratio(self.width[self.k - j], self.width[self.k], st.ratio)
                )
                t = _policy.extrapolate(self.prev[j - 1], lower, r)
                e = ops.maximum(ops.abs(t - lower), ops.abs(t - self.prev[j - 1]))
                e = e + 2.0 * rnd + ops.eps_f * ops.abs(t) + ops.err_floor
                entries.append((t, ops.finite_or_inf(e, t)))
                row.append(t)
            self.before, self.prev = self.prev, row
            self.D.append(d)
            self.h.append(ops.lift(h))
            self.rnd.append(rnd)
            if st.a == -st.b:
                self.S.append(va + vb)
                self.up.append(pa - x)
                self.jump.append(self._jump())
        self.k += 1
        return entries

    def _jump(self) -> Any:
        """Slope jump J seen by the last three levels, or 0 where the even part is smooth.

        With S(h) = 2 f(x) + J h + c h**2 + ..., J is the linear coefficient of the
        parabola through the last three levels (`xgrad._policy.jump_weights`; steps h, h/2,
        h/4 give ``J = -2 ((S0 - S1) - 4 (S1 - S2)) / h``); for smooth f this is
        ~1.4 h**3 f''''/12 and falls 8-fold per halving, for a kink it stays J: keep J
        where it did not fall by half since the previous level and stands above rounding.
        """
        ops = self.ops
        if len(self.S) < 3:
            self.raw.append(None)
            return ops.zeros_entry()
        s0, s1, s2 = self.S[-3:]
        h = self.h[-3]
        a, b = _policy.jump_weights(self.k)
        raw = (a * (s0 - s1) + b * (s1 - s2)) / h
        self.raw.append(raw)
        previous = self.raw[-2] if len(self.raw) >= 2 else None
        if previous is None:
            # The first estimate has nothing to be compared with: the next level decides.
            return ops.zeros_entry()
        big = ops.maximum(ops.abs(s0), ops.maximum(ops.abs(s1), ops.abs(s2)))
        seen = ops.isfinite(raw) & (ops.abs(raw) * h > 64.0 * ops.eps_f * big)
        seen = seen & (ops.abs(raw) > 0.5 * ops.abs(previous))
        return ops.where(seen, raw, 0.0)

    def diverging(self) -> Any:
        """Whether |D| grew by DIVERGENCE_RATIO at each of the last two halvings."""
        ops = self.ops
        if len(self.D) < 3:
            return ops.full_entry(False)
        d0, d1, d2 = (ops.abs(d) for d in self.D[-3:])
        r = _policy.DIVERGENCE_RATIO
        grows = (d1 > r * d0) & (d2 > r * d1) & ops.isfinite(d2)
        return grows


def _continued(ops: Any, tab: _Tableau, fresh: Any, top_fresh: Any) -> _Tableau:
    """``tab`` continued to smaller steps; ``fresh`` elements restart at ``top_fresh``.

    Restarted elements keep no history (nan), so their extrapolations build up anew from
    the first new level, at steps ``top_fresh * step_factor(k + j) / step_factor(k)``.
    """
    k = tab.k
    restart = top_fresh / _policy.step_factor(k)
    out = _Tableau(ops, tab.x, ops.where(fresh, restart, tab.top), tab.stencil, tab.eps)
    out.k = k
    keep = ops.lift(ops.logical_not(fresh))

    def mix(values: list[Any]) -> list[Any]:
        return [v if v is None else ops.where(keep, v, math.nan) for v in values]

    out.prev, out.D, out.S, out.h = mix(tab.prev), mix(tab.D), mix(tab.S), mix(tab.h)
    out.rnd, out.jump, out.raw = mix(tab.rnd), mix(tab.jump), mix(tab.raw)
    out.width = mix(tab.width)
    out.up = list(tab.up)
    return out


class _Best:
    """The best estimate so far per entry, with what its status needs."""

    def __init__(
        self, ops: Any, rtol: float, atol: float | None, normwise: bool, wide: Any, eps: float
    ) -> None:
        self.ops, self.rtol, self.atol, self.normwise, self.eps = ops, rtol, atol, normwise, eps
        # f's rounding floor per unit of x's scale: an estimate within FLOOR eps |f| / scale
        # of the truth is as good as f's own rounding allows (f'(x) = 0, x**2 at 0).
        self.wide = ops.lift(wide)
        self.fmax = ops.full_entry(0.0)
        self.df = ops.full_entry(math.nan)
        self.err = ops.full_entry(math.inf)
        self.score = ops.full_entry(math.inf)
        # Where the best entry came from: tableau number and level (for step, rounding and
        # the slope-jump window, looked up at the end).
        self.src = ops.full_entry(-1.0)
        self.lev = ops.full_entry(-1.0)
        self.since = ops.full_entry(0.0)
        # How far the first-column estimates of the levels since the best one strayed from
        # it: where rounding (or noise) has taken over, the scatter the best entry's own
        # estimate, a chance agreement of two noisy levels, may not show.
        self.scatter = ops.full_entry(0.0)
        # A converged best entry is confirmed by the level after it (see `_search`):
        # whether it has been, and how far the nearest entry of that level lies from it.
        self.confirmed = ops.full_entry(False)
        self.contra = ops.full_entry(0.0)

    def awaiting(self, tab: _Tableau, src: float) -> Any:
        """Converged entries whose confirming level is ``tab``'s next one.

        Not those of the wide scale's first FIRST_LEVELS levels: there the agreement of
        four levels is what `first_stage` accepts unconfirmed, and a search must not
        judge the same estimate differently (levels already computed still confirm).
        """
        pending = self.converged() & self.ops.logical_not(self.confirmed)
        # Sources 0 and 2 are the wide tableau and its continuation (3, 4: one-sided).
        first = (self.lev < float(_policy.FIRST_LEVELS)) & (self.src <= 2.0)
        pending = pending & self.ops.logical_not(first)
        return pending & (self.src == src) & (self.lev == float(tab.k - 1))

    def offer(
        self,
        entries: list[tuple[Any, Any]],
        act: Any,
        tab: _Tableau,
        src: float,
        watch: Any = None,
    ) -> None:
        """Keep, per entry, the candidate with the smallest error relative to its tolerance.

        Errors are compared relative to the estimate (not absolutely): a tableau whose steps
        are far too large gives a small, wrong estimate with an absolute error just as small.
        ``watch``: entries evaluated only to confirm their best (never improved by them).
        """
        if not entries:
            return
        ops = self.ops
        k = tab.k - 1
        scale = self._scale(tab.fmax)
        improved = ops.full_entry(False)
        for t, e in entries:
            score = self._score(t, e, scale)
            better = (score < self.score) & act
            self.df = ops.where(better, t, self.df)
            self.err = ops.where(better, e, self.err)
            self.score = ops.where(better, score, self.score)
            improved = improved | better
        self.fmax = ops.where(improved, tab.fmax, self.fmax)
        self.src = ops.where(improved, src, self.src)
        self.lev = ops.where(improved, float(k), self.lev)
        self.since = ops.where(improved, 0.0, self.since + 1.0)
        dev = ops.abs(entries[0][0] - self.df)
        strayed = act & ops.isfinite(dev) & (dev > self.scatter)
        self.scatter = ops.where(improved, 0.0, ops.where(strayed, dev, self.scatter))
        self._confirm(entries, act if watch is None else act | watch, improved, k, src)

    def _confirm(
        self, entries: list[tuple[Any, Any]], seen: Any, improved: Any, k: int, src: float
    ) -> None:
        """Record the level right after each best entry: its nearest entry's distance."""
        ops = self.ops
        near: Any = None
        for t, _e in entries:
            gap = ops.abs(t - self.df)
            gap = ops.where(ops.isfinite(gap), gap, math.inf)
            near = gap if near is None else ops.minimum(near, gap)
        after = seen & (self.src == src) & (self.lev == float(k - 1)) & ops.isfinite(near)
        after = after & ops.logical_not(improved)
        self.confirmed = (self.confirmed | after) & ops.logical_not(improved)
        self.contra = ops.where(improved, 0.0, ops.where(after, near, self.contra))

    def _floor(self, fmax: Any) -> Any:
        return self.ops.div(_policy.FLOOR * self.eps * fmax, self.wide)

    def _scale(self, fmax: Any) -> Any:
        return self._floor(fmax) + (self.atol or 0.0)

    def _score(self, t: Any, e: Any, scale: Any) -> Any:
        return self.ops.div(e, self.rtol * self.ops.abs(t) + scale + self.ops.tiny)

    def widen(self, where: Any, extra: Any) -> None:
        """Add ``extra`` to the best entries' errors where ``where``, and score them anew."""
        ops = self.ops
        self.err = ops.where(where, self.err + extra, self.err)
        score = self._score(self.df, self.err, self._scale(self.fmax))
        self.score = ops.where(where, score, self.score)

    def tolerance(self) -> Any:
        """``atol + rtol * |df|`` per entry (atol norm-wise by default for gradients)."""
        ops = self.ops
        scale = ops.abs(self.df)
        if self.atol is not None:
            atol: Any = self.atol
        elif self.normwise:
            atol = self.rtol * ops.finite_max(scale)
        else:
            atol = 0.0
        return atol + self.rtol * scale

    def strict(self) -> Any:
        return self.err <= self.tolerance()

    def converged(self) -> Any:
        """Within the tolerance, or an exact zero within f's rounding floor.

        Every quotient exactly 0 (f symmetric about x, or not depending on it) has no
        relative error to speak of: its error is f's rounding, judged against the floor.
        """
        zero = (self.df == 0.0) & (self.err <= self._floor(self.fmax))
        return self.strict() | zero

    def stalled(self) -> Any:
        """Ridders' stop: no better estimate for STALL_LEVELS levels, once resolved.

        Until an estimate is within RESOLVED of its value, steps are still too large for f
        (high frequency, a narrow peak) and worse levels say nothing about rounding.
        """
        resolved = self.score * self.rtol < _policy.RESOLVED
        return (self.since >= _policy.STALL_LEVELS) & resolved

    def pick(self, tabs: dict[float, _Tableau], attr: str, fill: float, offset: int = 0) -> Any:
        """Per entry, ``tab.<attr>[level + offset]`` of the tableau and level the best came
        from (``fill`` where there is none).

        For ``jump`` the level after the best one is used where it exists (the window of
        the best entry plus one level), and never one before the fourth.
        """
        ops = self.ops
        out = ops.full_entry(fill)
        for src, tab in tabs.items():
            values = getattr(tab, attr)
            for k, v in enumerate(values):
                if attr == "jump":
                    first = ops.lift(tab.first) if hasattr(tab.first, "shape") else tab.first
                    start = first + 3.0 + 0.0 * self.lev
                    want = ops.minimum(ops.maximum(self.lev + 1.0, start), float(len(values) - 1))
                else:
                    want = self.lev + float(offset)
                out = ops.where((self.src == src) & (want == float(k)), v, out)
        return out


def search(ops: Any, x: Any, method: str, *args: Any, **kwargs: Any) -> Outcome:
    """The error-controlled derivative of `ops`'s function at x (see `_search`)."""
    # Steps that overflow f or leave its domain are expected: they are what the search
    # steps away from, not something to warn about.
    with ops.quiet():
        return _search(ops, x, method, *args, **kwargs)


def _search(
    ops: Any,
    x: Any,
    method: str,
    eps: float,
    tiny: float,
    rtol: float,
    atol: float | None,
    *,
    normwise: bool = False,
    f0: Callable[[], Any] | None = None,
) -> Outcome:
    """The error-controlled derivative of `ops`'s function at x (see the module docstring).

    ``ops`` supplies evaluation and elementwise arithmetic (`xgrad._evaluators`); ``f0``
    returns f at x itself (needed by one-sided tableaus). ``normwise``: a default atol of
    ``rtol * max|df|`` (gradients and Jacobians, whose small entries are judged against the
    largest), else 0 (independent elements).
    """
    exhaustive = method == "richardson"
    stencil = _policy.METHODS[method]
    central = stencil.a == -stencil.b
    nfev = 0
    ax = ops.abs(x)
    wide = ops.maximum(ax, 1.0)
    best = _Best(ops, rtol, atol, normwise, wide, eps)
    # Relative steps stay normal numbers; x = 0 has no relative scale.
    narrow = ops.where(ax < 1.0, ops.where(ax > 0.0, ops.maximum(ax, math.sqrt(tiny)), 1.0), 1.0)
    first_step = _policy.top(eps)
    top_wide = wide * first_step
    top_narrow = ops.minimum(
        narrow * first_step, top_wide * _policy.step_factor(_policy.FIRST_LEVELS)
    )
    at_x = _AtX(ops, f0) if f0 is not None else None
    center: Any = None
    if not central:
        center = at_x() if at_x is not None else None

    def active() -> Any:
        stalled = best.stalled()
        if exhaustive:
            return ops.logical_not(stalled)
        return ops.logical_not(best.converged() | stalled)

    def run(tab: _Tableau, src: float, levels: int, fc: Any, only: Any = None) -> None:
        nonlocal nfev
        for _ in range(levels):
            if tab.k >= _policy.MAX_LEVELS:
                return
            # Four levels at least per tableau: the slope-jump test compares two windows.
            forced = tab.first + _policy.FIRST_LEVELS > tab.k
            act = active() | (ops.lift(forced) if hasattr(forced, "shape") else forced)
            if only is not None:
                act = act & ops.lift(only)
            watch = best.awaiting(tab, src) & ops.logical_not(act)
            if not ops.any(act | watch):
                return
            entries = tab.level(ops.element_any(act | watch), fc)
            nfev += 2 if tab.stencil.a and tab.stencil.b else 1
            best.offer(entries, act, tab, src, watch)

    tabs: dict[float, _Tableau] = {}
    if getattr(ops, "preset", None) and central:
        top_wide = ops.preset_top
    tabs[0.0] = last = _Tableau(ops, x, top_wide, stencil, eps)
    run(tabs[0.0], 0.0, _policy.FIRST_LEVELS, center)
    again = ops.full_entry(False)
    if central:
        _add_noise_bar(ops, best, tabs[0.0], at_x, rtol, atol)
        again = _look_again(ops, best, tabs, at_x)
    if ops.any(active() | again):
        # Smaller steps where the wide scale did not converge: the narrow scale, started
        # afresh where it is far below the wide one, else the wide tableau continued.
        fresh = top_narrow < top_wide * _policy.step_factor(_policy.FIRST_LEVELS) * 0.99
        fresh = fresh & ops.element_any(active() | again)
        tabs[2.0] = last = _continued(ops, tabs[0.0], fresh, top_narrow)
        last.first = ops.where(fresh | ops.element_any(again), float(last.k), 0.0)
        best.src = ops.where((best.src == 0.0) & ops.lift(ops.logical_not(fresh)), 2.0, best.src)
        best.since = ops.full_entry(0.0)
        run(last, 2.0, _policy.MAX_LEVELS, center)
        diverging = last.diverging()
        # Where the narrow scale did not converge either, the wide tableau continued: f
        # smooth on the scale of 1 but computed with cancellation near x (log(1 + x) / x at
        # 1e-6) is noise at relative steps and converges at smaller absolute ones.
        retry = fresh & ops.element_any(ops.logical_not(best.converged()))
        if ops.any(retry):
            best.since = ops.where(ops.lift(retry), 0.0, float(_policy.STALL_LEVELS))
            run(tabs[0.0], 0.0, _policy.MAX_LEVELS, center, only=retry)
            diverging = ops.where(ops.lift(retry), tabs[0.0].diverging(), diverging)
    else:
        diverging = last.diverging()

    if central and at_x is not None and ops.any(ops.logical_not(ops.isfinite(best.err))):
        # A domain edge at x: no central quotient is finite; differences on one side are.
        center = at_x()
        for n, name in enumerate(("forward", "backward")):
            missing = ops.logical_not(ops.isfinite(best.err))
            if not ops.any(missing):
                break
            src = 3.0 + n
            tabs[src] = one = _Tableau(ops, x, top_narrow, _policy.METHODS[name], eps)
            best.since = ops.where(missing, 0.0, float(_policy.STALL_LEVELS))
            run(one, src, _policy.MAX_LEVELS // 2, center)
            diverging = ops.where(missing & ops.isfinite(best.err), one.diverging(), diverging)

    nfev += _confirm_last(ops, best, tabs, center)
    if central:
        _add_deep_noise_bar(ops, best, tabs, at_x)
    nfev += at_x.calls if at_x is not None else 0
    if central and _policy.argument_rounding(eps):
        _add_argument_rounding(ops, best, tabs, x, eps)
    step = best.pick(tabs, "h", math.nan)
    rnd = best.pick(tabs, "rnd", math.inf)
    jump = best.pick(tabs, "jump", 0.0) if central else ops.full_entry(0.0)
    status = _classify(ops, best, rnd, jump, diverging)
    # A noisy element's error is at least the scatter of the levels after its best one; so
    # is richardson's, whose best is a chance agreement of all levels' (module docstring).
    scattered = ops.full_entry(True) if exhaustive else status == float(DiffStatus.NOISY)
    error = ops.where(scattered, ops.maximum(best.err, best.scatter), best.err)
    return Outcome(best.df, error, status, step, nfev)


def _confirm_last(ops: Any, best: _Best, tabs: dict[float, _Tableau], center: Any) -> int:
    """One level more where an entry converged at the last level computed; f's calls.

    The confirmed error is at least the distance to that level's nearest entry.
    """
    calls = 0
    for src, tab in list(tabs.items()):
        watch = best.awaiting(tab, src)
        if tab.k < _policy.MAX_LEVELS and ops.any(watch):
            entries = tab.level(ops.element_any(watch), center)
            calls += 2 if tab.stencil.a and tab.stencil.b else 1
            best.offer(entries, ops.full_entry(False), tab, src, watch)
    best.err = ops.maximum(best.err, best.contra)
    return calls


def _add_deep_noise_bar(
    ops: Any, best: _Best, tabs: dict[float, _Tableau], at_x: _AtX | None
) -> None:
    """The noise bar of converged entries beyond the first levels (`_policy.ENTRY_GAIN`).

    The confirming level bounds the error by its nearest entry's distance, and two noisy
    levels may agree by chance as well as one level's T33 and T22 do (bench_noisy: 23
    answers at level 4, confirmed by level 5, off by up to 8.5e-8, unflagged). f's noise
    s is the smallest even residual of the windows of 7, 6 and 5 levels ending at the
    confirming one: the smallest, because a smooth f's h^(2n) terms and a window reaching
    a large step (1/(x-1) at 1+1e-7, whose top level nears the pole) inflate some windows
    but noise inflates all. Four levels and f(x) are a last window, where the bar so far
    would fail the entry, so that smooth entries pay no call for f(x). The bar is
    ``NOISE_KAPPA ENTRY_GAIN s / h`` at the best entry's step h.
    """
    deep = best.converged() & (best.lev >= float(_policy.FIRST_LEVELS))
    # A slope jump's even part is not noise: `_classify` calls it a kink, from the error
    # before any bar.
    jump = best.pick(tabs, "jump", 0.0)
    deep = deep & (ops.abs(jump) <= _policy.KINK_FACTOR * (best.tolerance() + best.err))
    if not ops.any(deep):
        return
    end = ops.where(best.confirmed, best.lev + 1.0, best.lev)
    sigma = ops.full_entry(math.nan)
    step = best.pick(tabs, "h", math.nan)
    gain = _policy.NOISE_KAPPA * _policy.ENTRY_GAIN
    tol = best.tolerance()
    want = deep
    for n, with_fx in _WINDOWS:
        if with_fx:
            # f(x) costs a call: only where the bar so far would fail the entry.
            want = deep & ops.logical_not(best.err + ops.div(gain * sigma, step) <= tol)
            if at_x is None or not ops.any(want):
                continue
        fx = at_x() if with_fx and at_x is not None else None
        one = _residual_noise(ops, best, tabs, want, end, n, fx)
        sigma = ops.where(ops.isfinite(one) & ops.logical_not(sigma <= one), one, sigma)
    bar = ops.div(gain * sigma, step)
    best.err = ops.where(deep & ops.isfinite(bar), best.err + bar, best.err)


_WINDOWS = [(7, False), (6, False), (5, False), (4, True)]


def _residual_noise(
    ops: Any,
    best: _Best,
    tabs: dict[float, _Tableau],
    want: Any,
    end: Any,
    n: int,
    fx: Any,
) -> Any:
    """f's noise per entry from the even residual of the levels ending at ``end``.

    ``n`` levels, less f(x) where it is given (``fx``), the window moved up to the fourth
    level of a restarted tableau (levels before it hold nan there). At the steps as taken:
    at small steps x +- h round unevenly (by up to x's spacing), and the odd part that
    leaks into S, ``f' (up - down)``, and the nodes' shift would pass for noise (sin at
    1e10, cos(x**2) at 100, 1/(x - 1) at 1 + 1e-7 were flagged, right to 1e-12, when the
    nominal steps were used).
    """
    sigma = ops.full_entry(math.nan)
    for src, tab in tabs.items():
        if len(tab.S) < n:
            continue
        mine = want & (best.src == src)
        for e in range(n - 1, len(tab.S)):
            at = mine & (end == float(e))
            if not ops.any(at):
                continue
            window = range(e - n + 1, e + 1)
            nodes, even = [], []
            for m in window:
                up = ops.lift(tab.up[m])
                down = tab.width[m] - up
                nodes.append(0.5 * (up * up + down * down))
                even.append(tab.S[m] - tab.D[m] * (up - down))
            weights, gain = _policy.even_residual(nodes, fx is not None)
            residual = -2.0 * fx if fx is not None else 0.0
            for w, value in zip(weights, even, strict=True):
                residual = residual + w * value
            sigma = ops.where(at, ops.div(ops.abs(residual), gain), sigma)
    return sigma


def _add_argument_rounding(
    ops: Any, best: _Best, tabs: dict[float, _Tableau], x: Any, eps: float
) -> None:
    """Raise the error to how far f' moves within x's own rounding: ``|f''| eps |x|``.

    f'' comes from the even parts of the best level and of the one that confirmed it.
    """
    s0, s1 = best.pick(tabs, "S", math.nan), best.pick(tabs, "S", math.nan, offset=1)
    h0, h1 = best.pick(tabs, "h", math.nan), best.pick(tabs, "h", math.nan, offset=1)
    curvature = ops.abs(ops.div(s0 - s1, h0 * h0 - h1 * h1))
    moved = (_policy.argument_rounding(eps) * eps) * ops.lift(ops.abs(x)) * curvature
    best.err = ops.where(ops.isfinite(moved), ops.maximum(best.err, moved), best.err)


def _look_again(ops: Any, best: _Best, tabs: dict[float, _Tableau], at_x: _AtX | None) -> Any:
    """Entries the wide scale converged on that smaller steps must confirm.

    Look again at smaller steps, on the other scale, where the first one may deceive: a
    slope jump may be aliasing (periodic f, steps near a multiple of its period), where a
    kink persists; an exact zero may be x below the step's resolution (x**2 at 1e-150), or
    f exactly 0 all around a point where it is not (a narrow peak): then f(x) is not 0.
    Suspect entries lose their score, so that any later estimate replaces them.
    """
    converged = best.converged()
    jump = best.pick(tabs, "jump", 0.0)
    suspect = converged & (ops.abs(jump) > _policy.KINK_FACTOR * best.tolerance())
    zeros = converged & (best.fmax == 0.0)
    if at_x is not None and ops.any(zeros):
        suspect = suspect | (zeros & (ops.abs(at_x()) > 0.0))
    best.score = ops.where(suspect, math.inf, best.score)
    return suspect | (converged & ops.logical_not(best.strict()))


class _AtX:
    """f(x), evaluated once however many parts of a search need it, or the first stage's."""

    def __init__(self, ops: Any, f0: Callable[[], Any]) -> None:
        self.ops, self.f0, self.calls, self.value = ops, f0, 0, None

    def __call__(self) -> Any:
        if self.value is None:
            preset = getattr(self.ops, "preset_fx", None)
            self.value = self.f0() if preset is None else preset
            self.calls = 1
        return self.value


def _add_noise_bar(
    ops: Any, best: _Best, tab: _Tableau, at_x: _AtX | None, rtol: float, atol: float | None
) -> None:
    """The first stage's noise bar on best entries from the wide scale's first levels.

    `first_stage` adds it to T33's error where T33 - T22 is not far below the tolerance;
    the search does the same to its entries from those levels (T33's bar, the largest of
    theirs), or it would accept what the first stage refused, unconfirmed (`_Best.awaiting`).
    """
    if at_x is None or tab.k != _policy.FIRST_LEVELS or len(tab.S) != tab.k:
        return
    t33, t22 = tab.prev[3], tab.before[2]
    tol = rtol * ops.abs(t33)
    if atol is not None:
        tol = tol + atol
    screen = ops.abs(t33 - t22) > tol / _policy.NOISE_SCREEN
    # Only converged entries: one that is not stays unconverged whatever its bar, since
    # later levels replace it only with better ones (and f(x) costs a call).
    screen = screen & best.converged()
    screen = screen & (best.src == 0.0) & (best.lev < float(_policy.FIRST_LEVELS))
    if not ops.any(screen):
        return
    noise = _noise_bar(tuple(tab.S), at_x(), ops.lift(tab.top))
    best.widen(screen & ops.isfinite(noise), noise)


def _classify(ops: Any, best: _Best, rnd: Any, jump: Any, diverging: Any) -> Any:
    converged = best.converged()
    finite = ops.isfinite(best.err) & ops.isfinite(best.df)
    kink = ops.abs(jump) > _policy.KINK_FACTOR * (best.tolerance() + best.err)
    stalled = best.stalled()
    noisy = ops.full_entry(bool(ops.low_precision)) | (
        stalled & (best.err > _policy.NOISE_FACTOR * rnd)
    )
    code = DiffStatus
    status = ops.full_entry(float(code.TOLERANCE_NOT_MET))
    status = ops.where(noisy, float(code.NOISY), status)
    status = ops.where(diverging, float(code.NOT_DIFFERENTIABLE), status)
    status = ops.where(converged, float(code.CONVERGED), status)
    status = ops.where(kink & finite, float(code.NOT_DIFFERENTIABLE), status)
    return ops.where(finite, status, float(code.NOT_FINITE))


# The first stage's Neville divisors for level 3 (columns 1 to 3) and its slope-jump
# weights, from the nominal steps (at the first stage's steps, at least 1 % of the scale,
# the widths taken differ from them by rounding only).
_FIRST_FACTORS = (
    _policy.neville_ratio(3, 1, 4.0) - 1.0,
    _policy.neville_ratio(3, 2, 4.0) - 1.0,
    _policy.neville_ratio(3, 3, 4.0) - 1.0,
    *_policy.jump_weights(3),
)
_S1, _S2, _S3 = _policy.FIRST_STEPS[1:]
# Levels 1 and 2: Neville's divisors and the slope-jump weights.
_Q11 = _policy.neville_ratio(1, 1, 4.0) - 1.0
_Q21 = _policy.neville_ratio(2, 1, 4.0) - 1.0
_Q22 = _policy.neville_ratio(2, 2, 4.0) - 1.0
_J2 = _policy.jump_weights(2)


def first_stage(
    ops: Any, x: Any, eps: float, rtol: float, atol: float | None
) -> tuple[Any, Any, Any, Any, int]:
    """The search's common outcome, in few operations: (df, error, step, ok, f's calls).

    The wide-scale tableau's four levels, all stencil points in one evaluation, and its
    top entry T33 with Numerical Recipes' error estimate; where that is not far below the
    tolerance, f(x) as well, for the noise bar (`_policy.NOISE_WEIGHT`). ``ok`` where
    the error meets the tolerance and the even part shows no slope jump: there `search`
    would stop too (on the same estimate or one of its neighbours); elsewhere run `search`.
    """
    wide = ops.maximum(ops.abs(x), 1.0)
    top = wide * _policy.top(eps)
    # The tableau's first steps (its x + top * 1.0 is x + top, the same bits).
    h1, h2, h3 = top * _S1, top * _S2, top * _S3
    pts = [x + top, x + h1, x + h2, x + h3, x - top, x - h1, x - h2, x - h3]
    fa0, fa1, fa2, fa3, fb0, fb1, fb2, fb3 = ops.evaluate(pts, True)
    q31, q32, q33, ja, jb = _FIRST_FACTORS
    # Should the search run, its wide tableau starts from these values.
    fa_fb = [(fa0, fb0), (fa1, fb1), (fa2, fb2), (fa3, fb3)]
    ops.preset = dict(enumerate(fa_fb))
    ops.preset_top = top
    nfev = 8
    if ops.low_precision:
        return x, x, x, ops.full_entry(False), nfev
    # Augmented assignments on fresh temporaries: the same operations in the same order
    # as first_stage_float (so the same bits), without an allocation per operation
    # (immutable arrays, JAX's, rebind instead).
    with ops.quiet():
        d = []
        for k in range(4):
            dk = fa_fb[k][0] - fa_fb[k][1]
            dk /= pts[k] - pts[k + 4]
            d.append(dk)
        d0, d1, d2, d3 = d
        w3 = pts[3] - pts[7]
        t11 = d1 - d0
        t11 /= _Q11
        t11 += d1
        t21 = d2 - d1
        t21 /= _Q21
        t21 += d2
        t31 = d3 - d2
        t31 /= q31
        t31 += d3
        t22 = t21 - t11
        t22 /= _Q22
        t22 += t21
        t32 = t31 - t21
        t32 /= q32
        t32 += t31
        t33 = t32 - t22
        t33 /= q33
        t33 += t32
        # Numerical Recipes' max(|T33 - T32|, |T33 - T22|) is always the second: T33 - T32
        # is (T32 - T22) / q33, T33 - T22 is (q33 + 1) / q33 of it.
        err = ops.abs(t33 - t22)
        rounding = ops.maximum(ops.abs(fa3), ops.abs(fb3))
        moved = _policy.argument_noise(eps)
        if moved:
            rounding += moved * ops.abs(x) * ops.abs(d3)
        rounding *= 4.0 * eps
        rounding /= ops.abs(w3)
        err += rounding
        size = ops.abs(t33)
        err += eps * size
        if ops.err_floor:
            err += ops.err_floor
        tol = rtol * size
        if atol is not None:
            tol += atol
        s0, s1, s2, s3 = fa0 + fb0, fa1 + fb1, fa2 + fb2, fa3 + fb3
        # Not where T33 fails anyway: f(x) costs a call.
        screen = (ops.abs(t33 - t22) > tol / _policy.NOISE_SCREEN) & (err <= tol)
        if ops.any(screen):
            (fx,) = ops.evaluate([x], screen)
            ops.preset_fx = fx
            nfev += 1
            noise = _noise_bar((s0, s1, s2, s3), fx, top)
            err = ops.where(screen & ops.isfinite(noise), err + noise, err)
        j2 = fa0 + fb0 - s1
        j2 *= _J2[0]
        inner = s1 - s2
        inner *= _J2[1]
        j2 += inner
        j2 /= top
        inner = s2 - s3
        inner *= jb
        j3 = s1 - s2
        j3 *= ja
        j3 += inner
        j3 /= h1
        big = ops.maximum(ops.abs(s1), ops.maximum(ops.abs(s2), ops.abs(s3)))
        aj3 = ops.abs(j3)
        jump = (aj3 * h1 > (64.0 * eps) * big) & (aj3 > 0.5 * ops.abs(j2))
        jump = jump & (aj3 > _policy.KINK_FACTOR * (tol + err))
        # An exact zero is left to the search: f may be 0 all around x but not at x.
        ok = (err <= tol) & ops.logical_not(jump) & ops.isfinite(t33) & (t33 != 0.0)
    return t33, err, h3, ok, nfev


def _noise_bar(even: tuple[Any, Any, Any, Any], fx: Any, top: Any) -> Any:
    """T33's bar for noise in f, from the first levels' even parts and f(x) (`_policy`).

    Plain operators, on Python floats and arrays alike (top > 0), so that both first
    stages give the same bits. Where f(x) is not finite (a removable singularity at x) it
    is nan: no noise bar.
    """
    w0, w1, w2, w3 = _policy.EVEN_WEIGHTS
    s0, s1, s2, s3 = even
    residual = w0 * s0 + w1 * s1 + w2 * s2 + w3 * s3 - 2.0 * fx
    return _policy.NOISE_WEIGHT * abs(residual) / top


def _float_of(f: Callable[[float], Any], p: float) -> float | None:
    """f(p) for `first_stage_float`: nan outside f's domain (math.log raises), as in
    ScalarOps; Python floats, and NumPy's float64 scalars (a float subclass: np.sin of a
    float), as the floats they are; None for anything else (float32, arrays), the
    search's to judge."""
    try:
        v = f(p)
    except (ArithmeticError, ValueError, RuntimeWarning):
        return math.nan
    return float(v) if isinstance(v, float) else None


def first_stage_float(
    f: Callable[[float], Any],
    x: float,
    eps: float,
    rtol: float,
    atol: float | None,
    seed: Any = None,
) -> tuple[float, float, float, int] | None:
    """`first_stage` for a Python float and an f of Python floats, in a few microseconds.

    The same operations in the same order (tested to give the same bits), without the
    ops indirection. None where it does not apply or does not succeed: f returned
    anything but floats (Python or NumPy float64), or the result is not ``ok``; `search`
    decides then, starting from the values computed here (left in ``seed.preset`` when
    all eight are floats).
    """
    wide = abs(x)
    if wide < 1.0:
        wide = 1.0
    top = wide * _policy.TOP
    h1, h2, h3 = top * _S1, top * _S2, top * _S3
    q31, q32, q33, ja, jb = _FIRST_FACTORS
    a0, a1, a2, a3 = x + top, x + h1, x + h2, x + h3
    b0, b1, b2, b3 = x - top, x - h1, x - h2, x - h3
    values = []
    for p in (a0, a1, a2, a3, b0, b1, b2, b3):
        v = _float_of(f, p)
        if v is None:
            return None
        values.append(v)
    fa0, fa1, fa2, fa3, fb0, fb1, fb2, fb3 = values
    if seed is not None:
        seed.preset = {0: (fa0, fb0), 1: (fa1, fb1), 2: (fa2, fb2), 3: (fa3, fb3)}
        seed.preset_top = top
    d0 = (fa0 - fb0) / (a0 - b0)
    d1 = (fa1 - fb1) / (a1 - b1)
    d2 = (fa2 - fb2) / (a2 - b2)
    w3 = a3 - b3
    d3 = (fa3 - fb3) / w3
    t11 = d1 + (d1 - d0) / _Q11
    t21 = d2 + (d2 - d1) / _Q21
    t31 = d3 + (d3 - d2) / q31
    t22 = t21 + (t21 - t11) / _Q22
    t32 = t31 + (t31 - t21) / q32
    t33 = t32 + (t32 - t22) / q33
    big3 = abs(fa3) if abs(fa3) >= abs(fb3) else abs(fb3)
    err = abs(t33 - t22) + (4.0 * eps) * big3 / abs(w3) + eps * abs(t33)
    tol = rtol * abs(t33)
    if atol is not None:
        tol = tol + atol
    s0, s1, s2, s3 = fa0 + fb0, fa1 + fb1, fa2 + fb2, fa3 + fb3
    nfev = 8
    if abs(t33 - t22) > tol / _policy.NOISE_SCREEN and err <= tol:
        fx = _float_of(f, x)
        if fx is None:
            return None
        nfev = 9
        if seed is not None:
            seed.preset_fx = fx
        noise = _noise_bar((s0, s1, s2, s3), fx, top)
        if math.isfinite(noise):
            err = err + noise
    j2 = (_J2[0] * (fa0 + fb0 - s1) + _J2[1] * (s1 - s2)) / top
    j3 = (ja * (s1 - s2) + jb * (s2 - s3)) / h1
    big = max(abs(s1), abs(s2), abs(s3))
    aj3 = abs(j3)
    jump = aj3 * h1 > (64.0 * eps) * big and aj3 > 0.5 * abs(j2)
    jump = jump and aj3 > _policy.KINK_FACTOR * (tol + err)
    if err <= tol and not jump and math.isfinite(t33) and t33 != 0.0:
        return t33, err, h3, nfev
    return None
