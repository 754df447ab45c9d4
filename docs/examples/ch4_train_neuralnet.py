"""Book section 4.5: training the two-layer net on minibatches, with its two figures.

Usage: python docs/examples/ch4_train_neuralnet.py [BACKEND] [--out DIR] [--iters N]
       [--dataset mnist|fashion-mnist] [--data-dir DIR]
(BACKEND defaults to $XGRAD_BACKEND, else numpy; figures go to --out, $XGRAD_DOCS_OUT or a
new temporary directory; --iters defaults to $XGRAD_DOCS_ITERS, else the book's 10000;
--dataset to $XGRAD_DOCS_DATASET, else mnist, downloaded when not on disk.)
"""

from __future__ import annotations

import os
import sys

import numpy as np
from _example import draws, example_parser, output_dir, pyplot

import xgrad

plt = pyplot()  # matplotlib.pyplot, or a stand-in that draws nothing without it


def main(argv: list[str] | None = None) -> None:
    parser = example_parser(__doc__)
    parser.add_argument("--iters", type=int, default=int(os.environ.get("XGRAD_DOCS_ITERS", 10000)))
    parser.add_argument("--dataset", default=os.environ.get("XGRAD_DOCS_DATASET", "mnist"))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    out = output_dir(args.out)

    # --8<-- [start:data]
    from xgrad.datasets import load_mnist
    from xgrad.nn import TwoLayerNet

    b = xgrad.get_backend(args.backend)
    print("backend:", b.spec, "| data:", args.dataset)

    # NumPy arrays on the host, exactly as the book's load_mnist returns them...
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, one_hot_label=True, dataset=args.dataset, data_dir=args.data_dir
    )
    # ...moved to the backend's device once, in the net's dtype (float64).
    x_train, t_train = b.asarray(x_train, dtype="float64"), b.asarray(t_train)
    x_test, t_test = b.asarray(x_test, dtype="float64"), b.asarray(t_test)
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, backend=b, seed=0)
    # --8<-- [end:data]

    # --8<-- [start:check]
    # Chapter 4 trains with numerical_gradient; chapter 5 replaces it by backpropagation.
    # On a few samples both agree (TwoLayerNet.numerical_gradient is the book's central
    # difference with h=1e-4, computed without a forward pass per weight).
    x_small, t_small = x_train[:3, ...], t_train[:3, ...]
    numerical = network.numerical_gradient(x_small, t_small)
    backprop = network.gradient(x_small, t_small)
    for key in ("W1", "b1", "W2", "b2"):
        diff = xgrad.to_numpy(numerical[key]) - xgrad.to_numpy(backprop[key])
        print(f"{key}: max |numerical - backprop| = {np.max(np.abs(diff)):.1e}")
    # --8<-- [end:check]

    # --8<-- [start:train]
    iters_num = args.iters  # the book: 10000
    train_size = x_train.shape[0]
    batch_size = 100
    learning_rate = 0.1
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    iter_per_epoch = max(train_size // batch_size, 1)
    # Minibatches drawn on the host, the same on every backend: those of `xgrad train --seed 0`.
    rng = xgrad.random.minibatch_stream(0, backend=b)

    for i in range(iters_num):
        batch_mask = rng.choice(train_size, batch_size)
        x_batch = b.xp.take(x_train, batch_mask, axis=0)  # the book's x_train[batch_mask]
        t_batch = b.xp.take(t_train, batch_mask, axis=0)

        grad = network.gradient(x_batch, t_batch)  # network.numerical_gradient: the same, slower
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= learning_rate * grad[key]

        loss = network.loss(x_batch, t_batch)
        train_loss_list.append(float(loss))
        if i % iter_per_epoch == 0:
            train_acc = network.accuracy(x_train, t_train)
            test_acc = network.accuracy(x_test, t_test)
            train_acc_list.append(train_acc)
            test_acc_list.append(test_acc)
            print(f"train acc, test acc | {train_acc:.4f}, {test_acc:.4f}")
    print(
        f"after {iters_num} iterations: loss {train_loss_list[-1]:.4f}, test acc "
        f"{network.accuracy(x_test, t_test):.4f}"
    )
    # --8<-- [end:train]

    # --8<-- [start:plots]
    plt.figure(figsize=(5, 3.5))
    plt.plot(np.arange(len(train_loss_list)), train_loss_list, linewidth=0.6)
    plt.xlabel("iteration")
    plt.ylabel("loss")
    plt.tight_layout()
    plt.savefig(out / "train_loss.png", dpi=80)
    plt.close()

    plt.figure(figsize=(5, 3.5))
    epochs = np.arange(len(train_acc_list))
    plt.plot(epochs, train_acc_list, marker="o", label="train acc")
    plt.plot(epochs, test_acc_list, marker="s", linestyle="--", label="test acc")
    plt.xlabel("epochs")
    plt.ylabel("accuracy")
    plt.ylim(0, 1.0)
    plt.legend(loc="lower right")
    plt.tight_layout()
    plt.savefig(out / "train_accuracy.png", dpi=80)
    plt.close()
    # --8<-- [end:plots]
    if draws(plt):
        print("figures:", out / "train_loss.png", out / "train_accuracy.png", file=sys.stderr)


if __name__ == "__main__":
    main()
