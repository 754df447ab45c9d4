"""The book's optimizers (chapter 6, ``common/optimizer.py``) on every backend.

Each optimizer has the book's interface, ``update(params, grads)``, with ``params`` and
``grads`` dicts of arrays under the same keys, and the book's update formulas operation for
operation, so a float64 run reproduces NumPy's numbers to the last bits.

The dict is always updated; the arrays themselves are updated in place wherever the
library allows it (NumPy, torch, array-api-strict, CuPy), as the book's
``params[key] -= lr * grads[key]`` does, so a network holding the same arrays sees the new
values. Immutable arrays (JAX, read-only NumPy arrays) cannot change: their dict entry is
replaced by a new array, so code must read parameters back from the dict. Writeability is
found out by trying, per array. Python numbers (the book's ``optimizer_compare_naive.py``)
stay Python floats.

Underneath, each optimizer is a pure rule in optax's shape: ``init(params)`` gives an
`OptState` (the step count and per-parameter arrays by slot), ``apply(grads, state,
params)`` returns the new parameters and the new state and changes nothing it is given.
``update`` is the book's adapter over the two: it checks its arguments, keeps the state in
``opt.state``, and writes the new values back.

>>> import numpy as np
>>> params = {"W": np.array([1.0, -2.0])}
>>> W = params["W"]
>>> SGD(lr=0.1).update(params, {"W": np.array([0.5, 0.5])})
>>> W, params["W"] is W
(array([ 0.95, -2.05]), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NamedTuple

import numpy as np

from xgrad import _compat
from xgrad.backends import Backend, get_backend, resolve_backend
from xgrad.backends._registry import backend_of
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "OptState",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
]

# The book's guard against division by zero, added to the square root.
EPS = 1e-7


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a real number, found {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    v = _real(name, value)
    if not (math.isfinite(v) and v > 0):
        raise ArgumentError(f"{name}: expected a finite number > 0, found {value!r}")
    return v


def _unit(name: str, value: Any) -> float:
    v = _real(name, value)
    if not 0 <= v < 1:
        raise ArgumentError(f"{name}: expected a number in [0, 1), found {value!r}")
    return v


class _Hyperparameter:
    """A validated float attribute: checked at construction and on every later assignment
    (learning-rate schedules set ``opt.lr`` between steps)."""

    def __init__(self, check: Callable[[str, Any], float]) -> None:
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = self.check(self.name, value)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_ | np.ndarray)


class OptState(NamedTuple):
    """An optimizer's state between steps (optax's ``init``/``update`` state).

    Attributes
    ----------
    steps : int
        Steps taken.
    slots : dict of dict of arrays
        ``slots[slot][key]``: per-parameter arrays, e.g. Momentum's ``slots["v"]["W1"]``.
    """

    steps: int
    slots: Mapping[str, Mapping[str, Any]]


class Optimizer:
    """Base class: the pure rule (`init`, `apply`) and the book's `update` over it.

    Subclasses name their hyperparameters in ``_hyper`` and their per-parameter state
    arrays in ``_slots``, and implement ``_rule(p, g, s, xp, t)``: the new value of ``p``
    and the new arrays of its slots ``s`` (a dict), at step ``t`` (1 for the first).

    Attributes
    ----------
    state : dict of dict of arrays
        ``state[slot][key]``, e.g. Momentum's velocities ``state["v"]["W1"]``; created
        lazily, with zeros like the parameter (same backend, device, dtype), at the first
        update that sees ``key``.
    iter : int
        Number of `update` calls so far.
    """

    _hyper: tuple[str, ...] = ("lr",)
    _slots: tuple[str, ...] = ()

    lr = _Hyperparameter(_positive)

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr
        self.iter = 0
        self.state: dict[str, dict[str, Any]] = {slot: {} for slot in self._slots}
        self._loaded_on_host = False

    def __repr__(self) -> str:
        args = ", ".join(f"{h}={getattr(self, h)!r}" for h in self._hyper)
        return f"{type(self).__name__}({args})"

    @property
    def hyperparameters(self) -> dict[str, float]:
        """The hyperparameters by name, e.g. ``{"lr": 0.01, "momentum": 0.9}``."""
        return {h: getattr(self, h) for h in self._hyper}

    # -- the pure rule -------------------------------------------------------------------
    def init(self, params: Mapping[str, Any]) -> OptState:
        """The state before the first step: zeros like each parameter in every slot.

        >>> import numpy as np
        >>> Momentum().init({"W": np.array([1.0, 2.0])})
        OptState(steps=0, slots={'v': {'W': array([0., 0.])}})
        """
        slots = {
            slot: {
                k: _compat.array_namespace(p).zeros_like(p, device=_compat.device(p))
                for k, p in params.items()
            }
            for slot in self._slots
        }
        return OptState(0, slots)

    def apply(
        self, grads: Mapping[str, Any], state: OptState, params: Mapping[str, Any]
    ) -> tuple[dict[str, Any], OptState]:
        """One step as a pure function: the new parameters and the new state.

        Nothing given is changed (arrays are not written in place), so the rule composes
        with immutable arrays and function transformations. Arrays of one backend and
        dtype are expected; `update` checks and converts its arguments first.

        >>> import numpy as np
        >>> opt = SGD(lr=0.5)
        >>> params = {"W": np.array([1.0])}
        >>> new, state = opt.apply({"W": np.array([1.0])}, opt.init(params), params)
        >>> new["W"], params["W"], state.steps
        (array([0.5]), array([1.]), 1)
        """
        t = state.steps + 1
        slots = {slot: dict(state.slots[slot]) for slot in self._slots}
        new_params = {}
        for key, p in params.items():
            own = {slot: state.slots[slot][key] for slot in self._slots}
            new_params[key], own = self._rule(p, grads[key], own, _compat.array_namespace(p), t)
            for slot, value in own.items():
                slots[slot][key] = value
        return new_params, OptState(t, slots)

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    # -- the book's update ----------------------------------------------------------------
    def update(self, params: MutableMapping[str, Any], grads: Mapping[str, Any]) -> None:
        """Apply one step to every entry of ``params`` using ``grads[key]``.

        Parameters
        ----------
        params : dict
            Name -> array (any backend) or Python number. Arrays are updated in place
            where writeable, else (JAX) ``params[key]`` is replaced by the new array.
        grads : dict
            Name -> gradient for every key of ``params`` (extra keys are ignored, as in
            the book): an array of the parameter's backend, device and shape (cast to
            the parameter's dtype if it differs), or a Python number.

        Raises
        ------
        ValueError
            A key without gradient, a shape mismatch, or arrays of two backends/devices.
        TypeError
            A parameter that is neither a real floating array nor a number.

        Nothing is changed when an error is raised: every entry is checked first.
        """
        if not isinstance(params, MutableMapping):
            raise ArgumentTypeError(
                f"params: expected a dict of arrays, found {type(params).__name__}"
            )
        if not isinstance(grads, Mapping):
            raise ArgumentTypeError(
                f"grads: expected a dict of arrays, found {type(grads).__name__}"
            )
        missing = [k for k in params if k not in grads]
        if missing:
            raise ArgumentError(
                f"grads: no gradient for params {missing}; found keys {list(grads)}"
            )
        prepared = [(key, *self._prepare(key, params[key], grads[key])) for key in params]
        for key, p, _, _, backend in prepared:
            if self._loaded_on_host or (self._slots and key not in self.state[self._slots[0]]):
                self._init_state(key, p, backend)
        new, state = self.apply(
            {key: g for key, _, g, _, _ in prepared},
            OptState(self.iter, self.state),
            {key: p for key, p, _, _, _ in prepared},
        )
        for key, p, _, scalar, backend in prepared:
            params[key] = float(backend.to_numpy(new[key])) if scalar else _write(p, new[key])
        self.iter = state.steps
        for slot, arrays in state.slots.items():
            self.state[slot].update(arrays)
        self._loaded_on_host = False

    def _prepare(self, key: str, p: Any, g: Any) -> tuple[Any, Any, bool, Backend]:
        scalar = _is_number(p)
        if scalar:
            b = resolve_backend(None, g) if not _is_number(g) else get_backend()
            p = b.asarray(np.asarray(float(p)))
        else:
            owner = backend_of(p, strict=False)
            if owner is None:
                raise ArgumentTypeError(
                    f"params[{key!r}]: expected an array or a real number, found {type(p).__name__}"
                )
            b = owner
            if not _compat.is_real_floating(b.xp, p.dtype):
                raise ArgumentTypeError(
                    f"params[{key!r}]: expected a real floating array, found dtype "
                    f"{b.dtype_name(p.dtype)} (convert with dtype='float64' first)"
                )
        self._check_state_shape(key, p)
        if _is_number(g):
            return p, b.asarray(np.asarray(float(g)), dtype=p.dtype), scalar, b
        # `.device` is the standard's attribute; _compat.device() is for creation functions.
        if type(g) is not type(p) or g.device != p.device:
            # Slow path only when something looks off: name both sides in the error.
            if backend_of(g, strict=False) is None:
                raise ArgumentTypeError(
                    f"grads[{key!r}]: expected an array or a real number, found {type(g).__name__}"
                )
            try:
                b = resolve_backend(None, p, g)
            except ValueError as exc:
                raise ArgumentError(f"grads[{key!r}] and params[{key!r}]: {exc}") from None
        if tuple(g.shape) != tuple(p.shape):
            raise ArgumentError(
                f"grads[{key!r}]: expected shape {tuple(p.shape)} like params[{key!r}], "
                f"found {tuple(g.shape)}"
            )
        if g.dtype != p.dtype:
            g = b.xp.astype(g, p.dtype)
        return p, g, scalar, b

    def _check_state_shape(self, key: str, p: Any) -> None:
        # Per-parameter state (velocities, moments) was made for the shape the parameter had;
        # a replaced parameter of another shape would fail deep inside a broadcast.
        for slot in self._slots:
            s = self.state[slot].get(key)
            if s is not None and tuple(s.shape) != tuple(p.shape):
                raise ArgumentError(
                    f"params[{key!r}]: expected shape {tuple(s.shape)}, the shape this"
                    f" {type(self).__name__} keeps state[{slot!r}][{key!r}] for, found"
                    f" {tuple(p.shape)}; a parameter of a new shape needs a new optimizer"
                    f" (or del opt.state[slot][{key!r}] for every slot)"
                )

    def _init_state(self, key: str, p: Any, backend: Backend) -> None:
        xp = backend.xp
        for slot in self._slots:
            s = self.state[slot].get(key)
            if s is None:
                self.state[slot][key] = xp.zeros_like(p, device=_compat.device(p))
                continue
            if not backend.owns(s) or _compat.device(s) != _compat.device(p) or s.dtype != p.dtype:
                s = backend.asarray(backend_of(s, strict=True).to_numpy(s), dtype=p.dtype)
            if tuple(s.shape) != tuple(p.shape):
                raise ArgumentError(
                    f"state[{slot!r}][{key!r}]: loaded shape {tuple(s.shape)} does not match "
                    f"params[{key!r}] of shape {tuple(p.shape)}"
                )
            self.state[slot][key] = s

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: host NumPy copies of the state, and scalars.

        Returns
        -------
        dict
            ``{"optimizer": class name, "hyperparameters": {...}, "iter": int,
            "state": {slot: {key: numpy.ndarray}}}``.
        """
        state = {
            slot: {
                key: np.array(backend_of(arr, strict=True).to_numpy(arr), copy=True)
                for key, arr in arrays.items()
            }
            for slot, arrays in self.state.items()
        }
        return {
            "optimizer": type(self).__name__,
            "hyperparameters": self.hyperparameters,
            "iter": self.iter,
            "state": state,
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], *, backend: str | Backend | None = None
    ) -> None:
        """Restore a `state_dict` (hyperparameters, iteration count and state arrays).

        Parameters
        ----------
        state_dict : dict
            As returned by `state_dict` (arrays may be NumPy or of any backend).
        backend : str or Backend, optional
            Move the state arrays there now. Without it they stay on the host until the
            next `update`, which moves each to its parameter's backend, device and dtype.
        """
        if not isinstance(state_dict, Mapping):
            raise ArgumentTypeError(
                f"state_dict: expected a dict, found {type(state_dict).__name__}"
            )
        name = state_dict.get("optimizer")
        if name != type(self).__name__:
            raise ArgumentError(
                f"state_dict: saved by optimizer {name!r}, cannot load into {type(self).__name__}"
            )
        hyper = dict(state_dict.get("hyperparameters", {}))
        unknown = set(hyper) - set(self._hyper)
        if unknown:
            raise ArgumentError(f"state_dict: unknown hyperparameters {sorted(unknown)}")
        it = state_dict.get("iter", 0)
        if isinstance(it, bool) or not isinstance(it, numbers.Integral) or it < 0:
            raise ArgumentError(f"state_dict['iter']: expected an integer >= 0, found {it!r}")
        slots = dict(state_dict.get("state", {}))
        if set(slots) != set(self._slots):
            raise ArgumentError(
                f"state_dict['state']: expected slots {sorted(self._slots)}, found {sorted(slots)}"
            )
        for h, v in hyper.items():
            getattr(type(self), h).check(h, v)
        target = get_backend(backend) if backend is not None else None
        new_state: dict[str, dict[str, Any]] = {}
        for slot, arrays in slots.items():
            new_state[slot] = {}
            for key, arr in dict(arrays).items():
                owner = backend_of(arr, strict=False)
                host = np.array(owner.to_numpy(arr) if owner else arr, copy=True)
                if host.dtype.kind != "f":
                    raise ArgumentTypeError(
                        f"state_dict['state'][{slot!r}][{key!r}]: expected a floating array, "
                        f"found dtype {host.dtype}"
                    )
                new_state[slot][key] = target.asarray(host) if target is not None else host
        for h, v in hyper.items():
            setattr(self, h, v)
        self.iter = int(it)
        self.state = new_state
        self._loaded_on_host = True


def _write(p: Any, new: Any) -> Any:
    """``new`` stored into ``p`` in place if ``p`` is writeable, else ``new`` itself."""
    try:
        p[...] = new
    except (TypeError, ValueError, RuntimeError):
        # JAX arrays are immutable (TypeError), read-only NumPy arrays raise ValueError,
        # torch leaves that require grad raise RuntimeError: the dict gets the new array.
        return new
    return p


class SGD(Optimizer):
    """Stochastic gradient descent: ``p = p - lr * g``.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate (finite, > 0).
    """

    _hyper = ("lr",)

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        return p - self.lr * g, s


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * g; p = p + v``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9
        In [0, 1).
    """

    _hyper = ("lr", "momentum")
    _slots = ("v",)
    momentum = _Hyperparameter(_unit)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = momentum

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        v = self.momentum * s["v"] - self.lr * g
        return p + v, {"v": v}


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's form (arXiv:1212.0901).

    ``v = momentum * v - lr * g; p = p + momentum**2 * v - (1 + momentum) * lr * g``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9
        In [0, 1).
    """

    _hyper = ("lr", "momentum")
    _slots = ("v",)
    momentum = _Hyperparameter(_unit)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = momentum

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        m, lr = self.momentum, self.lr
        v = s["v"] * m
        v = v - lr * g
        p = p + m * m * v
        return p - (1 + m) * lr * g, {"v": v}


class AdaGrad(Optimizer):
    """AdaGrad: ``h = h + g * g; p = p - lr * g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    lr : float, default 0.01
    """

    _hyper = ("lr",)
    _slots = ("h",)

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        h = s["h"] + g * g
        return p - self.lr * g / (xp.sqrt(h) + EPS), {"h": h}


class RMSprop(Optimizer):
    """RMSprop: ``h = decay_rate * h + (1 - decay_rate) * g * g``, then as AdaGrad.

    Parameters
    ----------
    lr : float, default 0.01
    decay_rate : float, default 0.99
        In [0, 1).
    """

    _hyper = ("lr", "decay_rate")
    _slots = ("h",)
    decay_rate = _Hyperparameter(_unit)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = decay_rate

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        h = s["h"] * self.decay_rate
        h = h + (1 - self.decay_rate) * g * g
        return p - self.lr * g / (xp.sqrt(h) + EPS), {"h": h}


class Adam(Optimizer):
    """Adam (arXiv:1412.6980) in the book's form, bias correction folded into the rate.

    ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``;
    ``m += (1 - beta1) * (g - m)``; ``v += (1 - beta2) * (g**2 - v)``;
    ``p = p - lr_t * m / (sqrt(v) + 1e-7)``.

    Parameters
    ----------
    lr : float, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
        In [0, 1).
    """

    _hyper = ("lr", "beta1", "beta2")
    _slots = ("m", "v")
    beta1 = _Hyperparameter(_unit)
    beta2 = _Hyperparameter(_unit)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1 = beta1
        self.beta2 = beta2

    def _rule(
        self, p: Any, g: Any, s: dict[str, Any], xp: Any, t: int
    ) -> tuple[Any, dict[str, Any]]:
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        m = s["m"] + (1 - self.beta1) * (g - s["m"])
        v = s["v"] + (1 - self.beta2) * (g**2 - s["v"])
        return p - lr_t * m / (xp.sqrt(v) + EPS), {"m": m, "v": v}


_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name (case-insensitive), constructed with ``kwargs``.

    >>> get_optimizer("Adam", lr=0.3)
    Adam(lr=0.3, beta1=0.9, beta2=0.999)
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"name: expected an optimizer name, found {name!r}")
    cls = _OPTIMIZERS.get(name.strip().lower())
    if cls is None:
        raise ArgumentError(
            f"name: unknown optimizer {name!r}; valid names are: {', '.join(_OPTIMIZERS)}"
        )
    return cls(**kwargs)
