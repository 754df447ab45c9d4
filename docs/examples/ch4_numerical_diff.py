"""Book section 4.3: numerical differentiation, the tangent line and partial derivatives.

Usage: python docs/examples/ch4_numerical_diff.py [BACKEND] [--out DIR]
(BACKEND defaults to $XGRAD_BACKEND, else numpy; figures go to --out, $XGRAD_DOCS_OUT or a
new temporary directory).
"""

from __future__ import annotations

import sys

import numpy as np
from _example import draws, example_parser, output_dir, pyplot

import xgrad

plt = pyplot()  # matplotlib.pyplot, or a stand-in that draws nothing without it


def main(argv: list[str] | None = None) -> None:
    parser = example_parser(__doc__)
    args = parser.parse_args(argv)
    out = output_dir(args.out)

    # --8<-- [start:diff]
    from xgrad import numerical_diff

    b = xgrad.get_backend(args.backend)  # None: $XGRAD_BACKEND, else numpy
    print("backend:", b.spec)

    def function_1(x):
        return 0.01 * x**2 + 0.1 * x

    # The book's numerical_diff is the central difference with h = 1e-4: pass h to get its
    # numbers bit for bit. Without h, xgrad chooses the step (and is more accurate).
    for x0 in (5.0, 10.0):
        x = b.asarray(x0)  # a 0-d array on the backend's device
        book = float(numerical_diff(function_1, x, h=1e-4))
        auto = float(numerical_diff(function_1, x))
        print(
            f"numerical_diff(function_1, {x0:g}): h=1e-4 {book!r}, default h {auto!r}, "
            f"exact {0.02 * x0 + 0.1:g}"
        )
    # --8<-- [end:diff]

    # --8<-- [start:tangent]
    # numerical_diff is elementwise: one call differentiates at every point of an array.
    x = b.asarray(np.arange(0.0, 20.0, 0.1))
    slope = numerical_diff(function_1, x)
    print(
        "max |slope - exact| on [0, 20):",
        float(np.max(np.abs(xgrad.to_numpy(slope) - (0.02 * xgrad.to_numpy(x) + 0.1)))),
    )

    def tangent_line(f, x0):
        d = numerical_diff(f, b.asarray(x0), h=1e-4)
        y0 = f(b.asarray(x0)) - d * x0
        return lambda t: d * t + y0

    tf = tangent_line(function_1, 5.0)
    plt.figure(figsize=(5, 3.5))
    plt.plot(xgrad.to_numpy(x), xgrad.to_numpy(function_1(x)), label="function_1")
    plt.plot(xgrad.to_numpy(x), xgrad.to_numpy(tf(x)), "--", label="tangent at x = 5")
    plt.xlabel("x")
    plt.ylabel("f(x)")
    plt.legend()
    plt.tight_layout()
    plt.savefig(out / "tangent_line.png", dpi=80)
    plt.close()
    # --8<-- [end:tangent]

    # --8<-- [start:partial]
    def function_tmp1(x0):  # d/dx0 of x0**2 + x1**2 at (3, 4)
        return x0 * x0 + 4.0**2.0

    def function_tmp2(x1):  # d/dx1 at (3, 4)
        return 3.0**2.0 + x1 * x1

    print("partial x0 at (3, 4):", float(numerical_diff(function_tmp1, b.asarray(3.0), h=1e-4)))
    print("partial x1 at (3, 4):", float(numerical_diff(function_tmp2, b.asarray(4.0), h=1e-4)))
    # --8<-- [end:partial]
    if draws(plt):
        print("figure:", out / "tangent_line.png", file=sys.stderr)


if __name__ == "__main__":
    main()
