"""The numerical differentiation guide's figure: error of d/dx exp(x) at x = 1 versus step h.

Usage: python docs/scripts/error_vs_step.py [BACKEND] [--out DIR]
Writes error_vs_step.png into --out, $XGRAD_DOCS_OUT or a new temporary directory (the docs
build runs this script; the figure is never committed). Prints, per dtype and method, the
error at the book's h = 1e-4 and at xgrad's default step.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import xgrad

# The examples' helper: matplotlib.pyplot, or a stand-in that draws nothing without it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _example import draws, pyplot

plt = pyplot()

METHODS = ("forward", "central", "richardson", "complex")
STYLE = {"forward": "C0", "central": "C1", "richardson": "C2", "complex": "C3"}


def errors(b: xgrad.Backend, dtype: str, method: str, steps: np.ndarray) -> np.ndarray:
    """|numerical_diff(exp, 1) - e| per step; nan where h was too small to change x."""
    xp = b.xp
    x = b.asarray([1.0], dtype=dtype)
    exact = math.e
    out = np.full(steps.shape, np.nan)
    for k, h in enumerate(steps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = numerical_diff_value(xp.exp, x, float(h), method)
        if not caught and np.isfinite(d):
            out[k] = abs(d - exact)
    return out


def numerical_diff_value(f, x, h, method):
    try:
        return float(xgrad.to_numpy(xgrad.numerical_diff(f, x, h, method=method))[0])
    except ValueError:
        return math.nan


def default_point(b: xgrad.Backend, dtype: str, method: str) -> tuple[float, float]:
    """(step, error) of numerical_diff with h=None."""
    r = xgrad.numerical_diff(
        b.xp.exp, b.asarray([1.0], dtype=dtype), method=method, full_output=True
    )
    df = float(xgrad.to_numpy(r.df)[0])
    step = float(np.ravel(xgrad.to_numpy(r.step))[0])
    return step, abs(df - math.e)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", nargs="?", help="numpy, torch, jax, cupy, array_api_strict")
    parser.add_argument("--out", default=os.environ.get("XGRAD_DOCS_OUT"))
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="xgrad-docs-"))
    out.mkdir(parents=True, exist_ok=True)
    b = xgrad.get_backend(args.backend)

    steps = np.logspace(-15, 0, 76)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    print(f"d/dx exp(x) at x = 1 on {b.spec}: absolute error")
    print(f"{'dtype':8} {'method':11} {'h=1e-4':>9} {'default':>9} {'default h':>10}")
    for ax, dtype in zip(axes, ("float64", "float32"), strict=True):
        eps = float(np.finfo(dtype).eps)
        for method in METHODS:
            err = errors(b, dtype, method, steps)
            floor = eps * math.e / 4  # plot zero errors at the bottom of the axes
            # Complex step has the same h**2 truncation as central: dashed, to see both.
            ax.loglog(
                steps,
                np.where(err == 0, floor, err),
                color=STYLE[method],
                label=method,
                linestyle="--" if method == "complex" else "-",
            )
            h0, e0 = default_point(b, dtype, method)
            # Complex step's default eps**2 lies off the axis: a triangle at its left edge.
            marker = "o" if h0 >= steps[0] else "<"
            ax.loglog(
                [max(h0, steps[0])],
                [max(e0, floor)],
                marker,
                color=STYLE[method],
                markersize=7,
                markeredgecolor="black",
            )
            book = errors(b, dtype, method, np.array([1e-4]))[0]
            print(f"{dtype:8} {method:11} {book:9.1e} {e0:9.1e} {h0:10.1e}")
        ax.axvline(1e-4, color="grey", linestyle=":", linewidth=1)
        ax.text(1.2e-4, 1e-1, "book's h = 1e-4", color="grey", fontsize=8)
        ax.set_title(f"{dtype} (eps = {eps:.1e})")
        ax.set_xlabel("step h")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("|error| (dots: xgrad's default step)")
    axes[0].set_ylim(1e-17, 10)
    axes[0].set_xlim(steps[0] / 2, 2.0)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "error_vs_step.png", dpi=80)
    plt.close(fig)
    if draws(plt):
        print("figure:", out / "error_vs_step.png", file=sys.stderr)


if __name__ == "__main__":
    main()
