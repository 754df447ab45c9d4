"""xgrad.optim against NumPy implementations of the book's formulas, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xgrad
from xgrad import optim
from xgrad._arrays import to_numpy
from xgrad.testing import assert_close

# -- NumPy references: the book's common/optimizer.py, written out here -------------------


class RefSGD:
    def __init__(self, lr=0.01):  # type: ignore[no-untyped-def]
        self.lr = lr

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        for key in params:
            params[key] -= self.lr * grads[key]


class RefMomentum:
    def __init__(self, lr=0.01, momentum=0.9):  # type: ignore[no-untyped-def]
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class RefNesterov:
    def __init__(self, lr=0.01, momentum=0.9):  # type: ignore[no-untyped-def]
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]


class RefAdaGrad:
    def __init__(self, lr=0.01):  # type: ignore[no-untyped-def]
        self.lr, self.h = lr, None

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RefRMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):  # type: ignore[no-untyped-def]
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RefAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):  # type: ignore[no-untyped-def]
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter, self.m, self.v = 0, None, None

    def update(self, params, grads):  # type: ignore[no-untyped-def]
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


CASES = {
    # name: (ours, reference, non-default hyperparameters)
    "sgd": (optim.SGD, RefSGD, {"lr": 0.1}),
    "momentum": (optim.Momentum, RefMomentum, {"lr": 0.05, "momentum": 0.8}),
    "nesterov": (optim.Nesterov, RefNesterov, {"lr": 0.05, "momentum": 0.85}),
    "adagrad": (optim.AdaGrad, RefAdaGrad, {"lr": 0.3}),
    "rmsprop": (optim.RMSprop, RefRMSprop, {"lr": 0.02, "decay_rate": 0.9}),
    "adam": (optim.Adam, RefAdam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
}
SHAPES = {"W1": (3, 4), "b1": (4,), "W2": (4, 2), "s": ()}
STEPS = 6


def _host_problem(dtype: str, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    # Gradient scales vary from step to step so that the state (velocities, squared sums)
    # matters; the gradient depends on the parameter, as in a real descent.
    scales = [1.0, 0.1, 3.0, 0.5, 2.0, 0.01]
    noise = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]

    def grads_at(step, host_params):  # type: ignore[no-untyped-def]
        return {
            k: (scales[step] * (2 * host_params[k].astype(np.float64) + noise[step][k])).astype(
                dtype
            )
            for k in SHAPES
        }

    return params, grads_at


def _writeable(backend: xgrad.Backend) -> bool:
    probe = backend.asarray(np.zeros(2))
    try:
        probe[...] = probe + 1
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _same_device(a, b) -> bool:  # type: ignore[no-untyped-def]
    from array_api_compat import device

    return device(a) == device(b)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_reference(backend: xgrad.Backend, name: str, dtype: str) -> None:
    ours_cls, ref_cls, hyper = CASES[name]
    host, grads_at = _host_problem(dtype)
    ref_params = {k: v.copy() for k, v in host.items()}
    params = {k: backend.asarray(v) for k, v in host.items()}
    originals = dict(params)
    ours, ref = ours_cls(**hyper), ref_cls(**hyper)
    for step in range(STEPS):
        grads_host = grads_at(step, {k: to_numpy(v) for k, v in params.items()})
        ref_grads = grads_at(step, ref_params)
        ours.update(params, {k: backend.asarray(v) for k, v in grads_host.items()})
        ref.update(ref_params, ref_grads)
    assert ours.iter == STEPS
    writeable = _writeable(backend)
    for k in SHAPES:
        if backend.name == "numpy" and dtype == "float64":
            # Same operations in the same order: the very same bits.
            np.testing.assert_array_equal(params[k], ref_params[k])
        assert_close(params[k], ref_params[k], err_msg=k)
        assert backend.owns(params[k]) and _same_device(params[k], originals[k])
        # In place where the library allows it, else a new array in the dict.
        assert (params[k] is originals[k]) == writeable
        for slot in ours.state.values():
            assert _same_device(slot[k], params[k])
            assert slot[k].dtype == params[k].dtype


@pytest.mark.parametrize("name", list(CASES))
def test_pure_rule_is_the_book_update(backend: xgrad.Backend, name: str) -> None:
    """init/apply give update's numbers bit for bit, and change nothing they are given."""
    ours_cls, _, hyper = CASES[name]
    host, grads_at = _host_problem("float64")
    params = {k: backend.asarray(v.copy()) for k, v in host.items()}
    pure = {k: backend.asarray(v.copy()) for k, v in host.items()}
    book, rule = ours_cls(**hyper), ours_cls(**hyper)
    state = rule.init(pure)
    assert state.steps == 0 and set(state.slots) == set(rule._slots)
    for step in range(STEPS):
        grads = {k: backend.asarray(v) for k, v in grads_at(step, host).items()}
        book.update(params, grads)
        before = {k: to_numpy(v).copy() for k, v in pure.items()}
        slots_before = {
            s: {k: to_numpy(v).copy() for k, v in a.items()} for s, a in state.slots.items()
        }
        new, new_state = rule.apply(grads, state, pure)
        for k in pure:  # nothing given was written
            np.testing.assert_array_equal(to_numpy(pure[k]), before[k])
            for slot, arrays in state.slots.items():
                np.testing.assert_array_equal(to_numpy(arrays[k]), slots_before[slot][k])
        pure, state = new, new_state
    assert state.steps == book.iter == STEPS
    for k in params:
        np.testing.assert_array_equal(to_numpy(pure[k]), to_numpy(params[k]))
        for slot in rule._slots:
            np.testing.assert_array_equal(
                to_numpy(state.slots[slot][k]), to_numpy(book.state[slot][k])
            )


BOOK_LRS = {"sgd": 0.95, "momentum": 0.1, "adagrad": 1.5, "adam": 0.3}


def _f(x, y):  # type: ignore[no-untyped-def]
    return x**2 / 20.0 + y**2


def _book_reference(name: str) -> tuple[float, float]:
    # optimizer_compare_naive.py: Python floats, 30 steps from (-7, 2).
    _, ref_cls, _ = CASES[name]
    opt = ref_cls(lr=BOOK_LRS[name])
    params = {"x": -7.0, "y": 2.0}
    for _ in range(30):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        opt.update(params, grads)
    return float(params["x"]), float(params["y"])


@pytest.mark.parametrize("name", list(BOOK_LRS))
def test_book_optimizer_compare(backend: xgrad.Backend, name: str) -> None:
    x_ref, y_ref = _book_reference(name)
    f0 = _f(-7.0, 2.0)
    factor = _f(x_ref, y_ref) / f0
    assert factor < 0.02  # every optimizer gets close to the minimum at (0, 0)

    opt = optim.get_optimizer(name, lr=BOOK_LRS[name])
    params = {"x": backend.asarray(-7.0), "y": backend.asarray(2.0)}
    for _ in range(30):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        opt.update(params, grads)
    x, y = float(to_numpy(params["x"])), float(to_numpy(params["y"]))
    assert _f(x, y) <= f0 * factor * (1 + 1e-9)
    assert_close(np.array([x, y]), np.array([x_ref, y_ref]), atol=1e-15)


@pytest.mark.parametrize("name", list(BOOK_LRS))
def test_python_float_params_stay_floats(name: str) -> None:
    # The book's naive comparison runs on Python floats; so does ours.
    opt = optim.get_optimizer(name, lr=BOOK_LRS[name])
    params = {"x": -7.0, "y": 2.0}
    history = []
    for _ in range(30):
        history.append(params["x"])
        opt.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    assert type(params["x"]) is float and type(params["y"]) is float
    assert (params["x"], params["y"]) == pytest.approx(_book_reference(name), rel=1e-14, abs=1e-30)
    assert history[0] == -7.0  # no aliasing: the history keeps its values


def test_read_only_numpy_arrays_are_replaced_not_written() -> None:
    w = np.array([1.0, 2.0])
    w.flags.writeable = False
    params = {"w": w}
    optim.SGD(lr=0.5).update(params, {"w": np.array([1.0, 1.0])})
    np.testing.assert_array_equal(w, [1.0, 2.0])
    np.testing.assert_array_equal(params["w"], [0.5, 1.5])


def test_sgd_is_exactly_p_minus_lr_g(backend: xgrad.Backend) -> None:
    # Issue 4's 1e-12 bar on TwoLayerNet rests on SGD being `p - lr * g`, nothing else.
    rng = np.random.default_rng(1)
    p0, g = rng.standard_normal(1000), rng.standard_normal(1000)
    expected = p0 - 0.1 * g
    params = {"p": backend.asarray(p0.copy())}
    optim.SGD(lr=0.1).update(params, {"p": backend.asarray(g)})
    np.testing.assert_array_equal(to_numpy(params["p"]), expected)


def test_grad_dtype_cast_to_param_dtype(backend: xgrad.Backend) -> None:
    params = {"p": backend.asarray(np.array([1.0, 2.0], dtype=np.float32))}
    optim.SGD(lr=0.5).update(params, {"p": backend.asarray(np.array([1.0, 1.0]))})
    assert backend.dtype_name(params["p"].dtype) == "float32"
    assert_close(params["p"], np.array([0.5, 1.5], dtype=np.float32))


# -- checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("to_backend", [False, True])
@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop"])
def test_state_dict_round_trip(backend: xgrad.Backend, name: str, to_backend: bool) -> None:
    ours_cls, _, hyper = CASES[name]
    host, grads_at = _host_problem("float64", seed=3)
    a_params = {k: backend.asarray(v) for k, v in host.items()}
    a = ours_cls(**hyper)
    for step in range(3):
        g = grads_at(step, {k: to_numpy(v) for k, v in a_params.items()})
        a.update(a_params, {k: backend.asarray(v) for k, v in g.items()})
    saved = a.state_dict()
    assert saved["optimizer"] == ours_cls.__name__ and saved["iter"] == 3
    assert saved["hyperparameters"] == {k: float(v) for k, v in hyper.items()}
    for arrays in saved["state"].values():
        assert all(type(v) is np.ndarray for v in arrays.values())
    b = optim.get_optimizer(name)  # default hyperparameters, restored by the load
    b.load_state_dict(saved, backend=backend if to_backend else None)
    assert b.hyperparameters == a.hyperparameters
    b_params = {k: backend.asarray(to_numpy(v)) for k, v in a_params.items()}
    for step in range(3, STEPS):
        g = grads_at(step, {k: to_numpy(v) for k, v in a_params.items()})
        a.update(a_params, {k: backend.asarray(v) for k, v in g.items()})
        b.update(b_params, {k: backend.asarray(v) for k, v in g.items()})
    for k in SHAPES:
        np.testing.assert_array_equal(to_numpy(b_params[k]), to_numpy(a_params[k]))
        for slot in b.state.values():
            assert backend.owns(slot[k]) and _same_device(slot[k], b_params[k])
    # The saved state is a copy, not a view of the live state.
    saved_again = a.state_dict()
    slot = next(iter(saved["state"]))
    assert not np.array_equal(saved["state"][slot]["W1"], saved_again["state"][slot]["W1"])


def test_load_state_dict_rejects_mismatches() -> None:
    saved = optim.Adam().state_dict()
    with pytest.raises(ValueError, match="saved by optimizer 'Adam'"):
        optim.SGD().load_state_dict(saved)
    bad = {**saved, "hyperparameters": {"lr": -1.0}}
    opt = optim.Adam(lr=0.5)
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad)
    assert opt.lr == 0.5  # nothing was kept
    with pytest.raises(ValueError, match="iter"):
        optim.Adam().load_state_dict({**saved, "iter": -1})
    m = optim.Momentum()
    m.load_state_dict({**optim.Momentum().state_dict(), "state": {"v": {"w": np.zeros(3)}}})
    with pytest.raises(ValueError, match="shape"):
        m.update({"w": np.zeros(2)}, {"w": np.zeros(2)})


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "exc", "match"),
    [
        ("sgd", {"lr": 0.0}, ValueError, "lr: expected a finite number > 0"),
        ("sgd", {"lr": -0.1}, ValueError, "lr"),
        ("adam", {"lr": math.inf}, ValueError, "lr"),
        ("adagrad", {"lr": math.nan}, ValueError, "lr"),
        ("sgd", {"lr": "0.1"}, TypeError, "lr: expected a real number"),
        ("sgd", {"lr": True}, TypeError, "lr"),
        ("momentum", {"momentum": 1.0}, ValueError, r"momentum: expected a number in \[0, 1\)"),
        ("nesterov", {"momentum": -0.1}, ValueError, "momentum"),
        ("rmsprop", {"decay_rate": 1.5}, ValueError, "decay_rate"),
        ("adam", {"beta1": 1.0}, ValueError, "beta1"),
        ("adam", {"beta2": -0.5}, ValueError, "beta2"),
    ],
)
def test_hyperparameters_are_validated(name, kwargs, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        optim.get_optimizer(name, **kwargs)


def test_hyperparameter_assignment_is_validated() -> None:
    opt = optim.SGD()
    opt.lr = 0.5  # schedules may change it
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1


def test_get_optimizer_names() -> None:
    expected = {
        "sgd": optim.SGD,
        "Momentum": optim.Momentum,
        "NESTEROV": optim.Nesterov,
        "AdaGrad": optim.AdaGrad,
        "rmsprop": optim.RMSprop,
        "adam": optim.Adam,
    }
    for name, cls in expected.items():
        assert type(optim.get_optimizer(name)) is cls
    opt = optim.get_optimizer("momentum", lr=0.2, momentum=0.5)
    assert opt.hyperparameters == {"lr": 0.2, "momentum": 0.5}
    assert repr(opt) == "Momentum(lr=0.2, momentum=0.5)"
    with pytest.raises(ValueError, match="sgd, momentum, nesterov, adagrad, rmsprop, adam"):
        optim.get_optimizer("lbfgs")
    with pytest.raises(TypeError, match="name"):
        optim.get_optimizer(3)  # type: ignore[arg-type]
    assert xgrad.optim is optim


def test_book_defaults() -> None:
    assert optim.SGD().lr == 0.01
    assert optim.Momentum().hyperparameters == {"lr": 0.01, "momentum": 0.9}
    assert optim.Nesterov().hyperparameters == {"lr": 0.01, "momentum": 0.9}
    assert optim.AdaGrad().lr == 0.01
    assert optim.RMSprop().hyperparameters == {"lr": 0.01, "decay_rate": 0.99}
    assert optim.Adam().hyperparameters == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}


def test_update_errors_leave_params_untouched(backend: xgrad.Backend) -> None:
    w0 = np.array([1.0, 2.0])
    params = {"a": backend.asarray(w0), "b": backend.asarray(w0)}
    opt = optim.Adam()
    with pytest.raises(ValueError, match=r"grads: no gradient for params \['b'\]"):
        opt.update(params, {"a": backend.asarray(w0)})
    with pytest.raises(ValueError, match=r"grads\['b'\]: expected shape \(2,\)"):
        opt.update(params, {"a": backend.asarray(w0), "b": backend.asarray(np.ones(3))})
    with pytest.raises(TypeError, match=r"grads\['b'\]"):
        opt.update(params, {"a": backend.asarray(w0), "b": "x"})
    with pytest.raises(TypeError, match=r"params\['i'\]: expected a real floating array"):
        opt.update({"i": backend.asarray(np.array([1, 2]))}, {"i": backend.asarray(w0)})
    with pytest.raises(TypeError, match="params: expected a dict"):
        opt.update([backend.asarray(w0)], {})  # type: ignore[arg-type]
    assert opt.iter == 0 and all(not s for s in opt.state.values())
    for v in params.values():
        assert_close(v, w0)


def test_mixed_backends_are_refused(backend: xgrad.Backend) -> None:
    if backend.name == "numpy":
        pytest.skip("needs a second backend")
    params = {"w": backend.asarray(np.array([1.0, 2.0]))}
    with pytest.raises(ValueError, match=r"grads\['w'\] and params\['w'\]: arrays from two"):
        optim.SGD().update(params, {"w": np.array([1.0, 1.0])})
