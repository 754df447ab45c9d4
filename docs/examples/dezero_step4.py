"""DeZero step 4: numerical differentiation of Square, Exp and their composite.

Usage: python docs/examples/dezero_step4.py [BACKEND]
(BACKEND defaults to $XGRAD_BACKEND, else numpy.)
"""

from __future__ import annotations

from _example import example_parser

import xgrad


def main(argv: list[str] | None = None) -> None:
    parser = example_parser(__doc__, figures=False)
    args = parser.parse_args(argv)

    # --8<-- [start:step4]
    from xgrad import Exp, Square, Variable, numerical_diff

    b = xgrad.get_backend(args.backend)
    print("backend:", b.spec)

    # DeZero's own numerical_diff, written with xgrad's Variable: it runs unchanged.
    def dezero_numerical_diff(f, x, eps=1e-4):
        x0 = Variable(x.data - eps)
        x1 = Variable(x.data + eps)
        y0 = f(x0)
        y1 = f(x1)
        return (y1.data - y0.data) / (2 * eps)

    f = Square()
    x = Variable(2.0, backend=b)  # a float64 0-d array on the backend's device
    print("Square at 2.0:     ", float(dezero_numerical_diff(f, x)))
    # xgrad.numerical_diff takes a Function and a Variable as well.
    print("  xgrad, h=1e-4:   ", float(numerical_diff(f, x, h=1e-4)))
    print("  xgrad, default h:", float(numerical_diff(f, x)))

    def composite(x):  # y = (e^{x^2})^2
        A = Square()
        B = Exp()
        C = Square()
        return C(B(A(x)))

    x = Variable(0.5, backend=b)
    print("composite at 0.5:  ", float(dezero_numerical_diff(composite, x)))
    print("  xgrad, h=1e-4:   ", float(numerical_diff(composite, x, h=1e-4)))
    print("  xgrad, default h:", float(numerical_diff(composite, x)))

    # Step 7 onwards: backpropagation gives the exact derivative 4 x e^{2 x^2}.
    y = composite(x)
    y.backward()
    print("  backward():      ", float(x.grad))
    # --8<-- [end:step4]


if __name__ == "__main__":
    main()
