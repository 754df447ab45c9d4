"""The core of the book's training loop: minibatches, one optimizer step each, in blocks.

`fit` runs the steps of a schedule of blocks and hands each block's losses, converted to
Python floats in one transfer, to a callback; `xgrad.train` and the benchmarks both run
on it. A block ends where the caller must look at the losses (an evaluation, a
checkpoint, a time check): on an accelerator each conversion waits for the device, so the
blocks are as long as the caller allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np

from xgrad.backends import Backend
from xgrad.random import minibatch_stream

__all__ = ["Minibatches", "blocks", "book_step", "fit", "to_floats"]


class Minibatches:
    """Minibatch indices drawn on the host from ``seed``: the same on every backend.

    A block's indices are drawn with one ``choice(train_size, batch_size)`` per iteration,
    in order (so the stream, and a checkpoint's generator state, are those of a loop that
    draws one minibatch at a time), and moved to the device in one transfer.
    """

    def __init__(self, seed: int, train_size: int, batch_size: int, backend: Backend) -> None:
        self.rng = minibatch_stream(seed, backend=backend).rng
        self.train_size, self.batch_size, self.backend = train_size, batch_size, backend

    def draw(self, count: int) -> Any:
        """Indices of the next ``count`` minibatches: an int64 array ``(count, batch_size)``."""
        draws = [self.rng.choice(self.train_size, self.batch_size) for _ in range(count)]
        return self.backend.asarray(np.stack(draws).astype(np.int64))


def book_step(
    net: Any, opt: Any, gradient: str, *, chunk_size: int | None = None, workers: Any = None
) -> Callable[[Any, Any], Any]:
    """One iteration of the book's loop on checked rows: gradient, update, then the loss.

    The loss is the minibatch's after the update (the book's order), a 0-d device array.
    ``workers``: the numerical gradient's per-element loop on them (`xgrad.workers`);
    ``chunk_size``: its perturbations per pass (`TwoLayerNet.numerical_gradient`).
    """

    def step(x_batch: Any, t_batch: Any) -> Any:
        if gradient == "backprop":
            grads = net._loss_and_gradient_rows(x_batch, t_batch)[1]
        else:
            grads = net.numerical_gradient(x_batch, t_batch, chunk_size=chunk_size, workers=workers)
        opt.update(net.params, grads)
        return net._loss_rows(x_batch, t_batch)

    return step


def blocks(
    start: int, iters: int, size: int, evaluate_every: int, stops: Collection[int] = ()
) -> Iterator[tuple[int, int]]:
    """``(first, end)`` iteration indices of blocks of at most ``size`` iterations.

    A block ends after every index ``i`` with ``i % evaluate_every == 0`` (the book's
    evaluations after iterations 1, 1 + iter_per_epoch, ...), after ``iters``, and after
    each count of iterations done in ``stops``.
    """
    i = start
    while i < iters:
        end = min(i + size, iters, i + (-i % evaluate_every) + 1)
        end = min([end, *(s for s in stops if i < s < end)])
        yield i, end
        i = end


def to_floats(backend: Backend, values: list[Any]) -> list[float]:
    """Python floats of 0-d arrays, in one device-to-host transfer."""
    if len(values) == 1:
        v = values[0]
        return [float(v) if isinstance(v, int | float) else float(backend.to_numpy(v))]
    return [float(v) for v in backend.to_numpy(backend.xp.stack(values))]


def fit(
    step: Callable[[Any, Any], Any],
    batches: Minibatches,
    x_train: Any,
    t_train: Any,
    schedule: Iterator[tuple[int, int]],
    on_block: Callable[[int, list[float], float], bool | None],
) -> None:
    """Run ``step`` on each block's minibatches; ``on_block(first, losses, seconds)`` after.

    ``seconds`` is the block's wall time up to and including the conversion of its losses
    (so it is honest on an accelerator, where the steps only queue work). ``on_block``
    returning True stops the loop.
    """
    xp = batches.backend.xp
    for first, end in schedule:
        t0 = time.perf_counter()
        masks = batches.draw(end - first)
        losses = []
        for k in range(end - first):
            x_batch = xp.take(x_train, masks[k, ...], axis=0)
            t_batch = xp.take(t_train, masks[k, ...], axis=0)
            losses.append(step(x_batch, t_batch))
        values = to_floats(batches.backend, losses)
        if on_block(first, values, time.perf_counter() - t0):
            return
