"""The bad-input catalogue (issue 11): every kind of bad input gets a clear, typed error.

One row per kind, across the public API and the command line. Each API row asserts the
error's type (xgrad's own typed errors, which derive from the built-in a user expects) and
that the message names the argument at fault; each CLI row runs ``xgrad`` in a real
process and asserts a failing exit status, the argument named on stderr and no traceback.
Rows marked ``issue11`` were silently accepted, or answered with a raw error from deep
inside, before issue 11 (each fails on the main of before); the others gave a clear
message already (many as a plain ValueError/TypeError, now xgrad's typed subclasses of
those) and are kept from regressing. The data rows put a complete data set in the user
cache, where the reader of before fell back to silently.

Run directories (``--out``, ``--resume``) and the numerical-derivative rows that were fixed
in issue 11 are covered by tests/test_cli_train.py and the numdiff tests.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import xgrad
from xgrad import functions as F
from xgrad import layers, optim
from xgrad.backends import _registry
from xgrad.datasets import (
    DATASETS,
    DataFile,
    DatasetNotFoundError,
    DatasetSpec,
    IdxFormatError,
    load_mnist,
    read_idx,
    write_idx,
)
from xgrad.datasets._registry import PARTS
from xgrad.dezero import Square, Variable
from xgrad.errors import ArgumentError, ArgumentTypeError
from xgrad.nn import SimpleNet, TwoLayerNet

ROOT = Path(__file__).resolve().parents[1]
NAMES = {p: DATASETS["mnist"].files[p].name for p in PARTS}


@dataclass(frozen=True)
class Case:
    """One kind of bad input: ``call(ctx)`` must raise ``error`` naming ``names``."""

    id: str
    call: Callable[[SimpleNamespace], Any]
    error: type[BaseException]
    names: str
    issue11: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _net(**kw: Any) -> TwoLayerNet:
    return TwoLayerNet(4, 3, 2, seed=0, **kw)


X = np.linspace(-1.0, 1.0, 8).reshape(2, 4)
LABELS = np.array([0, 1])


def _loss_with_param(key: str, value: Any) -> Any:
    net = _net()
    net.params[key] = value
    return net.loss(X, LABELS)


def _update_after_shape_change(opt: optim.Optimizer) -> None:
    params = {"W": np.ones(3)}
    opt.update(params, {"W": np.ones(3)})
    params["W"] = np.ones(4)
    opt.update(params, {"W": np.ones(4)})


def _register_then_get(factory: Any) -> Any:
    xgrad.register_backend("bad_factory", factory)
    return xgrad.get_backend("bad_factory")


def _load_state_iter(value: Any) -> None:
    opt = optim.SGD()
    state = opt.state_dict()
    state["iter"] = value
    opt.load_state_dict(state)


def _mixed_backends() -> Any:
    torch = pytest.importorskip("torch")
    opt = optim.SGD()
    return opt.update({"W": np.ones(2)}, {"W": torch.ones(2, dtype=torch.float64)})


def _late_lr() -> None:
    opt = optim.SGD()
    opt.lr = -1.0


def _read(ctx: SimpleNamespace, name: str) -> Any:
    return read_idx(ctx.files[name])


ONE_HOT_NEG = np.array([[-1.0, 2.0], [0.0, 1.0]])  # rows sum to 1, one entry < 0
ONE_HOT_TWO = np.array([[1.0, 1.0], [0.0, 1.0]])  # a row sums to 2
ONE_HOT_NAN = np.array([[np.nan, 1.0], [0.0, 1.0]])
Y3 = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])

API: list[Case] = [
    # -- xgrad.functions ------------------------------------------------------------------
    Case("sigmoid-string", lambda c: F.sigmoid("abc"), ArgumentTypeError, "x"),
    Case("sigmoid-ragged", lambda c: F.sigmoid([[1.0, 2.0], [1.0]]), ArgumentError, "x", True),
    Case("relu-none", lambda c: F.relu(None), ArgumentTypeError, "x"),
    Case("relu-dict", lambda c: F.relu({"a": 1}), ArgumentTypeError, "x"),
    Case("step-complex", lambda c: F.step_function(np.ones(2) * 1j), ArgumentTypeError, "x"),
    Case("softmax-scalar", lambda c: F.softmax(3.0), ArgumentError, "x"),
    Case("softmax-ragged", lambda c: F.softmax([[1.0], [1.0, 2.0]]), ArgumentError, "x", True),
    Case("cee-3d", lambda c: F.cross_entropy_error(np.ones((1, 1, 3)) / 3, 0), ArgumentError, "y"),
    Case("cee-t-shape", lambda c: F.cross_entropy_error(Y3, np.ones(3)), ArgumentError, "t"),
    Case(
        "cee-float-labels",
        lambda c: F.cross_entropy_error(Y3, np.array([0.0, 1.0])),
        ArgumentError,
        "t",
    ),
    Case(
        "cee-label-too-big",
        lambda c: F.cross_entropy_error(Y3, np.array([0, 3])),
        ArgumentError,
        "t",
    ),
    Case(
        "cee-label-negative",
        lambda c: F.cross_entropy_error(Y3, np.array([0, -1])),
        ArgumentError,
        "t",
    ),
    Case(
        "cee-onehot-negative",
        lambda c: F.cross_entropy_error(Y3[:, :2], ONE_HOT_NEG),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "cee-onehot-sum-2",
        lambda c: F.cross_entropy_error(Y3[:, :2], ONE_HOT_TWO),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "cee-onehot-nan",
        lambda c: F.cross_entropy_error(Y3[:, :2], ONE_HOT_NAN),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "cee-empty-batch",
        lambda c: F.cross_entropy_error(np.ones((0, 3)), np.zeros((0, 3))),
        ArgumentError,
        "y",
        True,
    ),
    Case(
        "cee-complex-t",
        lambda c: F.cross_entropy_error(Y3, Y3 * 1j),
        ArgumentTypeError,
        "t",
    ),
    Case("mse-shape", lambda c: F.mean_squared_error(Y3, np.ones(3)), ArgumentError, "t"),
    Case(
        "mse-ragged-t",
        lambda c: F.mean_squared_error(Y3, [[1.0], [1.0, 2.0]]),
        ArgumentError,
        "t",
        True,
    ),
    # -- xgrad.layers ---------------------------------------------------------------------
    Case("swl-eps-negative", lambda c: layers.SoftmaxWithLoss(eps=-1.0), ArgumentError, "eps"),
    Case(
        "swl-x-1d",
        lambda c: layers.SoftmaxWithLoss().forward(np.ones(3), np.array(0)),
        ArgumentError,
        "x",
    ),
    Case(
        "swl-onehot-negative",
        lambda c: layers.SoftmaxWithLoss().forward(np.zeros((2, 2)), ONE_HOT_NEG),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "swl-onehot-sum-2",
        lambda c: layers.SoftmaxWithLoss().forward(np.zeros((2, 2)), ONE_HOT_TWO),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "swl-empty-batch",
        lambda c: layers.SoftmaxWithLoss().forward(np.zeros((0, 2)), np.zeros(0, np.int64)),
        ArgumentError,
        "x",
        True,
    ),
    Case(
        "swl-label-too-big",
        lambda c: layers.SoftmaxWithLoss().forward(np.zeros((2, 2)), np.array([0, 2])),
        ArgumentError,
        "t",
    ),
    Case("swl-x-list", lambda c: layers.SoftmaxWithLoss().forward([[0.0]], [0]), TypeError, "x"),
    Case("affine-W-1d", lambda c: layers.Affine(np.ones(3), np.ones(3)), ArgumentError, "W"),
    Case(
        "affine-x-features",
        lambda c: layers.Affine(np.ones((3, 2)), np.ones(2)).forward(np.ones((1, 4))),
        ArgumentError,
        "x",
    ),
    Case("relu-x-list", lambda c: layers.Relu().forward([1.0]), TypeError, "x"),
    Case("sigmoid-layer-x-str", lambda c: layers.Sigmoid().forward("a"), TypeError, "x"),
    # -- xgrad.nn -------------------------------------------------------------------------
    Case("net-input-0", lambda c: TwoLayerNet(0, 3, 2), ArgumentError, "input_size"),
    Case("net-hidden-neg", lambda c: TwoLayerNet(4, -1, 2), ArgumentError, "hidden_size"),
    Case("net-output-float", lambda c: TwoLayerNet(4, 3, 2.5), ArgumentError, "output_size"),
    Case("net-input-bool", lambda c: TwoLayerNet(True, 3, 2), ArgumentError, "input_size"),
    Case(
        "net-init-std-neg",
        lambda c: TwoLayerNet(4, 3, 2, -1.0),
        ArgumentError,
        "weight_init_std",
    ),
    Case(
        "net-init-std-nan",
        lambda c: TwoLayerNet(4, 3, 2, float("nan")),
        ArgumentError,
        "weight_init_std",
    ),
    Case("net-activation", lambda c: _net(activation="tanh"), ArgumentError, "activation"),
    Case("net-dtype-banana", lambda c: _net(dtype="banana"), ArgumentError, "dtype", True),
    Case("net-dtype-int", lambda c: _net(dtype="int32"), ArgumentError, "dtype"),
    Case("net-dtype-float16", lambda c: _net(dtype="float16"), ArgumentError, "dtype"),
    Case("net-seed-negative", lambda c: TwoLayerNet(4, 3, 2, seed=-1), ArgumentError, "seed", True),
    Case("net-seed-float", lambda c: TwoLayerNet(4, 3, 2, seed=1.5), ArgumentTypeError, "seed"),
    Case("net-backend-garbage", lambda c: _net(backend="garbage"), ArgumentError, "backend"),
    Case("net-backend-mps", lambda c: _net(backend="torch:mps"), ArgumentError, "device", True),
    Case("loss-x-shape", lambda c: _net().loss(np.ones((2, 5)), LABELS), ArgumentError, "x"),
    Case("loss-t-shape", lambda c: _net().loss(X, np.array([0, 1, 1])), ArgumentError, "t"),
    Case("loss-onehot-negative", lambda c: _net().loss(X, ONE_HOT_NEG), ArgumentError, "t", True),
    Case("loss-onehot-sum-2", lambda c: _net().loss(X, ONE_HOT_TWO), ArgumentError, "t", True),
    Case(
        "loss-onehot-sum-0",
        lambda c: _net().loss(X, np.zeros((2, 2))),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "loss-empty-batch",
        lambda c: _net().loss(np.ones((0, 4)), np.zeros(0, np.int64)),
        ArgumentError,
        "x",
        True,
    ),
    Case(
        "accuracy-empty-batch",
        lambda c: _net().accuracy(np.ones((0, 4)), np.zeros(0, np.int64)),
        ArgumentError,
        "x",
        True,
    ),
    Case(
        "gradient-empty-batch",
        lambda c: _net().gradient(np.ones((0, 4)), np.zeros(0, np.int64)),
        ArgumentError,
        "x",
        True,
    ),
    Case(
        "accuracy-onehot-negative",
        lambda c: _net().accuracy(X, ONE_HOT_NEG),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "gradient-onehot-sum-2",
        lambda c: _net().gradient(X, ONE_HOT_TWO),
        ArgumentError,
        "t",
        True,
    ),
    Case(
        "loss-x-ragged",
        lambda c: _net().loss([[1.0, 2.0, 3.0, 4.0], [1.0]], LABELS),
        ArgumentTypeError,
        "x",
    ),
    Case("loss-x-complex", lambda c: _net().loss(X * 1j, LABELS), TypeError, "x"),
    Case("loss-label-too-big", lambda c: _net().loss(X, np.array([0, 2])), ArgumentError, "t"),
    Case(
        "loss-float-labels",
        lambda c: _net().loss(X, np.array([0.0, 1.0])),
        ArgumentError,
        "t",
    ),
    Case(
        "param-list",
        lambda c: _loss_with_param("W1", [[0.0] * 3] * 4),
        ArgumentTypeError,
        "params['W1']",
        True,
    ),
    Case(
        "param-shape",
        lambda c: _loss_with_param("W2", np.ones((3, 5))),
        ArgumentError,
        "params['W2']",
        True,
    ),
    Case(
        "param-dtype",
        lambda c: _loss_with_param("b1", np.ones(3, np.float32)),
        ArgumentError,
        "params['b1']",
        True,
    ),
    Case(
        "param-missing",
        lambda c: _loss_with_param("b2", None),
        ArgumentTypeError,
        "params['b2']",
        True,
    ),
    Case("state-not-dict", lambda c: _net().load_state_dict([]), ArgumentError, "state"),
    Case(
        "state-shape",
        lambda c: _net().load_state_dict(
            {"params": {"W1": np.ones((5, 3)), "b1": 0, "W2": 0, "b2": 0}}
        ),
        ArgumentError,
        "params['W1']",
    ),
    Case("simplenet-W-shape", lambda c: SimpleNet(np.ones((3, 3))), ArgumentError, "W"),
    Case("simplenet-x-shape", lambda c: SimpleNet(seed=0).predict([1.0]), ArgumentError, "x"),
    Case(
        "simplenet-onehot-negative",
        lambda c: SimpleNet(seed=0).loss([0.6, 0.9], [-1.0, 1.0, 1.0]),
        ArgumentError,
        "t",
        True,
    ),
    # -- xgrad.optim ----------------------------------------------------------------------
    Case("sgd-lr-0", lambda c: optim.SGD(lr=0), ArgumentError, "lr"),
    Case("sgd-lr-negative", lambda c: optim.SGD(lr=-0.1), ArgumentError, "lr"),
    Case("sgd-lr-str", lambda c: optim.SGD(lr="a"), ArgumentTypeError, "lr"),
    Case("sgd-lr-bool", lambda c: optim.SGD(lr=True), ArgumentTypeError, "lr"),
    Case("sgd-lr-later", lambda c: _late_lr(), ArgumentError, "lr"),
    Case("momentum-1", lambda c: optim.Momentum(momentum=1.0), ArgumentError, "momentum"),
    Case("adam-beta1", lambda c: optim.Adam(beta1=-0.1), ArgumentError, "beta1"),
    Case("adam-beta2", lambda c: optim.Adam(beta2=1.0), ArgumentError, "beta2"),
    Case("rmsprop-decay", lambda c: optim.RMSprop(decay_rate=2.0), ArgumentError, "decay_rate"),
    Case(
        "update-params-list",
        lambda c: optim.SGD().update([np.ones(2)], {}),
        ArgumentTypeError,
        "params",
    ),
    Case(
        "update-grads-list",
        lambda c: optim.SGD().update({"W": np.ones(2)}, [np.ones(2)]),
        ArgumentTypeError,
        "grads",
    ),
    Case(
        "update-grad-missing",
        lambda c: optim.SGD().update({"W": np.ones(2)}, {}),
        ArgumentError,
        "grads",
    ),
    Case(
        "update-grad-shape",
        lambda c: optim.SGD().update({"W": np.ones(2)}, {"W": np.ones(3)}),
        ArgumentError,
        "grads['W']",
    ),
    Case(
        "update-param-list",
        lambda c: optim.SGD().update({"W": [1.0]}, {"W": np.ones(1)}),
        ArgumentTypeError,
        "params['W']",
    ),
    Case(
        "update-param-int",
        lambda c: optim.SGD().update({"W": np.ones(2, np.int64)}, {"W": np.ones(2)}),
        ArgumentTypeError,
        "params['W']",
    ),
    Case(
        "update-mixed-backends",
        lambda c: _mixed_backends(),
        ArgumentError,
        "grads['W']",
    ),
    Case(
        "adam-shape-change",
        lambda c: _update_after_shape_change(optim.Adam()),
        ArgumentError,
        "params['W']",
        True,
    ),
    Case(
        "momentum-shape-change",
        lambda c: _update_after_shape_change(optim.Momentum()),
        ArgumentError,
        "params['W']",
        True,
    ),
    Case(
        "adagrad-shape-change",
        lambda c: _update_after_shape_change(optim.AdaGrad()),
        ArgumentError,
        "params['W']",
        True,
    ),
    Case("optimizer-name", lambda c: optim.get_optimizer("foo"), ArgumentError, "name"),
    Case("optimizer-name-int", lambda c: optim.get_optimizer(3), ArgumentTypeError, "name"),
    Case(
        "optimizer-state-other",
        lambda c: optim.SGD().load_state_dict(optim.Adam().state_dict()),
        ArgumentError,
        "state_dict",
    ),
    Case(
        "optimizer-state-iter", lambda c: _load_state_iter(-1), ArgumentError, "state_dict['iter']"
    ),
    # -- backends -------------------------------------------------------------------------
    Case("backend-unknown", lambda c: xgrad.get_backend("garbage"), ArgumentError, "backend"),
    Case("backend-int", lambda c: xgrad.get_backend(3), ArgumentTypeError, "backend"),
    Case("backend-space", lambda c: xgrad.get_backend("numpy "), ArgumentError, "backend", True),
    Case("backend-colon", lambda c: xgrad.get_backend("torch:"), ArgumentError, "backend", True),
    Case("torch-mps", lambda c: xgrad.get_backend("torch:mps"), ArgumentError, "device", True),
    Case("torch-xla", lambda c: xgrad.get_backend("torch:xla"), ArgumentError, "device", True),
    Case("torch-meta", lambda c: xgrad.get_backend("torch:meta"), ArgumentError, "device", True),
    Case("torch-cpu-1", lambda c: xgrad.get_backend("torch:cpu:1"), ArgumentError, "device", True),
    Case("numpy-cuda", lambda c: xgrad.get_backend("numpy", "cuda"), ArgumentError, "device"),
    Case(
        "strict-device9",
        lambda c: xgrad.get_backend("array_api_strict:device9"),
        ArgumentError,
        "device",
    ),
    Case("set-backend-unknown", lambda c: xgrad.set_backend("nope"), ArgumentError, "backend"),
    Case(
        "use-backend-unknown",
        lambda c: xgrad.use_backend("nope").__enter__(),
        ArgumentError,
        "backend",
    ),
    Case(
        "register-builtin",
        lambda c: xgrad.register_backend("numpy", lambda d: xgrad.get_backend("numpy")),
        ArgumentError,
        "name",
        True,
    ),
    Case(
        "register-colon",
        lambda c: xgrad.register_backend("a:b", lambda d: None),
        ArgumentError,
        "name",
    ),
    Case(
        "register-not-callable",
        lambda c: xgrad.register_backend("x", 3),
        ArgumentTypeError,
        "factory",
    ),
    Case(
        "factory-returns-int",
        lambda c: _register_then_get(lambda device: 3),
        ArgumentTypeError,
        "factory",
        True,
    ),
    Case(
        "env-backend-garbage",
        lambda c: xgrad.get_backend(),
        ArgumentError,
        "XGRAD_BACKEND",
        True,
        {"XGRAD_BACKEND": "garbage"},
    ),
    Case(
        "env-backend-device",
        lambda c: _net(),
        ArgumentError,
        "XGRAD_BACKEND",
        True,
        {"XGRAD_BACKEND": "torch:meta"},
    ),
    Case(
        "float-dtype-banana",
        lambda c: xgrad.get_backend("numpy").float_dtype("banana"),
        ArgumentError,
        "dtype",
        True,
    ),
    Case(
        "asarray-dtype-banana",
        lambda c: xgrad.get_backend("numpy").asarray([1.0], dtype="banana"),
        ArgumentError,
        "dtype",
        True,
    ),
    Case("random-seed-negative", lambda c: xgrad.HostRandom(-1), ArgumentError, "seed", True),
    Case("random-seed-str", lambda c: xgrad.HostRandom("a"), ArgumentTypeError, "seed"),
    Case("random-seed-bool", lambda c: xgrad.HostRandom(True), ArgumentTypeError, "seed", True),
    # -- xgrad.datasets -------------------------------------------------------------------
    Case("dataset-unknown", lambda c: load_mnist(dataset="cifar"), ArgumentError, "dataset"),
    Case("dataset-int", lambda c: load_mnist(dataset=3), ArgumentTypeError, "dataset"),
    Case("timeout-0", lambda c: load_mnist(timeout=0), ArgumentError, "timeout"),
    Case("timeout-bool", lambda c: load_mnist(timeout=True), ArgumentError, "timeout", True),
    Case(
        "data-dir-missing",
        lambda c: load_mnist(data_dir=c.tmp / "missing-api"),
        DatasetNotFoundError,
        "data_dir (--data-dir) names",
        True,
        {"XDG_CACHE_HOME": "{cache}"},
    ),
    Case(
        "data-dir-missing-fashion",
        lambda c: load_mnist(dataset="fashion-mnist", data_dir=c.tmp / "missing-api-fashion"),
        DatasetNotFoundError,
        "data_dir (--data-dir) names",
        True,
        {"XDG_CACHE_HOME": "{cache}"},
    ),
    Case(
        "env-data-missing",
        lambda c: load_mnist(),
        DatasetNotFoundError,
        "XGRAD_DATA names {tmp}/missing-api-env,",
        True,
        {"XGRAD_DATA": "{tmp}/missing-api-env", "XDG_CACHE_HOME": "{cache}"},
    ),
    Case(
        "data-dir-incomplete",
        lambda c: load_mnist(data_dir=c.incomplete, download=False),
        DatasetNotFoundError,
        f"in data_dir (--data-dir): missing in {Path('{incomplete}') / 'mnist'}",
        True,
        {"XDG_CACHE_HOME": "{cache}"},
    ),
    Case("data-dir-int", lambda c: load_mnist(data_dir=3), ArgumentTypeError, "data_dir", True),
    Case("data-dir-empty", lambda c: load_mnist(data_dir=""), ArgumentError, "data_dir", True),
    Case(
        "label-too-big",
        lambda c: load_mnist(data_dir=c.bad_labels, download=False),
        IdxFormatError,
        NAMES["train_labels"],
        True,
    ),
    Case(
        "images-truncated",
        lambda c: load_mnist(data_dir=c.truncated, download=False),
        IdxFormatError,
        NAMES["test_images"],
    ),
    Case("idx-random-bytes", lambda c: _read(c, "random"), IdxFormatError, "random-idx"),
    Case("idx-bad-gzip", lambda c: _read(c, "badgz"), IdxFormatError, "badgz-idx.gz"),
    Case("idx-65-dims", lambda c: _read(c, "dims65"), IdxFormatError, "dims65-idx", True),
    Case(
        "write-idx-complex",
        lambda c: write_idx(c.tmp / "c.idx", np.ones(2) * 1j),
        ArgumentTypeError,
        "array",
    ),
    Case(
        "spec-classes-0",
        lambda c: DatasetSpec("x", {p: DataFile(NAMES[p]) for p in PARTS}, num_classes=0),
        ArgumentError,
        "num_classes",
        True,
    ),
    Case(
        "spec-files",
        lambda c: DatasetSpec("x", {"train_images": DataFile("a")}),
        ArgumentError,
        "files",
        True,
    ),
    # -- numerical derivatives (rows that already passed; see the module docstring) -------
    Case("nd-h-negative", lambda c: xgrad.numerical_diff(np.sin, 1.0, h=-1.0), ArgumentError, "h"),
    Case("nd-h-str", lambda c: xgrad.numerical_diff(np.sin, 1.0, h="a"), ArgumentTypeError, "h"),
    Case("nd-f", lambda c: xgrad.numerical_diff(3, 1.0), ArgumentTypeError, "f"),
    Case("nd-x-str", lambda c: xgrad.numerical_diff(np.sin, "a"), ArgumentTypeError, "x"),
    Case(
        "nd-method",
        lambda c: xgrad.numerical_diff(np.sin, 1.0, method="foo"),
        ArgumentError,
        "method",
    ),
    Case(
        "ng-x-complex",
        lambda c: xgrad.numerical_gradient(np.sum, np.ones(2) * 1j),
        ArgumentTypeError,
        "x",
    ),
    Case(
        "ng-f-vector",
        lambda c: xgrad.numerical_gradient(lambda x: x, np.ones(2)),
        ArgumentError,
        "f",
    ),
    Case(
        "ng-x-ragged",
        lambda c: xgrad.numerical_gradient(np.sum, [[1.0], [1.0, 2.0]]),
        ArgumentError,
        "x",
        True,
    ),
    Case("jacobian-f", lambda c: xgrad.jacobian(3, np.ones(2)), ArgumentTypeError, "f"),
    Case(
        "hessian-f-vector",
        lambda c: xgrad.hessian(lambda x: x, np.ones(2)),
        ArgumentError,
        "f",
    ),
    Case(
        "gd-step-num",
        lambda c: xgrad.gradient_descent(np.sum, np.ones(2), step_num=-1),
        ArgumentError,
        "step_num",
    ),
    Case("gd-f", lambda c: xgrad.gradient_descent(3, np.ones(2)), TypeError, "f"),
    Case(
        "gd-init-x",
        lambda c: xgrad.gradient_descent(np.sum, "ab"),
        ArgumentTypeError,
        "init_x",
    ),
    Case(
        "gradcheck-target",
        lambda c: xgrad.gradcheck(3, np.ones((2, 4)), LABELS),
        TypeError,
        "target",
    ),
    Case(
        "gradcheck-t",
        lambda c: xgrad.gradcheck(_net(), X, np.array([0, 5])),
        ArgumentError,
        "t",
    ),
    # -- DeZero ---------------------------------------------------------------------------
    Case("variable-str", lambda c: Variable("abc"), TypeError, "data"),
    Case("square-str", lambda c: Square()("a"), TypeError, "data"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Small MNIST-format directories: incomplete, with a label of 12, truncated; bad files."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(0)

    def write_set(directory: Path) -> Path:
        directory.mkdir(parents=True)
        for prefix, n in (("train", 8), ("test", 4)):
            write_idx(
                directory / NAMES[f"{prefix}_images"],
                rng.integers(0, 256, (n, 2, 2), dtype=np.uint8),
            )
            write_idx(
                directory / NAMES[f"{prefix}_labels"], rng.integers(0, 10, n).astype(np.uint8)
            )
        return directory

    good = write_set(tmp / "good")
    cache = tmp / "cache"  # as $XDG_CACHE_HOME: complete sets of every data set
    for name in DATASETS:
        write_set(cache / "xgrad" / name)
    incomplete = write_set(tmp / "incomplete")
    (incomplete / NAMES["test_labels"]).unlink()
    bad_labels = write_set(tmp / "bad-labels")
    write_idx(bad_labels / NAMES["train_labels"], np.array([1, 12, 3, 4, 5, 6, 7, 8], np.uint8))
    truncated = write_set(tmp / "truncated")
    raw = gzip.decompress((truncated / NAMES["test_images"]).read_bytes())
    (truncated / NAMES["test_images"]).write_bytes(gzip.compress(raw[:-3]))
    files = {
        "random": tmp / "random-idx",
        "badgz": tmp / "badgz-idx.gz",
        "dims65": tmp / "dims65-idx",
    }
    files["random"].write_bytes(rng.bytes(50))
    files["badgz"].write_bytes(b"\x1f\x8b" + rng.bytes(30))
    files["dims65"].write_bytes(bytes([0, 0, 8, 65]) + (1).to_bytes(4, "big") * 65 + b"\x00")
    return SimpleNamespace(
        tmp=tmp,
        cache=cache,
        good=good,
        incomplete=incomplete,
        bad_labels=bad_labels,
        truncated=truncated,
        files=files,
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Rows that register backends or read the environment must not leak into others.
    monkeypatch.setattr(_registry, "_entries", dict(_registry.registered_backends()))
    monkeypatch.setattr(_registry, "_cache", {})
    monkeypatch.setattr(_registry, "_default", [])
    monkeypatch.setattr(_registry, "_type_owner", {})
    monkeypatch.setattr(_registry, "_env_checked", {}, raising=False)
    monkeypatch.setattr(_registry, "_env_warned", set(), raising=False)
    monkeypatch.delenv("XGRAD_BACKEND", raising=False)
    monkeypatch.delenv("XGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("case", API, ids=[c.id for c in API])
def test_api_bad_input(case: Case, ctx: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**vars(ctx)))
    with pytest.raises(case.error) as info:
        case.call(ctx)
    message = str(info.value)
    assert case.names.format(**vars(ctx)) in message, message
    # Raised on purpose by xgrad (typed), not passed through from deep inside a library.
    assert isinstance(info.value, xgrad.XgradError) or info.type in (TypeError, ValueError)


# -- the command line ----------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    id: str
    argv: list[str]
    names: str
    issue11: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _train(*extra: str) -> list[str]:
    # --iters 2: where a bad value is accepted (the bug), the run ends fast and rc 0 fails.
    return [
        "train",
        "--data-dir",
        "{good}",
        "--no-download",
        "--quiet",
        "--no-plot",
        "--iters",
        "2",
        *extra,
    ]


def _gradcheck(*extra: str) -> list[str]:
    return ["gradcheck", "--data-dir", "{good}", "--no-download", *extra]


QUICK = ["train", "--quiet", "--no-plot", "--iters", "2"]
CACHED = {"XDG_CACHE_HOME": "{cache}"}  # a complete data set where the old reader fell back

CLI: list[CliCase] = [
    CliCase("unknown-command", ["bogus"], "COMMAND"),
    CliCase("backends-unknown-option", ["backends", "--bogus"], "--bogus"),
    CliCase("backends-env-garbage", ["backends"], "XGRAD_BACKEND", True, {"XGRAD_BACKEND": "x"}),
    CliCase(
        "backends-json-env-device",
        ["backends", "--json"],
        "XGRAD_BACKEND",
        True,
        {"XGRAD_BACKEND": "torch:mps"},
    ),
    CliCase("train-iters-0", [*_train(), "--iters", "0"], "iters"),
    CliCase("train-iters-negative", [*_train(), "--iters", "-5"], "iters"),
    CliCase("train-iters-text", [*_train(), "--iters", "abc"], "--iters"),
    CliCase("train-batch-0", _train("--batch-size", "0"), "batch_size"),
    CliCase("train-lr-0", _train("--lr", "0"), "lr"),
    CliCase("train-lr-negative", _train("--lr", "-0.1"), "lr"),
    CliCase("train-lr-nan", _train("--lr", "nan"), "lr"),
    CliCase("train-hidden-0", _train("--hidden", "0"), "hidden"),
    CliCase("train-seed-negative", _train("--seed", "-1"), "seed"),
    CliCase("train-backend-garbage", _train("--backend", "garbage"), "backend"),
    CliCase("train-backend-mps", _train("--backend", "torch:mps"), "device: 'mps'", True),
    CliCase("train-backend-cpu-1", _train("--backend", "torch:cpu:1"), "device: 'cpu:1'", True),
    CliCase("train-backend-space", _train("--backend", "numpy "), "backend", True),
    CliCase("train-device-numpy-cuda", _train("--device", "cuda:7"), "device"),
    CliCase("train-env-backend", _train(), "XGRAD_BACKEND", True, {"XGRAD_BACKEND": "garbage"}),
    CliCase("train-dtype", _train("--dtype", "float16"), "--dtype"),
    CliCase("train-optimizer", _train("--optimizer", "foo"), "--optimizer"),
    CliCase("train-activation", _train("--activation", "tanh"), "--activation"),
    CliCase("train-gradient", _train("--gradient", "foo"), "--gradient"),
    CliCase("train-dataset", ["train", "--dataset", "cifar"], "--dataset"),
    CliCase(
        "train-data-dir-missing",
        [*QUICK, "--dataset", "fashion-mnist", "--data-dir", "{tmp}/missing-cli-train"],
        "--data-dir) names {tmp}/missing-cli-train,",
        True,
        CACHED,
    ),
    CliCase(
        "train-env-data-missing",
        QUICK,
        "XGRAD_DATA names {tmp}/missing-cli-env,",
        True,
        {"XGRAD_DATA": "{tmp}/missing-cli-env", **CACHED},
    ),
    CliCase(
        "train-data-incomplete",
        [*QUICK, "--data-dir", "{incomplete}", "--no-download"],
        f"{NAMES['test_labels']}",
        True,
        CACHED,
    ),
    CliCase(
        "train-label-too-big",
        ["train", "--data-dir", "{bad_labels}", "--no-download", "--quiet", "--iters", "2"],
        NAMES["train_labels"],
        True,
    ),
    CliCase(
        "train-truncated",
        ["train", "--data-dir", "{truncated}", "--no-download", "--quiet", "--iters", "2"],
        NAMES["test_images"],
    ),
    CliCase("gradcheck-batch-0", _gradcheck("--batch", "0"), "--batch"),
    CliCase("gradcheck-hidden-0", _gradcheck("--hidden", "0"), "hidden"),
    CliCase("gradcheck-backend", _gradcheck("--backend", "nope"), "backend"),
    CliCase("gradcheck-backend-xla", _gradcheck("--backend", "torch:xla"), "device: 'xla'", True),
    CliCase("gradcheck-seed-negative", _gradcheck("--seed", "-4"), "seed", True),
    CliCase(
        "gradcheck-data-dir-missing",
        ["gradcheck", "--data-dir", "{tmp}/missing-cli-gradcheck"],
        "--data-dir) names {tmp}/missing-cli-gradcheck,",
        True,
        CACHED,
    ),
]


def _cli_env(extra: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XGRAD_")}
    env.update(XDG_CACHE_HOME=str(home / "cache"), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update(HOME=str(home))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def cli_results(ctx: SimpleNamespace) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every CLI row in its own process, a few at a time (each pays Python's start-up)."""
    places = {"good": ctx.good, "incomplete": ctx.incomplete, "tmp": ctx.tmp}
    places.update(bad_labels=ctx.bad_labels, truncated=ctx.truncated)

    def run(case: CliCase) -> subprocess.CompletedProcess[str]:
        cwd = ctx.tmp / f"cwd-{case.id}"
        cwd.mkdir()
        argv = [a.format(**{k: str(v) for k, v in places.items()}) for a in case.argv]
        env = {k: v.format(**vars(ctx)) for k, v in case.env.items()}
        return subprocess.run(
            [sys.executable, "-m", "xgrad.cli", *argv],
            cwd=cwd,
            env=_cli_env(env, cwd),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c.id for c in CLI], pool.map(run, CLI), strict=True))


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_cli_bad_input(
    case: CliCase, cli_results: dict[str, subprocess.CompletedProcess[str]], ctx: SimpleNamespace
) -> None:
    res = cli_results[case.id]
    assert res.returncode in (1, 2), (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    assert case.names.format(**vars(ctx)) in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("xgrad"), res.stderr
    # Nothing was trained or written next to the user.
    assert not [p for p in (ctx.tmp / f"cwd-{case.id}").rglob("*") if p.is_file()]


def test_catalogue_size() -> None:
    kinds = {c.id for c in API} | {f"cli-{c.id}" for c in CLI}
    assert len(kinds) == len(API) + len(CLI) >= 100
