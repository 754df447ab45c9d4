"""Book section 4.4.1: gradient_descent, its path, and the three learning rates.

Usage: python docs/examples/ch4_gradient_descent.py [BACKEND] [--out DIR]
(BACKEND defaults to $XGRAD_BACKEND, else numpy; figures go to --out, $XGRAD_DOCS_OUT or a
new temporary directory).
"""

from __future__ import annotations

import sys
import warnings

from _example import draws, example_parser, output_dir, pyplot

import xgrad

plt = pyplot()  # matplotlib.pyplot, or a stand-in that draws nothing without it


def main(argv: list[str] | None = None) -> None:
    parser = example_parser(__doc__)
    args = parser.parse_args(argv)
    out = output_dir(args.out)

    # --8<-- [start:descent]
    from xgrad import DivergenceError, gradient_descent

    b = xgrad.get_backend(args.backend)
    xp = b.xp
    print("backend:", b.spec)

    def function_2(x):
        return xp.sum(x**2)

    init_x = b.asarray([-3.0, 4.0])  # never modified: gradient_descent works on a copy
    x = gradient_descent(function_2, init_x, lr=0.1, step_num=100, h=1e-4)
    print("lr=0.1:  ", xgrad.to_numpy(x))

    # Too small a learning rate: barely moves.
    x = gradient_descent(function_2, init_x, lr=1e-10, step_num=100, h=1e-4)
    print("lr=1e-10:", xgrad.to_numpy(x))

    # Too large a learning rate: the iterate grows by -19x per step. In the book it stops
    # near -2.6e13, where x + 1e-4 == x makes its gradient exactly 0 (a silently wrong
    # number). xgrad notices that h no longer changes x, warns, enlarges the step there,
    # and the iterate keeps diverging as the mathematics says it does.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = gradient_descent(function_2, init_x, lr=10.0, step_num=100, h=1e-4)
    print("lr=10:   ", xgrad.to_numpy(x))
    print("         ", len(caught), "warnings such as:", type(caught[0].message).__name__)
    try:
        with warnings.catch_warnings():  # NumPy's overflow warnings, from inside function_2
            warnings.simplefilter("ignore", RuntimeWarning)
            gradient_descent(function_2, init_x, lr=10.0, step_num=200)
    except DivergenceError as exc:
        print("lr=10, 200 steps: DivergenceError at step", exc.step)
    # --8<-- [end:descent]

    # --8<-- [start:path]
    # gradient_method.py: the path of 20 steps with lr=0.1 (history=True returns the
    # iterate before each step, the book's x_history).
    x, history = gradient_descent(function_2, init_x, lr=0.1, step_num=20, history=True)
    path = xgrad.to_numpy(history)
    print("path:", path.shape, "first", path[0], "last", path[-1].round(4))
    plt.figure(figsize=(5, 5))
    plt.plot([-5, 5], [0, 0], "--b")
    plt.plot([0, 0], [-5, 5], "--b")
    plt.plot(path[:, 0], path[:, 1], "o")
    plt.xlim(-3.5, 3.5)
    plt.ylim(-4.5, 4.5)
    plt.xlabel("X0")
    plt.ylabel("X1")
    plt.tight_layout()
    plt.savefig(out / "gradient_descent.png", dpi=80)
    plt.close()
    # --8<-- [end:path]
    if draws(plt):
        print("figure:", out / "gradient_descent.png", file=sys.stderr)


if __name__ == "__main__":
    main()
