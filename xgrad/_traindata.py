"""The data of a training run: loaded or given, checked on the host, moved to the device once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xgrad.backends import Backend
from xgrad.errors import ArgumentError, ArgumentTypeError
from xgrad.functions import _one_hot

__all__ = ["TrainData", "checked_one_hot", "class_count", "load", "prepare_data"]


def prepare_data(
    data: Any, spec: Any, data_dir: Any, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if data is None:
        from xgrad.datasets import load_mnist

        (x, t), (xt, tt) = load_mnist(
            normalize=True,
            flatten=True,
            one_hot_label=False,
            dataset=spec,
            data_dir=data_dir,
            download=download,
        )
    else:
        try:
            (x, t), (xt, tt) = data
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                "data: expected ((x_train, t_train), (x_test, t_test)) as returned by load_mnist"
            ) from None
    arrays = []
    for name, a in (("x_train", x), ("t_train", t), ("x_test", xt), ("t_test", tt)):
        from xgrad._arrays import to_numpy

        a = np.asarray(to_numpy(a))
        if a.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"data: {name} must be numeric, found dtype {a.dtype}")
        arrays.append(a)
    x, t, xt, tt = arrays
    if x.ndim != 2 or xt.ndim != 2 or x.shape[1] != xt.shape[1]:
        raise ArgumentError(
            f"data: expected flattened images (N, features) for train and test, "
            f"found {x.shape} and {xt.shape}"
        )
    if x.shape[0] == 0 or x.shape[0] != t.shape[0] or xt.shape[0] != tt.shape[0]:
        raise ArgumentError(
            f"data: images and labels differ in number: {x.shape[0]} vs "
            f"{t.shape[0]} (train), {xt.shape[0]} vs {tt.shape[0]} (test)"
        )
    return x, t, xt, tt


def class_count(num_classes: int | None, spec: Any, t: np.ndarray, tt: np.ndarray) -> int:
    """The net's outputs: ``num_classes``, else the one-hot width, else the data set's.

    Never the largest label + 1: a stray label must be an error, not a wider net.
    """
    if num_classes is not None:
        return num_classes
    for labels in (t, tt):
        if labels.ndim == 2:
            return int(labels.shape[1])
    return int(spec.num_classes)


def checked_one_hot(
    t: np.ndarray, num_classes: int, name: str, where: Callable[[], str]
) -> np.ndarray:
    """A data set's targets as float64 one-hot rows on the host, after checking them.

    ``t``: integer labels (N,) or one-hot rows (N, C); errors name the data (``where()``).
    """
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ArgumentError(
                f"{where()}: {name} one-hot width {t.shape[1]}, expected {num_classes} classes"
            )
        return t.astype(np.float64)
    if t.ndim != 1 or t.dtype.kind not in "biu":
        raise ArgumentError(
            f"{where()}: {name} must be integer class labels (N,) or one-hot (N, C), "
            f"found {t.dtype} of shape {t.shape}"
        )
    outside = np.flatnonzero((t < 0) | (t >= num_classes))
    if outside.size:
        k = int(outside[0])
        raise ArgumentError(
            f"{where()}: {name} holds label {int(t[k])} (at index {k}; {outside.size} labels "
            f"in all) outside [0, {num_classes}) for {num_classes} classes"
        )
    onehot: np.ndarray = _one_hot(np, t, num_classes, np.float64)
    return onehot


def label_source(data: Any, spec: Any, data_dir: Any, name: str) -> str:
    """What to call labels in an error: ``data``, or the label file they were read from."""
    if data is not None:
        return "data"
    from xgrad.datasets import find_files

    part = "train_labels" if name == "t_train" else "test_labels"
    try:
        found = find_files(spec, data_dir) or {}
    except (OSError, ValueError, TypeError):
        found = {}
    return str(found.get(part, f"{spec.name} {part.replace('_', ' ')}"))


@dataclass
class TrainData:
    """Train and test images and one-hot targets on the device, and their sizes."""

    x_train: Any
    t_train: Any
    x_test: Any
    t_test: Any
    train_size: int
    test_size: int
    input_size: int
    classes: int
    load_s: float


def load(
    data: Any,
    spec: Any,
    data_dir: Any,
    download: bool,
    num_classes: int | None,
    b: Backend,
    fdtype: Any,
) -> TrainData:
    """``data`` (or the data set ``spec``) checked, one-hot, on ``b``'s device in ``fdtype``."""
    t_load = time.perf_counter()
    x_host, t_host, xt_host, tt_host = prepare_data(data, spec, data_dir, download)
    classes = class_count(num_classes, spec, t_host, tt_host)

    def where(name: str) -> Callable[[], str]:
        return lambda: label_source(data, spec, data_dir, name)

    onehot = {
        name: checked_one_hot(labels, classes, name, where(name))
        for name, labels in (("t_train", t_host), ("t_test", tt_host))
    }
    # Moved and converted once: the book multiplies float32 images by float64 weights at
    # every evaluation, upcasting all 60,000 x 784 values each time.
    x_train, t_train, x_test, t_test = (
        b.asarray(a, dtype=fdtype) for a in (x_host, onehot["t_train"], xt_host, onehot["t_test"])
    )
    b.synchronize(x_train, t_train, x_test, t_test)
    return TrainData(
        x_train,
        t_train,
        x_test,
        t_test,
        train_size=int(x_host.shape[0]),
        test_size=int(xt_host.shape[0]),
        input_size=int(x_host.shape[1]),
        classes=classes,
        load_s=time.perf_counter() - t_load,
    )
