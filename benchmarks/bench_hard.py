"""Hard cases: is a numerical derivative right, flagged, or silently wrong?

Every case of `xgrad.testing.hard_suite` (oscillatory at large |x|, high frequency, huge and
tiny magnitudes, domain edges, removable singularities, polynomials at large |x|, narrow
peaks, noisy f, kinks and jumps, poles) in float64 and float32, with xgrad's default
(central, h=None), xgrad's richardson, scipy.differentiate.derivative and
numdifftools.Derivative, each with its defaults, side by side in one run on NumPy (CPU,
one BLAS thread). Also the eleven smooth cases of `xgrad.testing.smooth_suite`.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_hard.py --out docs/benchmarks/hard.md

Without ``--out`` the tables are only printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import Counted, revision, write_atomic

import xgrad
from xgrad import numerical_diff
from xgrad.testing import HARD_CATEGORIES, HardCase, hard_suite, smooth_suite

ROOT = Path(__file__).resolve().parent.parent
DTYPES = ("float64", "float32")
# Unflagged and off by more than this (relative; absolute where the derivative is 0) is
# silently wrong: the targets.
THRESHOLD = {"float64": 1e-8, "float32": 1e-2}


@dataclass
class Outcome:
    """One tool on one case in one dtype."""

    df: float
    flagged: bool
    why: str  # how it was flagged ("" if not)
    error: float  # the tool's own error estimate (nan if it gives none)
    evals: int  # points at which f was evaluated
    seconds: float  # best time of one call
    note: str = ""  # e.g. a full_output status that disagrees with the plain call


def timed(call: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(Exception):
            call()
        best = min(best, time.perf_counter() - start)
    return best


def as_float(value: Any) -> float:
    try:
        return float(np.asarray(xgrad.to_numpy(value), dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        return math.nan


def xgrad_tool(method: str) -> Callable[[Callable[[Any], Any], Any, int], Outcome]:
    """xgrad as a user sees it: the plain call (warnings, errors), and full_output for the
    error estimate and status."""

    def run(f: Callable[[Any], Any], x: Any, repeat: int) -> Outcome:
        counted = Counted(f)
        why = ""
        df = math.nan
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                df = as_float(numerical_diff(counted, x, method=method))
            except Exception as exc:  # any error is visible to the user: flagged
                why = f"raises {type(exc).__name__}"
        if not why and any(issubclass(w.category, xgrad.AccuracyWarning) for w in caught):
            why = "AccuracyWarning"
        if not why and not math.isfinite(df):
            why = "non-finite"
        error, note = math.nan, ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                full = numerical_diff(f, x, method=method, full_output=True)
            except Exception as exc:
                full = None
                if not why:
                    note = f"full_output raises {type(exc).__name__}"
        if full is not None:
            error = as_float(full.error)
            # Until the engine reports a status, a result without one counts as converged.
            status = getattr(full, "status", None)
            code = 0 if status is None else int(as_float(status))
            success = getattr(full, "success", None)
            ok = code == 0 if success is None else bool(as_float(success))
            if not ok and not why:
                why = f"status {code}"
                note = "plain call unflagged, full_output status flags it"
            elif ok and why and "raises" not in why:
                note = f"full_output status {code} (success) but the plain call flags it"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = timed(lambda: numerical_diff(f, x, method=method), repeat)
        return Outcome(df, bool(why), why, error, counted.points, seconds, note)

    return run


def scipy_tool(f: Callable[[Any], Any], x: Any, repeat: int) -> Outcome:
    from scipy.differentiate import derivative

    counted = Counted(f)
    why, df, error = "", math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = derivative(counted, x)
            df, error = as_float(res.df), as_float(res.error)
            status = int(as_float(res.status))
            if status != 0:
                why = f"status {status}"
        except Exception as exc:
            why = f"raises {type(exc).__name__}"
        if not why and not math.isfinite(df):
            why = "non-finite"
        seconds = timed(lambda: derivative(f, x), repeat)
    return Outcome(df, bool(why), why, error, counted.points, seconds)


def numdifftools_tool(f: Callable[[Any], Any], x: Any, repeat: int) -> Outcome:
    import numdifftools as nd

    counted = Counted(f)
    why, df, error = "", math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = nd.Derivative(counted, full_output=True)(x)
            if hasattr(res, "estimate"):  # numdifftools >= 0.11: one EstimateResult
                value, info = res.estimate, res
            else:  # older: (derivative, info)
                value, info = res
            df, error = as_float(value), as_float(info.error_estimate)
        except Exception as exc:
            why = f"raises {type(exc).__name__}"
        if not why and not math.isfinite(df):
            why = "non-finite"
        seconds = timed(lambda: nd.Derivative(f)(x), repeat)
    return Outcome(df, bool(why), why, error, counted.points, seconds)


TOOLS: dict[str, Callable[[Callable[[Any], Any], Any, int], Outcome]] = {
    "xgrad default": xgrad_tool("central"),
    "xgrad richardson": xgrad_tool("richardson"),
    "scipy.differentiate": scipy_tool,
    "numdifftools": numdifftools_tool,
}


def true_error(got: float, exact: float) -> float:
    """Relative error; absolute where the exact derivative is 0."""
    if not math.isfinite(got):
        return math.inf
    return abs(got - exact) / abs(exact) if exact != 0.0 else abs(got)


def verdict(out: Outcome, exact: float | None, dtype: str) -> str:
    """right, flagged or wrong (silently wrong)."""
    if out.flagged:
        return "flagged"
    if exact is None:  # no derivative (in this dtype): any unflagged answer is wrong
        return "wrong"
    return "right" if true_error(out.df, exact) <= THRESHOLD[dtype] else "wrong"


def covered(out: Outcome, exact: float | None) -> bool:
    """The true error is within the tool's reported error."""
    return exact is not None and abs(out.df - exact) <= out.error


def run_suite(cases: list[HardCase], repeat: int) -> dict[tuple[str, str], list[Outcome]]:
    results: dict[tuple[str, str], list[Outcome]] = {}
    for dtype in DTYPES:
        for tool, run in TOOLS.items():
            outs = []
            for case in cases:
                with np.errstate(all="ignore"):
                    x = np.asarray(case.point, dtype=dtype)
                    outs.append(run(case.f, x, repeat))
            results[tool, dtype] = outs
    return results


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    return f"{value:.1e}"


def summary_table(cases: list[HardCase], results: dict) -> list[str]:
    lines = [
        "| tool | dtype | right | flagged (of which accurate) | silently wrong | error-bar "
        "coverage | evaluations per point | us per point |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype in DTYPES:
        refs = [c.reference(dtype) for c in cases]
        for tool in TOOLS:
            outs = results[tool, dtype]
            verdicts = [verdict(o, r, dtype) for o, r in zip(outs, refs, strict=True)]
            accurate_flags = sum(
                v == "flagged" and r is not None and true_error(o.df, r) <= THRESHOLD[dtype]
                for o, r, v in zip(outs, refs, verdicts, strict=True)
            )
            unflagged = [
                (o, r) for o, r in zip(outs, refs, strict=True) if not o.flagged and r is not None
            ]
            cov = sum(covered(o, r) for o, r in unflagged)
            cov_text = f"{cov}/{len(unflagged)}" + (
                f" ({100 * cov / len(unflagged):.0f} %)" if unflagged else ""
            )
            evals = np.mean([o.evals for o in outs])
            us = np.median([o.seconds for o in outs]) * 1e6
            lines.append(
                f"| {tool} | {dtype} | {verdicts.count('right')} | "
                f"{verdicts.count('flagged')} ({accurate_flags}) | {verdicts.count('wrong')} | "
                f"{cov_text} | {evals:.1f} | {us:.0f} |"
            )
    return lines


def category_table(cases: list[HardCase], results: dict) -> list[str]:
    """Silently wrong per category (float64 / float32)."""
    head = "| category | cases | " + " | ".join(TOOLS) + " |"
    lines = [head, "|---|---|" + "---|" * len(TOOLS)]
    for category in HARD_CATEGORIES:
        idx = [i for i, c in enumerate(cases) if c.category == category]
        cells = []
        for tool in TOOLS:
            counts = []
            for dtype in DTYPES:
                outs = results[tool, dtype]
                counts.append(
                    sum(verdict(outs[i], cases[i].reference(dtype), dtype) == "wrong" for i in idx)
                )
            cells.append(f"{counts[0]} / {counts[1]}")
        lines.append(f"| {category} | {len(idx)} | " + " | ".join(cells) + " |")
    return lines


def cell(out: Outcome, exact: float | None, dtype: str) -> str:
    v = verdict(out, exact, dtype)
    err = "-" if exact is None else fmt(true_error(out.df, exact))
    if v == "right":
        return f"ok {err}"
    if v == "wrong":
        return f"**WRONG** {err}" if exact is not None else f"**WRONG** ({fmt(out.df)})"
    return f"flag ({short_why(out.why)}) {err}"


def short_why(why: str) -> str:
    if why.startswith("raises "):
        return "raise " + why.removeprefix("raises ").removesuffix("Error")
    return {"AccuracyWarning": "warn", "non-finite": "nan"}.get(why, why)


def per_case_table(cases: list[HardCase], results: dict, dtype: str) -> list[str]:
    lines = [
        "| case | category | exact | " + " | ".join(TOOLS) + " |",
        "|---|---|---|" + "---|" * len(TOOLS),
    ]
    for i, case in enumerate(cases):
        exact = case.reference(dtype)
        exact_text = "none" if exact is None else f"{exact:.6g}"
        cells = [cell(results[tool, dtype][i], exact, dtype) for tool in TOOLS]
        name = case.name.replace("|", "\\|")  # sqrt(|x|): a bare | would split the cell
        lines.append(f"| {name} | {case.category} | {exact_text} | " + " | ".join(cells) + " |")
    return lines


def smooth_table(repeat: int) -> list[str]:
    cases = smooth_suite(np)
    lines = [
        "| tool | dtype | median rel. error | worst rel. error | flagged | evaluations per "
        "point | us per point |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype in DTYPES:
        for tool, run in TOOLS.items():
            errors, flags, evals, secs = [], 0, [], []
            for _, f, df, point in cases:
                x = np.asarray(point, dtype=dtype)
                out = run(f, x, repeat)
                exact = float(df(np.float64(x)))
                errors.append(true_error(out.df, exact))
                flags += out.flagged
                evals.append(out.evals)
                secs.append(out.seconds)
            lines.append(
                f"| {tool} | {dtype} | {fmt(float(np.median(errors)))} | "
                f"{fmt(float(np.max(errors)))} | {flags} | {np.mean(evals):.1f} | "
                f"{np.median(secs) * 1e6:.0f} |"
            )
    return lines


def targets(cases: list[HardCase], results: dict) -> list[str]:
    """The issue's targets that this run can check, for xgrad's default."""
    lines = []
    sc, xg = results["scipy.differentiate", "float64"], results["xgrad default", "float64"]
    solved = [
        i
        for i, c in enumerate(cases)
        if c.reference("float64") is not None
        and not sc[i].flagged
        and true_error(sc[i].df, c.reference("float64")) <= 1e-10
    ]
    missed = [
        cases[i].name
        for i in solved
        if verdict(xg[i], cases[i].reference("float64"), "float64") != "right"
    ]
    lines.append(
        f"- Cases scipy's defaults solve to 1e-10 in float64: {len(solved)}; xgrad's default "
        f"does not solve (unflagged, within 1e-8) {len(missed)} of them"
        + (f": {', '.join(missed)}." if missed else ".")
    )
    notes = [
        f"{cases[i].name} ({dtype}, {tool}): {out.note}"
        for tool in ("xgrad default", "xgrad richardson")
        for dtype in DTYPES
        for i, out in enumerate(results[tool, dtype])
        if out.note
    ]
    if notes:
        lines.append(
            "- Where xgrad's plain call and its full_output status disagree: "
            + "; ".join(notes)
            + "."
        )
    return lines


def headline(cases: list[HardCase], results: dict) -> str:
    """One sentence for docs/benchmarks.md (included from the table's page)."""
    parts = []
    for tool in TOOLS:
        counts = [
            sum(
                verdict(o, c.reference(dtype), dtype) == "wrong"
                for o, c in zip(results[tool, dtype], cases, strict=True)
            )
            for dtype in DTYPES
        ]
        parts.append(f"{tool} {counts[0]} / {counts[1]}")
    return (
        f"Silently wrong (unflagged and off by more than {THRESHOLD['float64']:g} in float64 / "
        f"{THRESHOLD['float32']:g} in float32) on the {len(cases)} hard cases, float64 / "
        f"float32: {', '.join(parts)}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the tables (markdown) to this file")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats per call")
    parser.add_argument(
        "--category",
        action="append",
        choices=HARD_CATEGORIES,
        help="only these categories (repeatable; for a quick look, not for the table)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat: expected a positive integer, found {args.repeat}")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    import numdifftools
    import scipy

    cases = [c for c in hard_suite(np) if not args.category or c.category in args.category]
    start = time.perf_counter()
    results = run_suite(cases, args.repeat)
    smooth = smooth_table(args.repeat)
    elapsed = time.perf_counter() - start

    lines = [
        "# Hard cases: right, flagged or silently wrong",
        "",
        # A section docs/benchmarks.md includes (pymdownx.snippets).
        "<!-- --8<-- [start:headline] -->",
        headline(cases, results),
        "<!-- --8<-- [end:headline] -->",
        "",
        f"`benchmarks/bench_hard.py`, one run ({elapsed:.0f} s), xgrad {xgrad.__version__} "
        f"(commit {revision()}), NumPy {np.__version__}, SciPy {scipy.__version__}, "
        f"numdifftools {numdifftools.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} with {os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS=1. "
        "Regenerate with `OPENBLAS_NUM_THREADS=1 python benchmarks/bench_hard.py "
        "--out docs/benchmarks/hard.md`.",
        "",
        f"{len(cases)} cases of `xgrad.testing.hard_suite` "
        f"({', '.join(HARD_CATEGORIES)}), each in float64 and float32 (x a 0-d NumPy array "
        "of that dtype), every tool with its defaults: xgrad `numerical_diff(f, x)` "
        '(central, `h=None`) and `method="richardson"`, `scipy.differentiate.derivative(f, x)`, '
        "`numdifftools.Derivative(f)(x)`.",
        "",
        "## Summary",
        "",
        *summary_table(cases, results),
        "",
        "- **right**: not flagged, and the true error (relative; absolute where the exact "
        f"derivative is 0) is at most {THRESHOLD['float64']:g} in float64, "
        f"{THRESHOLD['float32']:g} in float32.",
        "- **silently wrong**: not flagged and a larger error; where no derivative exists "
        "(kinks, jumps, poles, or a point or derivative that float32 cannot represent: exp at "
        "600, log at 1e-300 rounded to 0), any unflagged answer. A derivative that underflows "
        "in the dtype (exp at -700 in float32) is 0.",
        "- **flagged**, xgrad: the plain call warns `AccuracyWarning` or raises (e.g. "
        "`NonFiniteError`), returns a non-finite value, or `full_output=True` reports "
        "`success=False` (`status != DiffStatus.CONVERGED`); a result without a status (the "
        "engine before issue 10) counts as converged. scipy: `status != 0`, a non-finite "
        "`df`, or an exception. numdifftools has no flag: only a non-finite value or an "
        'exception counts (its own warnings do not). "of which accurate": flagged answers '
        "that were within the threshold anyway.",
        "- **error-bar coverage**: among unflagged answers where a derivative exists, how "
        "often the true absolute error is at most the tool's own estimate (xgrad "
        "`DiffResult.error`, scipy `error`, numdifftools `info.error_estimate`).",
        "- **evaluations**: points at which f was evaluated (mean over cases); **time**: "
        "median over cases of the best of "
        f"{args.repeat} calls. numdifftools converts x to float64, so its float32 rows solve "
        "the float64 problem at the float32 point.",
        "",
        "Silently wrong per category (float64 / float32):",
        "",
        *category_table(cases, results),
        "",
        "Targets of issue 10 this run checks:",
        "",
        *targets(cases, results),
        "",
        "## Smooth suite",
        "",
        "The eleven cases of `xgrad.testing.smooth_suite` (relative error against the "
        "analytic derivative at the point rounded to the dtype).",
        "",
        *smooth,
        "",
    ]
    for dtype in DTYPES:
        lines += [
            f"## Per case, {dtype}",
            "",
            "Each cell: verdict (ok, flag, **WRONG**) and the true error; for flags, how: "
            "warn (AccuracyWarning), raise X (XError), status k, nan (a non-finite value); "
            "for a case without a derivative, the unflagged value in parentheses.",
            "",
            *per_case_table(cases, results, dtype),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
