"""Book section 4.4: numerical_gradient and the field of negative gradients (quiver plot).

Usage: python docs/examples/ch4_gradient.py [BACKEND] [--out DIR]
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

    # --8<-- [start:gradient]
    from xgrad import numerical_gradient

    b = xgrad.get_backend(args.backend)
    xp = b.xp  # the backend's array API namespace
    print("backend:", b.spec)

    def function_2(x):
        return xp.sum(x**2)  # the book's np.sum(x**2), on any backend

    for point in ([3.0, 4.0], [0.0, 2.0], [3.0, 0.0]):
        grad = numerical_gradient(function_2, b.asarray(point), h=1e-4)
        print(f"numerical_gradient(function_2, {point}) = {xgrad.to_numpy(grad)}")

    # The book's integer input np.array([3, 4]) gives garbage there (x + h is truncated
    # back to an int); xgrad promotes integers to float64.
    print(
        "integer input [3, 4]:", xgrad.to_numpy(numerical_gradient(function_2, b.asarray([3, 4])))
    )
    # --8<-- [end:gradient]

    # --8<-- [start:quiver]
    # gradient_2d.py: the negative gradient at each point of a grid. numerical_gradient on
    # one (2,) point at a time, as the book does; batch_size=324 would evaluate all at once.
    x0 = np.arange(-2, 2.5, 0.25)
    x1 = np.arange(-2, 2.5, 0.25)
    X, Y = np.meshgrid(x0, x1)
    points = b.asarray(np.stack([X.ravel(), Y.ravel()], axis=1))  # (324, 2)
    grads = [numerical_gradient(function_2, points[i, :]) for i in range(points.shape[0])]
    grad = xgrad.to_numpy(xp.stack(grads, axis=1))  # (2, 324), the book's layout

    plt.figure(figsize=(5, 5))
    plt.quiver(X.ravel(), Y.ravel(), -grad[0], -grad[1], angles="xy", color="#666666")
    plt.xlim([-2, 2])
    plt.ylim([-2, 2])
    plt.xlabel("x0")
    plt.ylabel("x1")
    plt.grid()
    plt.tight_layout()
    plt.savefig(out / "gradient_field.png", dpi=80)
    plt.close()
    print("largest arrow length:", float(np.max(np.hypot(grad[0], grad[1]))))
    # --8<-- [end:quiver]
    if draws(plt):
        print("figure:", out / "gradient_field.png", file=sys.stderr)


if __name__ == "__main__":
    main()
