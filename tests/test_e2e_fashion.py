"""End to end: the book's configuration trains on the real Fashion-MNIST for one epoch.

Needs the data (``apt-get install dataset-fashion-mnist``, or the four files in
``$XGRAD_DATA``/the cache); skips with that reason otherwise. One epoch is 600 iterations
of batch 100 with the book's ch. 5 net (784-50-10, ReLU, backprop, SGD lr 0.1), which
reaches about 0.87 test accuracy after 10,000 iterations and about 0.8 after the first
epoch. (The ch. 4 sigmoid net learns more slowly at first: about 0.70 after one epoch.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad.datasets import find_files, load_mnist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion() -> Any:
    if find_files("fashion-mnist") is None:
        pytest.skip(
            "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist "
            "(or put the four IDX files in $XGRAD_DATA/fashion-mnist)"
        )
    return load_mnist(dataset="fashion-mnist", download=False)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    # Two torch threads on a busy 2-core CI machine run 5-10x slower than one.
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
def test_one_epoch_of_the_books_config(fashion: Any, backend_name: str) -> None:
    try:
        b = xgrad.get_backend(backend_name)
    except xgrad.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    result = xgrad.train(
        data=fashion,
        iters=600,
        batch_size=100,
        lr=0.1,
        hidden=50,
        activation="relu",
        gradient="backprop",
        backend=b,
        seed=0,
        quiet=True,
    )
    h = result.history
    assert h["config"]["iter_per_epoch"] == 600 and len(h["train_loss"]) == 600
    assert result.test_acc is not None and result.test_acc >= 0.75
    assert result.train_acc is not None and result.train_acc >= 0.75
    # At the start (iteration 0) the net is at chance level: 10 balanced classes.
    assert h["test_acc"][0] < 0.3
    assert np.mean(h["train_loss"][-50:]) < 0.8 < np.mean(h["train_loss"][:10])
