"""Gradient checkers on a mutation suite and a corpus of correct gradients, in one run.

Every case is a scalar function ``f(x)`` of one array (written once against the array API)
with its hand-written gradient ``g(x)``. The **correct corpus** is the 33 pairs as they are;
the **mutation suite** is 36 seeded bugs in those gradients: sign flips, missing factors,
transposed matrices, shifted indices, wrong masks, off-by-1e-3 scalings and bugs in one
element only. Each runs in float64 and float32 through:

- ``xgrad.gradcheck(f, x, grad=g)``, full mode and fast mode (3 probes), on every CPU row
  of the backend matrix (NumPy, array-api-strict on both devices, torch, JAX);
- ``torch.autograd.gradcheck`` (default, and ``fast_mode=True``) on a custom autograd
  Function whose backward is ``g``;
- ``jax.test_util.check_grads(order=1, modes=("rev",))`` on a ``jax.custom_vjp`` whose
  backward is ``g``.

A bug is caught when the checker fails; a false alarm is a failure on a correct pair.
Evaluations count calls of f (torch and JAX: calls of the forward). Fast mode's evaluation
count against full mode is measured separately at n = 1,000 and 10,000.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gradcheck.py --out docs/benchmarks/gradcheck.md
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import revision, write_atomic

import xgrad
from xgrad.backends import BackendUnavailableError
from xgrad.checking import miss_probability

N = 6
ROWS = ("numpy", "array_api_strict:CPU_DEVICE", "array_api_strict:device1", "torch:cpu", "jax:cpu")
DTYPES = ("float64", "float32")
_M = np.array(
    [
        [0.9, -0.2, 0.4, 0.0, 0.3, -0.1],
        [0.1, 1.1, -0.3, 0.2, 0.0, 0.5],
        [-0.4, 0.2, 0.8, 0.6, -0.2, 0.0],
        [0.3, 0.0, -0.5, 1.2, 0.1, -0.3],
        [0.0, 0.4, 0.2, -0.1, 0.7, 0.2],
        [0.2, -0.3, 0.0, 0.4, -0.6, 1.0],
    ]
)
_B = np.array([0.5, -1.0, 0.25, 0.0, 1.5, -0.5])
_W = np.array([1.0, -2.0, 0.5, 3.0, -1.5, 0.75])


# -- the corpus: (name, f, g) built for a namespace ---------------------------------------
def corpus(xp: Any, b: xgrad.Backend, dtype: str) -> dict[str, tuple[Callable, Callable]]:
    def c(a: np.ndarray) -> Any:
        return b.asarray(a, dtype=dtype)

    M, MT, S, B, W = c(_M), c(_M.T), c(_M + _M.T), c(_B), c(_W)
    zero1 = c(np.zeros(1))
    onehot = c(np.eye(N)[2])

    def sig(v: Any) -> Any:
        return 1.0 / (1.0 + xp.exp(-v))

    def softmax(v: Any) -> Any:
        e = xp.exp(v - xp.max(v))
        return e / xp.sum(e)

    def neighbours(v: Any) -> Any:
        return xp.concat([v[1:], zero1]) + xp.concat([zero1, v[:-1]])

    def rosen(v: Any) -> Any:
        return xp.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)

    def rosen_grad(v: Any) -> Any:
        d = v[1:] - v[:-1] ** 2
        left = -400.0 * v[:-1] * d - 2.0 * (1.0 - v[:-1])
        return xp.concat([left, zero1]) + xp.concat([zero1, 200.0 * d])

    n = float(N)

    def mm(a: Any, v: Any) -> Any:
        # The constant in the dtype of v: gradcheck's float64 reference copy of a float32
        # point must not meet float32 matrices (torch's matmul does not promote).
        return xp.astype(a, v.dtype) @ v

    return {
        "sum x^2": (lambda v: xp.sum(v * v), lambda v: 2.0 * v),
        "sum sin": (lambda v: xp.sum(xp.sin(v)), xp.cos),
        "sum exp": (lambda v: xp.sum(xp.exp(v)), xp.exp),
        "sum log(1+x^2)": (lambda v: xp.sum(xp.log1p(v * v)), lambda v: 2.0 * v / (1.0 + v * v)),
        "sum tanh": (lambda v: xp.sum(xp.tanh(v)), lambda v: 1.0 - xp.tanh(v) ** 2),
        "sum sigmoid": (lambda v: xp.sum(sig(v)), lambda v: sig(v) * (1.0 - sig(v))),
        "logsumexp": (lambda v: xp.max(v) + xp.log(xp.sum(xp.exp(v - xp.max(v)))), softmax),
        "sum x^3/3": (lambda v: xp.sum(v**3) / 3.0, lambda v: v * v),
        "norm": (lambda v: xp.sqrt(xp.sum(v * v)), lambda v: v / xp.sqrt(xp.sum(v * v))),
        "neighbour products": (lambda v: xp.sum(v[1:] * v[:-1]), neighbours),
        "x^T S x (symmetric)": (lambda v: xp.sum(v * mm(S, v)), lambda v: 2.0 * mm(S, v)),
        "x^T M x": (lambda v: xp.sum(v * mm(M, v)), lambda v: mm(M, v) + mm(MT, v)),
        "||Mx - b||^2": (
            lambda v: xp.sum((mm(M, v) - B) ** 2),
            lambda v: 2.0 * mm(MT, mm(M, v) - B),
        ),
        "softplus": (lambda v: xp.sum(xp.log1p(xp.exp(v))), sig),
        "sum sqrt(1+x^2)": (
            lambda v: xp.sum(xp.sqrt(1.0 + v * v)),
            lambda v: v / xp.sqrt(1.0 + v * v),
        ),
        "sum exp(-x^2)": (
            lambda v: xp.sum(xp.exp(-v * v)),
            lambda v: -2.0 * v * xp.exp(-v * v),
        ),
        "sum cos 2x": (lambda v: xp.sum(xp.cos(2.0 * v)), lambda v: -2.0 * xp.sin(2.0 * v)),
        "sum x e^x": (lambda v: xp.sum(v * xp.exp(v)), lambda v: (1.0 + v) * xp.exp(v)),
        "sum x^2 sin x": (
            lambda v: xp.sum(v * v * xp.sin(v)),
            lambda v: 2.0 * v * xp.sin(v) + v * v * xp.cos(v),
        ),
        "mean^2": (lambda v: xp.mean(v) ** 2, lambda v: 2.0 * xp.mean(v) / n + 0.0 * v),
        "variance": (
            lambda v: xp.mean((v - xp.mean(v)) ** 2),
            lambda v: 2.0 * (v - xp.mean(v)) / n,
        ),
        "sum atan": (lambda v: xp.sum(xp.atan(v)), lambda v: 1.0 / (1.0 + v * v)),
        "sum 1/(1+x^2)": (
            lambda v: xp.sum(1.0 / (1.0 + v * v)),
            lambda v: -2.0 * v / (1.0 + v * v) ** 2,
        ),
        "log sum x^2": (
            lambda v: xp.log(xp.sum(v * v)),
            lambda v: 2.0 * v / xp.sum(v * v),
        ),
        "sum x^4 - 3x^2": (
            lambda v: xp.sum(v**4 - 3.0 * v * v),
            lambda v: 4.0 * v**3 - 6.0 * v,
        ),
        "rosenbrock": (rosen, rosen_grad),
        "sum exp(sin x)": (
            lambda v: xp.sum(xp.exp(xp.sin(v))),
            lambda v: xp.cos(v) * xp.exp(xp.sin(v)),
        ),
        "cross-entropy": (
            lambda v: -(v[2] - (xp.max(v) + xp.log(xp.sum(xp.exp(v - xp.max(v)))))),
            lambda v: softmax(v) - onehot,
        ),
        "w . tanh x": (lambda v: xp.sum(W * xp.tanh(v)), lambda v: W * (1.0 - xp.tanh(v) ** 2)),
        "sum log cosh": (lambda v: xp.sum(xp.log(xp.cosh(v))), xp.tanh),
        "sum w x^2": (lambda v: xp.sum(W * v * v), lambda v: 2.0 * W * v),
        "sum x/(1+|x|)": (
            lambda v: xp.sum(v / (1.0 + xp.abs(v))),
            lambda v: 1.0 / (1.0 + xp.abs(v)) ** 2,
        ),
        "sum sin(x) cos(2x)": (
            lambda v: xp.sum(xp.sin(v) * xp.cos(2.0 * v)),
            lambda v: xp.cos(v) * xp.cos(2.0 * v) - 2.0 * xp.sin(v) * xp.sin(2.0 * v),
        ),
    }


# -- the mutation suite: (function, kind, mutated gradient) -----------------------------
def mutations(
    xp: Any, b: xgrad.Backend, dtype: str, pairs: dict[str, tuple[Callable, Callable]]
) -> list[tuple[str, str, Callable, Callable]]:
    def c(a: np.ndarray) -> Any:
        return b.asarray(a, dtype=dtype)

    M, S, B = c(_M), c(_M + _M.T), c(_B)
    zero1 = c(np.zeros(1))
    idx = xp.arange(N, device=b.device)

    def sign(g: Callable) -> Callable:
        return lambda v: -g(v)

    def scaled(g: Callable) -> Callable:
        return lambda v: g(v) * (1.0 + 1e-3)

    def one_element(g: Callable) -> Callable:
        def h(v: Any) -> Any:
            gv = g(v)
            return xp.where(idx == 2, gv + 1e-3 * xp.max(xp.abs(gv)), gv)

        return h

    def shifted(g: Callable) -> Callable:
        return lambda v: xp.concat([g(v)[1:], g(v)[:1]])

    def masked(g: Callable) -> Callable:
        return lambda v: xp.where(v > 0.0, g(v), 0.0 * v)

    def half(g: Callable) -> Callable:
        return lambda v: 0.5 * g(v)

    out = []
    generic = {
        "sign flip": (sign, ("sum sin", "logsumexp", "rosenbrock", "w . tanh x", "variance")),
        "off by 1e-3": (scaled, ("sum exp", "norm", "cross-entropy", "sum log cosh", "softplus")),
        "one element off by 1e-3": (
            one_element,
            ("sum x^2", "x^T M x", "sum tanh", "rosenbrock", "sum atan"),
        ),
        "shifted index": (shifted, ("neighbour products", "sum x^2 sin x", "sum w x^2")),
        "wrong mask": (masked, ("sum x^2", "sum exp(-x^2)", "sum x e^x", "sum sigmoid")),
        "missing factor 2": (half, ("sum cos 2x", "x^T S x (symmetric)", "||Mx - b||^2")),
    }
    for kind, (op, names) in generic.items():
        for name in names:
            f, g = pairs[name]
            out.append((name, kind, f, op(g)))

    def specific(name: str, kind: str, g: Callable) -> None:
        out.append((name, kind, pairs[name][0], g))

    def sig(v: Any) -> Any:
        return 1.0 / (1.0 + xp.exp(-v))

    specific("x^T M x", "transposed matrix", lambda v: 2.0 * (M @ v))
    specific("||Mx - b||^2", "transposed matrix", lambda v: 2.0 * (M @ (M @ v - B)))
    specific("logsumexp", "missing normalization", xp.exp)
    specific("cross-entropy", "missing one-hot term", lambda v: pairs["logsumexp"][1](v))
    specific("variance", "n-1 instead of n", lambda v: 2.0 * (v - xp.mean(v)) / (N - 1.0))
    specific("sum sigmoid", "s instead of s(1-s)", sig)
    specific("sum tanh", "1-tanh instead of 1-tanh^2", lambda v: 1.0 - xp.tanh(v))
    specific(
        "rosenbrock",
        "missing term",
        lambda v: (
            xp.concat([-400.0 * v[:-1] * (v[1:] - v[:-1] ** 2), zero1])
            + xp.concat([zero1, 200.0 * (v[1:] - v[:-1] ** 2)])
        ),
    )
    specific("norm", "missing sqrt", lambda v: v / xp.sum(v * v))
    specific("sum x e^x", "missing product-rule term", xp.exp)
    specific("x^T S x (symmetric)", "shifted index", lambda v: 2.0 * (S @ xp.flip(v)))
    return out


def point(dtype: str) -> np.ndarray:
    # Away from 0 (the x/(1+|x|) kink, the masks) and moderate (float32 exp, rosenbrock).
    x = np.random.default_rng(7).uniform(0.2, 0.9, N) * np.array([1, -1, 1, 1, -1, 1])
    return x.astype(dtype)


# -- runners -----------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.caught = self.bugs = self.alarms = self.correct = 0
        self.nfev: list[int] = []
        self.seconds = 0.0
        self.missed: list[str] = []
        self.false: list[str] = []
        self.noisy = 0

    def add(self, ok: bool, buggy: bool, nfev: int, seconds: float, label: str) -> None:
        self.nfev.append(nfev)
        self.seconds += seconds
        if buggy:
            self.bugs += 1
            self.caught += not ok
            if ok:
                self.missed.append(label)
        else:
            self.correct += 1
            self.alarms += not ok
            if not ok:
                self.false.append(label)


def run_xgrad(row: str, dtype: str, mode: str, tally: Tally) -> None:
    b = xgrad.get_backend(row)
    xp = b.xp
    pairs = corpus(xp, b, dtype)
    x = b.asarray(point(dtype), dtype=dtype)
    cases = [(n, "correct", f, g, False) for n, (f, g) in pairs.items()]
    cases += [(n, k, f, g, True) for n, k, f, g in mutations(xp, b, dtype, pairs)]
    for name, kind, f, g, buggy in cases:
        t0 = time.perf_counter()
        r = xgrad.gradcheck(f, x, grad=g, mode=mode)
        if not buggy and not r.passed and r.verdict == "finite differences too noisy":
            tally.noisy += 1
        tally.add(r.passed, buggy, r.nfev, time.perf_counter() - t0, f"{name} ({kind})")


def _torch_function(f: Callable, g: Callable, count: list[int]) -> Callable:
    """f with g as its backward, as a torch autograd Function; counts forward calls."""
    import torch

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, v: Any) -> Any:
            count[0] += 1
            ctx.save_for_backward(v)
            return f(v)

        @staticmethod
        def backward(ctx: Any, gy: Any) -> Any:
            (v,) = ctx.saved_tensors
            return gy * g(v)

    return Fn.apply


def _jax_function(f: Callable, g: Callable, count: list[int]) -> Callable:
    """f with g as its backward, as a jax.custom_vjp; counts forward calls."""
    import jax

    @jax.custom_vjp
    def h(v: Any) -> Any:
        count[0] += 1
        return f(v)

    def fwd(v: Any) -> Any:
        count[0] += 1
        return f(v), v

    def bwd(v: Any, ct: Any) -> Any:
        return (ct * g(v),)

    h.defvjp(fwd, bwd)
    return h


def run_torch(dtype: str, fast: bool, tally: Tally) -> None:
    import torch

    b = xgrad.get_backend("torch:cpu")
    pairs = corpus(b.xp, b, dtype)
    cases = [(n, "correct", f, g, False) for n, (f, g) in pairs.items()]
    cases += [(n, k, f, g, True) for n, k, f, g in mutations(b.xp, b, dtype, pairs)]
    error = importlib.import_module("torch.autograd.gradcheck").GradcheckError
    for name, kind, f, g, buggy in cases:
        count = [0]
        fn = _torch_function(f, g, count)
        x = torch.tensor(point(dtype), requires_grad=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "inputs are not double precision"
            try:
                ok = bool(torch.autograd.gradcheck(fn, (x,), fast_mode=fast))
            except error:
                ok = False
        tally.add(ok, buggy, count[0], time.perf_counter() - t0, f"{name} ({kind})")


def run_jax(dtype: str, tally: Tally) -> None:
    from jax.test_util import check_grads

    b = xgrad.get_backend("jax:cpu")
    pairs = corpus(b.xp, b, dtype)
    cases = [(n, "correct", f, g, False) for n, (f, g) in pairs.items()]
    cases += [(n, k, f, g, True) for n, k, f, g in mutations(b.xp, b, dtype, pairs)]
    for name, kind, f, g, buggy in cases:
        count = [0]
        h = _jax_function(f, g, count)
        x = b.asarray(point(dtype), dtype=dtype)
        t0 = time.perf_counter()
        try:
            check_grads(h, (x,), order=1, modes=("rev",))
            ok = True
        except AssertionError:
            ok = False
        tally.add(ok, buggy, count[0], time.perf_counter() - t0, f"{name} ({kind})")


def fast_vs_full(sizes: tuple[int, ...]) -> list[tuple[int, int, int, float, float, float]]:
    out = []
    for n in sizes:
        x = np.random.default_rng(0).standard_normal(n)

        def f(v: Any) -> Any:
            return np.sum(np.log1p(v * v))

        def g(v: Any) -> Any:
            return 2 * v / (1 + v * v)

        t0 = time.perf_counter()
        fast = xgrad.gradcheck(f, x, grad=g, mode="fast")
        t1 = time.perf_counter()
        full = xgrad.gradcheck(f, x, grad=g)
        t2 = time.perf_counter()
        assert fast.passed and full.passed
        out.append((n, fast.nfev, full.nfev, fast.miss_probability, t1 - t0, t2 - t1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="xgrad rows, comma-separated")
    parser.add_argument("--sizes", default="1000,10000", help="fast-vs-full sizes")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
    start = time.perf_counter()
    results: list[tuple[str, str, Tally]] = []
    for row in args.rows.split(","):
        try:
            xgrad.get_backend(row)
        except (BackendUnavailableError, ValueError) as exc:
            print(f"skipping {row}: {exc}", file=sys.stderr)
            continue
        for mode in ("full", "fast"):
            for dtype in DTYPES:
                t = Tally()
                run_xgrad(row, dtype, mode, t)
                results.append((f"xgrad {mode} ({row})", dtype, t))
                print(
                    f"xgrad {mode} {row} {dtype}: {t.caught}/{t.bugs} caught, "
                    f"{t.alarms}/{t.correct} false alarms",
                    file=sys.stderr,
                )
    if importlib.util.find_spec("torch"):
        for fast in (False, True):
            for dtype in DTYPES:
                t = Tally()
                run_torch(dtype, fast, t)
                label = "torch.autograd.gradcheck" + (" fast_mode" if fast else "")
                results.append((label, dtype, t))
    if importlib.util.find_spec("jax"):
        for dtype in DTYPES:
            t = Tally()
            run_jax(dtype, t)
            results.append(("jax check_grads", dtype, t))
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    scaling = fast_vs_full(sizes)
    elapsed = time.perf_counter() - start
    text = report(results, scaling, elapsed)
    print(text)
    if args.out:
        write_atomic(args.out, text)
    return 0


def report(
    results: list[tuple[str, str, Tally]],
    scaling: list[tuple[int, int, int, float, float, float]],
    elapsed: float,
) -> str:
    import torch

    versions = [f"xgrad {xgrad.__version__ if hasattr(xgrad, '__version__') else '0.1.0'}"]
    versions.append(f"NumPy {np.__version__}")
    versions.append(f"torch {torch.__version__}")
    try:
        import jax

        versions.append(f"JAX {jax.__version__}")
    except ImportError:
        pass
    head = results[0][2] if results else Tally()
    lines = [
        "# Gradient checkers: seeded bugs and correct gradients",
        "",
        "<!-- --8<-- [start:headline] -->",
        headline(results),
        "<!-- --8<-- [end:headline] -->",
        "",
        f"`benchmarks/bench_gradcheck.py`, one run ({elapsed:.0f} s), commit {revision()},"
        f" {', '.join(versions)}, Python {platform.python_version()},"
        f" {platform.machine()} with {os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}. Regenerate with"
        " `OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gradcheck.py --out"
        " docs/benchmarks/gradcheck.md`.",
        "",
        f"{head.correct} correct gradient/function pairs (n = {N}) and {head.bugs} seeded bugs"
        " in their gradients (sign flips, off-by-1e-3 scalings, one element off by 1e-3 of"
        " max|g|, shifted indices, wrong masks, missing factors, transposed matrices, missing"
        " terms or normalizations), each in float64 and float32, every checker with its"
        " defaults.",
        "",
        "| checker | dtype | bugs caught | false alarms | evaluations per check (median) |"
        " ms per check (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for label, dtype, t in results:
        n = len(t.nfev) or 1
        lines.append(
            f"| {label} | {dtype} | {t.caught}/{t.bugs} ({100 * t.caught / max(t.bugs, 1):.0f} %)"
            f" | {t.alarms}/{t.correct} ({100 * t.alarms / max(t.correct, 1):.0f} %)"
            f" | {int(np.median(t.nfev)) if t.nfev else 0} | {1000 * t.seconds / n:.1f} |"
        )
    lines += ["", "Missed bugs and false alarms:", ""]
    for label, dtype, t in results:
        if t.missed or t.false:
            missed = "; ".join(t.missed) or "none"
            false = "; ".join(t.false) or "none"
            lines.append(f"- {label}, {dtype}: missed {missed}. False alarms: {false}.")
    lines += [
        "",
        "## Fast mode against full mode",
        "",
        "`sum(log1p(x^2))` with its correct gradient on NumPy, float64; fast mode 3 probes.",
        "",
        "| n | fast evaluations | full evaluations | ratio | miss probability"
        " (error of relative norm 1e-3) | fast s | full s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, fe, fu, p, tf, tu in scaling:
        lines.append(f"| {n} | {fe} | {fu} | {fu / fe:.0f}x | {p:.1e} | {tf:.3f} | {tu:.2f} |")
    lines += [
        "",
        "- **bugs caught**: the checker failed on a mutated gradient; **false alarms**: it"
        ' failed on a correct one. xgrad\'s "finite differences too noisy" verdict counts as'
        " a failure here.",
        "- **evaluations**: calls of f (torch, JAX: calls of the custom function's forward).",
        "- Fast mode compares random projections u^T J v: a bug confined to one element is"
        " diluted by ~1/sqrt(n) in each projection and can pass below the tolerance; the"
        " stated miss probability is for an error of relative norm 1e-3"
        f" ({miss_probability(1e-6, 3):.1e} in float64 and"
        f" {miss_probability(1e-4, 3):.1e} in float32 for 3 probes).",
        "",
    ]
    return "\n".join(lines)


def headline(results: list[tuple[str, str, Tally]]) -> str:
    parts = []
    for label, dtype, t in results:
        if label.startswith("xgrad full") and "(numpy)" not in label:
            continue
        parts.append(f"{label} {dtype}: {t.caught}/{t.bugs} caught, {t.alarms} false alarms")
    xg = [t for label, _, t in results if label.startswith("xgrad full")]
    every = (
        f"xgrad full mode on all {len(xg) // 2} CPU rows:"
        f" {sum(t.caught for t in xg)}/{sum(t.bugs for t in xg)} caught,"
        f" {sum(t.alarms for t in xg)} false alarms. "
    )
    return every + "; ".join(parts) + "."


if __name__ == "__main__":
    raise SystemExit(main())
