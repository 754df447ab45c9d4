"""Book section 4.4.2: simpleNet and the gradient of its loss with respect to W.

Usage: python docs/examples/ch4_simple_net.py [BACKEND]
(BACKEND defaults to $XGRAD_BACKEND, else numpy.)
"""

from __future__ import annotations

from _example import example_parser

import xgrad


def main(argv: list[str] | None = None) -> None:
    parser = example_parser(__doc__, figures=False)
    args = parser.parse_args(argv)

    # --8<-- [start:simplenet]
    from xgrad import numerical_gradient
    from xgrad.nn import SimpleNet

    b = xgrad.get_backend(args.backend)
    print("backend:", b.spec)

    # The book draws W at random and prints it to 8 digits: starting from the printed W
    # reproduces its numbers to those digits. SimpleNet(seed=0) draws a W of its own, the
    # same on every backend.
    net = SimpleNet(
        [[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]], backend=b
    )
    x = b.asarray([0.6, 0.9])
    p = net.predict(x)
    print("predict:", xgrad.to_numpy(p))
    print("argmax: ", int(b.xp.argmax(p)))
    t = b.asarray([0.0, 0.0, 1.0])  # the correct label, one-hot
    print("loss:   ", float(net.loss(x, t)))

    # The book's f ignores its argument: numerical_gradient perturbs net.W in place and
    # restores every element exactly afterwards. Arrays that cannot change in place (JAX)
    # are perturbed on a copy, which f must use; setting net.W to f's argument serves both.
    W = net.W

    def f(W):
        net.W = W
        return net.loss(x, t)

    dW = numerical_gradient(f, W, h=1e-4)
    net.W = W
    print("dW (h=1e-4):")
    print(xgrad.to_numpy(dW))
    # --8<-- [end:simplenet]


if __name__ == "__main__":
    main()
