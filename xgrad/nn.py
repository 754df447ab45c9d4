"""The book's nets: ``SimpleNet`` (chapter 4.4) and ``TwoLayerNet`` (chapters 4.5 and 5.7).

Both run on any backend; weights are drawn on the host from a seed, so one seed gives the
same net on NumPy, torch, JAX, CuPy and array-api-strict.

``TwoLayerNet`` differs from the book in two documented ways:

* its loss is the exact cross entropy of the softmax, computed through a stable
  log-softmax, without the book's ``+1e-7`` inside the log. The book's backprop gradient
  ``(y - t) / N`` ignores that ``1e-7``, which is why the book's gradient check shows a
  uniform ~5e-7 relative gap; here numerical and backprop gradients agree to ~1e-10.
  :func:`xgrad.functions.cross_entropy_error` itself keeps the book's ``1e-7``.
* ``numerical_gradient`` does not run a forward pass per parameter element: it sums the
  central differences of all ``W1``/``b1`` elements in closed form (:mod:`xgrad._netgrad`),
  and :meth:`TwoLayerNet.loss_differences` recomputes only what each perturbation changes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xgrad import _compat, _policy
from xgrad._arrays import as_float_array
from xgrad._netgrad import structured_gradient as _structured_gradient
from xgrad.backends import Backend, get_backend
from xgrad.backends._base import DtypeLike
from xgrad.backends._registry import matmul
from xgrad.errors import ArgumentError, ArgumentTypeError
from xgrad.functions import _one_hot, _shape, _sigmoid, _softmax_cross_entropy, _targets
from xgrad.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from xgrad.random import HostRandom

__all__ = ["SimpleNet", "TwoLayerNet", "default_step"]

ACTIVATIONS = ("sigmoid", "relu")
_PARAM_KEYS = ("W1", "b1", "W2", "b2")

# Elements of the largest temporary array in one vectorized evaluation of
# `loss_differences` (about 8 MB in float64): large enough to amortize the per-call cost on a
# CPU, small enough to stay near the caches. A GPU wants few, large calls: on an H100 the
# 784-50-10 gradient took 56 ms with the CPU chunk and 12.7 ms with all W1 pairs at once.
_CHUNK_ELEMENTS = 2**20
_ACCELERATOR_CHUNK_ELEMENTS = 2**27


def default_step(dtype: str) -> float:
    """Default finite-difference step ``h`` of :meth:`TwoLayerNet.numerical_gradient`.

    float64: the book's ``1e-4``. float32: ``1e-3``. The loss differences are computed in a
    form without the cancellation of ``loss(p + h) - loss(p - h)`` (see
    :meth:`TwoLayerNet.loss_differences`), so rounding stays near float32's own level and
    the truncation error ``~h**2 * f''' / 6`` dominates: with ``1e-3`` the float32 result is
    within ~1e-6 (relative to the largest entry) of the float64 backprop gradient for the
    book's 784-50-10 sigmoid net, as close as float32 backprop itself. A loop of full
    forward passes in float32 would need ``h ~ 1e-2`` and still be off by ~1e-3.

    >>> default_step("float64"), default_step("float32")
    (0.0001, 0.001)
    """
    step = _policy.NET_STEP.get(dtype)
    if step is None:
        raise ArgumentError(f"dtype: expected 'float32' or 'float64', found {dtype!r}")
    return step


class SimpleNet:
    """The book's ``simpleNet`` (section 4.4.1): one weight matrix, softmax, cross entropy.

    The loss is the exact cross entropy (no ``+1e-7``): that is what reproduces the book's
    printed loss and gradient table (see :meth:`loss`).

    Parameters
    ----------
    W : array of shape (2, 3), optional
        The weights; drawn from a standard normal on the host (from ``seed``) when omitted.
    seed : int, optional
        Seed for the host random generator.
    backend, dtype :
        Where and in which floating dtype ``W`` lives (default: ``W``'s backend or the
        default backend, float64).

    Examples
    --------
    The book's printed example:

    >>> net = SimpleNet([[0.47355232, 0.9977393, 0.84668094],
    ...                  [0.85557411, 0.03563661, 0.69422093]])
    >>> net.predict([0.6, 0.9]).round(8).tolist()
    [1.05414809, 0.63071653, 1.1328074]
    >>> round(float(net.loss([0.6, 0.9], [0, 0, 1])), 8)
    0.92806854
    """

    def __init__(
        self,
        W: Any = None,
        *,
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: DtypeLike = None,
    ) -> None:
        if W is None:
            b = get_backend(backend)
            host = HostRandom(seed, backend=b).rng.standard_normal((2, 3))
            W = b.asarray(host, dtype=b.float_dtype(dtype))
        else:
            W, b = as_float_array(W, backend=backend, dtype=dtype, name="W")
            if _shape(W) != (2, 3):
                raise ArgumentError(f"W: expected shape (2, 3), found {_shape(W)}")
        self.backend = b
        self.W = W

    def predict(self, x: Any) -> Any:
        """Scores ``x @ W`` for one input of shape (2,) or a batch (N, 2)."""
        x, _ = as_float_array(x, backend=self.backend, dtype=self.W.dtype, name="x")
        if x.ndim not in (1, 2) or x.shape[-1] != 2:
            raise ArgumentError(f"x: expected shape (2,) or (N, 2), found {_shape(x)}")
        return matmul(x, self.W)

    def loss(self, x: Any, t: Any) -> Any:
        """Cross entropy of ``softmax(x @ W)`` against ``t`` (labels or one-hot), exact.

        The book's printed results for this net (loss 0.92806853663411326 and the dW table)
        are those of the exact cross entropy: with the ``+1e-7`` of
        :func:`~xgrad.functions.cross_entropy_error` the loss is 0.9280682857864075 and dW
        differs from the 7th digit on (0.21924757 for the printed 0.21924763). The loss is
        therefore computed through a stable log-softmax, as in :class:`TwoLayerNet`.
        """
        z = self.predict(x)
        batch = z.ndim == 2
        z2 = z if batch else self.backend.xp.reshape(z, (1, 3))
        target, is_labels = _targets(self.backend, t, tuple(z.shape), z.dtype)
        if is_labels:
            target = _one_hot(self.backend.xp, target, 3, z.dtype)
        if not batch:
            target = self.backend.xp.reshape(target, (1, 3))
        per_row, _ = _softmax_cross_entropy(self.backend.xp, z2, target)
        return self.backend.xp.sum(per_row) / int(z2.shape[0])


class TwoLayerNet:
    """The book's two-layer net: Affine - activation - Affine - softmax with cross entropy.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Layer widths (MNIST: 784, 50, 10).
    weight_init_std : float
        Weights are ``weight_init_std * randn`` (drawn on the host in float64 from ``seed``,
        then cast), biases are zeros: the book's initialization.
    activation : {"sigmoid", "relu"}
        Hidden activation: the book's chapter 4 net uses sigmoid, chapter 5 ReLU.
    backend : str or Backend, optional
        Where the parameters live (default: the default backend).
    dtype : {"float64", "float32"}, optional
        Parameter dtype (default float64). Inputs are converted to it once per call.
    seed : int, optional
        Seed of the host random generator.

    Attributes
    ----------
    params : dict
        ``W1`` (input, hidden), ``b1`` (hidden,), ``W2`` (hidden, output), ``b2`` (output,).
        Optimizers may update the arrays in place or replace the dict's entries (needed for
        immutable JAX arrays); the net reads them from the dict at every call.

    Notes
    -----
    Inputs ``x`` are arrays of shape ``(N, input_size)`` (or ``(N, ...)`` flattening to it, or
    one sample ``(input_size,)``) from any backend; targets ``t`` are integer labels ``(N,)``
    or one-hot rows ``(N, output_size)``. Both are moved to the net's backend and dtype once
    per call (a float32 image batch is upcast once, not in every matrix product).

    The loss is the exact mean cross entropy through a stable log-softmax: the book adds
    ``1e-7`` inside the log, which its backprop ignores. See the module docstring.

    Examples
    --------
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> x = [[1.0, 0.5, -0.5, 2.0]]
    >>> abs(float(net.loss(x, [2])) - math.log(3)) < 0.01  # tiny weights: near-uniform
    True
    >>> sorted(net.gradient(x, [2]))
    ['W1', 'W2', 'b1', 'b2']
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float = 0.01,
        *,
        activation: str = "sigmoid",
        backend: str | Backend | None = None,
        dtype: DtypeLike = None,
        seed: int | None = None,
    ) -> None:
        sizes = {"input_size": input_size, "hidden_size": hidden_size, "output_size": output_size}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ArgumentError(f"{name}: expected a positive int, found {value!r}")
        if not (
            isinstance(weight_init_std, int | float)
            and math.isfinite(weight_init_std)
            and weight_init_std >= 0
        ):
            raise ArgumentError(
                f"weight_init_std: expected a finite number >= 0, found {weight_init_std!r}"
            )
        if activation not in ACTIVATIONS:
            raise ArgumentError(f"activation: expected one of {ACTIVATIONS}, found {activation!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.output_size = int(output_size)
        self.weight_init_std = float(weight_init_std)
        self.activation = activation
        self.backend = get_backend(backend)
        self.dtype = self.backend.float_dtype(dtype)
        rng = HostRandom(seed, backend=self.backend).rng
        host = {
            "W1": weight_init_std * rng.standard_normal((self.input_size, self.hidden_size)),
            "b1": np.zeros(self.hidden_size),
            "W2": weight_init_std * rng.standard_normal((self.hidden_size, self.output_size)),
            "b2": np.zeros(self.output_size),
        }
        self.params: dict[str, Any] = {
            k: self.backend.asarray(v, dtype=self.dtype) for k, v in host.items()
        }
        self._build_layers()

    # -- structure ------------------------------------------------------------------------
    def _build_layers(self) -> None:
        p = self.params
        act = Sigmoid() if self.activation == "sigmoid" else Relu()
        self.layers: dict[str, Any] = {
            "Affine1": Affine(p["W1"], p["b1"], input_grad=False),
            "Activation1": act,
            "Affine2": Affine(p["W2"], p["b2"]),
        }
        self.last_layer = SoftmaxWithLoss()

    def _sync_layers(self) -> None:
        # Optimizers on immutable backends replace the dict's arrays: read them every call.
        p, layers = self.params, self.layers
        layers["Affine1"].W, layers["Affine1"].b = p["W1"], p["b1"]
        layers["Affine2"].W, layers["Affine2"].b = p["W2"], p["b2"]

    @property
    def dtype_name(self) -> str:
        return self.backend.dtype_name(self.dtype)

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet({self.input_size}, {self.hidden_size}, {self.output_size},"
            f" activation={self.activation!r}, backend={self.backend.spec!r},"
            f" dtype={self.dtype_name!r})"
        )

    # -- inputs ---------------------------------------------------------------------------
    def _inputs(self, x: Any) -> tuple[Any, bool]:
        """``x`` as ``(N, input_size)`` on the net's backend and dtype; and whether 1-d."""
        self._check_params()
        b = self.backend
        if not (b.owns(x) and x.dtype == self.dtype and _compat.device(x) == b.device):
            if b.owns(x) and not b.xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
                raise ArgumentTypeError(
                    f"x: expected a real array, found dtype {b.dtype_name(x.dtype)}"
                )
            try:
                x = b.asarray(x, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise ArgumentTypeError(
                    f"x: cannot convert to a {self.dtype_name} array: {exc}"
                ) from None
        shape = _shape(x)
        if len(shape) == 1 and shape[0] == self.input_size:
            return b.xp.reshape(x, (1, self.input_size)), True
        if len(shape) >= 2 and math.prod(shape[1:]) == self.input_size:
            if len(shape) > 2:
                x = b.xp.reshape(x, (shape[0], self.input_size))
            return x, False
        raise ArgumentError(
            f"x: expected shape (N, {self.input_size}) for input_size={self.input_size},"
            f" found {shape}"
        )

    def _check_params(self) -> None:
        """Refuse ``params`` entries the net cannot use (a list, another shape or dtype).

        Users and optimizers may replace the arrays; a wrong one would otherwise fail deep
        inside a layer (``'list' object has no attribute 'shape'``). No device work.
        """
        b, p = self.backend, self.params
        shapes = {
            "W1": (self.input_size, self.hidden_size),
            "b1": (self.hidden_size,),
            "W2": (self.hidden_size, self.output_size),
            "b2": (self.output_size,),
        }
        for key, shape in shapes.items():
            v: Any = p.get(key)
            if not b.owns(v):
                raise ArgumentTypeError(
                    f"params[{key!r}]: expected an array of backend {b.spec} of shape {shape},"
                    f" found {type(v).__name__}"
                )
            if _shape(v) != shape or v.dtype != self.dtype:
                raise ArgumentError(
                    f"params[{key!r}]: expected shape {shape} and dtype {self.dtype_name},"
                    f" found shape {_shape(v)} and dtype {b.dtype_name(v.dtype)}"
                )

    def _targets(self, t: Any, n: int) -> tuple[Any, Any | None]:
        """Target rows ``(N, output_size)`` of the net's dtype; and the labels if given as such."""
        xp = self.backend.xp
        target, is_labels = _targets(self.backend, t, (n, self.output_size), self.dtype)
        if is_labels:
            return _one_hot(xp, target, self.output_size, self.dtype), target
        return target, None

    # -- forward --------------------------------------------------------------------------
    def _predict(self, x: Any) -> Any:
        self._sync_layers()
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def predict(self, x: Any) -> Any:
        """Scores (logits) of shape ``(N, output_size)``; ``(output_size,)`` for one sample."""
        x, single = self._inputs(x)
        y = self._predict(x)
        return y[0, ...] if single else y

    def loss(self, x: Any, t: Any) -> Any:
        """Mean cross entropy of ``softmax(predict(x))`` against ``t``, as a 0-d array.

        Exact (stable log-softmax, no ``1e-7``): see the class notes.
        """
        x, _ = self._inputs(x)
        target, _ = self._targets(t, int(x.shape[0]))
        return self._loss_rows(x, target)

    def _loss_rows(self, x: Any, target: Any) -> Any:
        # Checked rows only (`_inputs`, `_targets`): no validation, so no device-to-host
        # transfer; train() checks its data once and calls this every iteration.
        per_row, _ = _softmax_cross_entropy(self.backend.xp, self._predict(x), target)
        return self.backend.xp.sum(per_row) / int(x.shape[0])

    def accuracy(self, x: Any, t: Any) -> float:
        """Fraction of samples whose largest score is at the label (or one-hot's argmax)."""
        xp = self.backend.xp
        x, _ = self._inputs(x)
        target, labels = self._targets(t, int(x.shape[0]))
        if labels is None:
            labels = xp.argmax(target, axis=1)
        hits = xp.argmax(self._predict(x), axis=1) == labels
        return float(xp.sum(xp.astype(hits, self.dtype))) / int(x.shape[0])

    # -- backprop -------------------------------------------------------------------------
    def loss_and_gradient(self, x: Any, t: Any) -> tuple[Any, dict[str, Any]]:
        """The loss (0-d array) and its backprop gradient from one forward pass.

        A training loop that records the loss needs no second forward pass (the book's
        ``train_neuralnet.py`` calls ``loss`` again after each ``gradient``). The loss is the
        one at the parameters before the update.
        """
        x, _ = self._inputs(x)
        target, _ = self._targets(t, int(x.shape[0]))
        return self._loss_and_gradient_rows(x, target)

    def _loss_and_gradient_rows(self, x: Any, target: Any) -> tuple[Any, dict[str, Any]]:
        # Checked rows only, like `_loss_rows`; the params may have been replaced since.
        self._check_params()
        scores = self._predict(x)
        loss = self.last_layer._forward_rows(scores, target)
        dout = self.last_layer.backward()
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return loss, {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Backprop gradient of :meth:`loss` (book ch. 5): dict with ``W1, b1, W2, b2``."""
        return self.loss_and_gradient(x, t)[1]

    # -- numerical gradient ---------------------------------------------------------------
    def numerical_gradient(
        self,
        x: Any,
        t: Any,
        h: float | None = None,
        *,
        chunk_size: int | None = None,
        workers: Any = None,
    ) -> dict[str, Any]:
        """Central-difference gradient of :meth:`loss` for every parameter element.

        The same numbers as the book's per-element loop (``p -> p +- h``, two full forward
        passes per element) up to the loop's own rounding, but summed in closed form: the
        loss change of every ``W1``/``b1`` perturbation is a Taylor series in the moved
        pre-activation, so the whole central difference takes a few matrix products
        (:mod:`xgrad._netgrad`). On the book's 784-50-10 net with a batch of 100 this is
        thousands of times faster than the loop (see ``benchmarks/bench_nets.py``). Where
        the step and inputs are too large for the series to converge fast (e.g. 0-255 pixels
        with ``h`` of 0.01 or more), the exact engine of :meth:`loss_differences` is used.

        Parameters
        ----------
        h : float, optional
            Step; default :func:`default_step` of the dtype (the book's 1e-4 in float64).
        chunk_size : int, optional
            Perturbations per pass, as in :meth:`loss_differences`: parameter elements moved
            together by the exact evaluations (the engine of :meth:`loss_differences` when
            it is used; the ReLU units next to their kink get the same memory budget).
        workers : int, executor, map-like, distributed.Client or list of devices, optional
            Run the book's loop instead, two full forward passes per element, with the
            perturbations in chunks on these workers (see :mod:`xgrad.workers`): bit for
            bit ``xgrad.numerical_gradient(lambda W: net.loss(x, t), net.params[k], h)``.
            The closed form on one core is far faster for this net; workers are for the
            chapter 4 experiment as the book runs it, at scale.

        Returns
        -------
        dict
            ``(loss(p+) - loss(p-)) / (p+ - p-)`` per element, where ``p+ = p + h`` and
            ``p- = p - h`` are rounded to the parameter dtype, exactly as the loop sets them.
        """
        xs, target, step, chunk = self._difference_setup(x, t, h, chunk_size)
        if workers is not None:
            from xgrad.numdiff import numerical_gradient

            return {
                key: numerical_gradient(
                    _ParamLoss(self, key, xs, target), self.params[key], h=step, workers=workers
                )
                for key in _PARAM_KEYS
            }
        out = _structured_gradient(
            self.backend,
            xs,
            target,
            self.params,
            self.activation,
            step,
            chunk * 2 * int(xs.shape[0]) * self.output_size,
        )
        if out is not None:
            return out
        out = {}
        for key, (up, down, step_up, step_down) in self.loss_differences(
            xs, target, step, chunk_size=chunk
        ).items():
            out[key] = (up - down) / (step_up - step_down)
        return out

    def _difference_setup(
        self, x: Any, t: Any, h: float | None, chunk_size: int | None
    ) -> tuple[Any, Any, float, int]:
        """Validated ``x``, target rows, step and chunk of :meth:`numerical_gradient`."""
        x, _ = self._inputs(x)
        target, _ = self._targets(t, int(x.shape[0]))
        if h is None:
            h = default_step(self.dtype_name)
        if not (isinstance(h, int | float) and math.isfinite(h) and h > 0):
            raise ArgumentError(f"h: expected a finite number > 0, found {h!r}")
        if chunk_size is None:
            budget = _ACCELERATOR_CHUNK_ELEMENTS if self.backend.accelerator else _CHUNK_ELEMENTS
            chunk_size = max(1, budget // (2 * int(x.shape[0]) * self.output_size))
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ArgumentError(f"chunk_size: expected a positive int, found {chunk_size!r}")
        return x, target, float(h), chunk_size

    def loss_differences(
        self, x: Any, t: Any, h: float | None = None, *, chunk_size: int | None = None
    ) -> dict[str, tuple[Any, Any, Any, Any]]:
        """One-sided loss changes for each parameter element moved by ``+h`` and ``-h``.

        Returns, per parameter, ``(up, down, step_up, step_down)`` with
        ``up = loss(p+) - loss(p)``, ``down = loss(p-) - loss(p)``, ``step_up = p+ - p`` and
        ``step_down = p- - p`` (the effective steps after rounding ``p +- h``).
        :meth:`numerical_gradient` is ``(up - down) / (step_up - step_down)``;
        :func:`xgrad.gradcheck` also uses the one-sided slopes to recognize ReLU kinks.

        Notes
        -----
        A perturbation of ``W1[i, j]`` (or ``b1[j]``) by ``d`` changes only hidden unit ``j``:
        ``a1[:, j] += d * x[:, i]``, so ``z1[:, j]`` changes by ``dz`` and the logits by the
        rank-one ``dz * W2[j, :]``. A perturbation of ``W2[j, c]`` or ``b2[c]`` changes only
        logit ``c``. For a logit change ``da`` the per-sample loss
        ``l = sum_c t_c (lse - a_c)`` (``lse = logsumexp(a)``, the loss of :meth:`loss`)
        changes by exactly ``sum(t) * log1p(sum_c y_c * expm1(da_c)) - sum_c t_c da_c`` with
        ``y = softmax(a)``. Evaluating this form costs one pass over ``(N, C)`` per
        perturbation instead of a forward pass, and it avoids the cancellation in
        ``loss(p+) - loss(p-)``: it is the numerical gradient of the real loss, computed
        more accurately than the loop computes it.

        ``chunk_size`` is the number of perturbations per pass: parameter elements
        ``(i, j)`` moved together, each by ``+h`` and ``-h``, as arrays of shape
        ``(2, n_i, N, n_j, C)`` (default about a million array elements, tuned for CPUs;
        on a GPU pass tens of thousands).
        """
        xp = self.backend.xp
        x, _ = self._inputs(x)
        target, _ = self._targets(t, int(x.shape[0]))
        if h is None:
            h = default_step(self.dtype_name)
        if not (isinstance(h, int | float) and math.isfinite(h) and h > 0):
            raise ValueError(f"h: expected a finite number > 0, found {h!r}")
        n, n_classes = int(x.shape[0]), self.output_size
        if chunk_size is None:
            budget = _ACCELERATOR_CHUNK_ELEMENTS if self.backend.accelerator else _CHUNK_ELEMENTS
            chunk_size = max(1, budget // (2 * n * n_classes))
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, found {chunk_size!r}")
        return _loss_differences(xp, x, target, self.params, self.activation, float(h), chunk_size)

    # -- state ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (without the seed) that rebuild this net's structure."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
            "weight_init_std": self.weight_init_std,
            "activation": self.activation,
            "dtype": self.dtype_name,
        }

    def state_dict(self) -> dict[str, Any]:
        """Host copy: ``{"config": {...}, "params": {key: numpy array}}``."""
        return {
            "config": self.config(),
            "params": {k: self.backend.to_numpy(v).copy() for k, v in self.params.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load parameters (host or any backend arrays) of this net's shapes, in its dtype."""
        params = state.get("params") if isinstance(state, dict) else None
        if not isinstance(params, dict) or set(params) != set(_PARAM_KEYS):
            found = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ArgumentError(
                f"state: expected {{'params': {{W1, b1, W2, b2}}}}, found params {found}"
            )
        new = {}
        for key in _PARAM_KEYS:
            value, _ = as_float_array(
                params[key], backend=self.backend, dtype=self.dtype, name=f"params[{key!r}]"
            )
            # A copy: in-place optimizer steps must not write into the caller's arrays.
            value = self.backend.xp.asarray(value, copy=True)
            expected = _shape(self.params[key])
            if _shape(value) != expected:
                raise ArgumentError(
                    f"params[{key!r}]: expected shape {expected}, found {_shape(value)}"
                )
            new[key] = value
        self.params.update(new)

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], *, backend: str | Backend | None = None
    ) -> TwoLayerNet:
        """A net rebuilt from :meth:`state_dict` output, on ``backend``."""
        config = dict(state["config"])
        sizes = (config.pop("input_size"), config.pop("hidden_size"), config.pop("output_size"))
        net = cls(
            *sizes,
            config.pop("weight_init_std", 0.01),
            activation=config.pop("activation", "sigmoid"),
            dtype=config.pop("dtype", None),
            backend=backend,
            seed=0,
        )
        net.load_state_dict(state)
        return net

    def to(self, backend: str | Backend | None = None, dtype: DtypeLike = None) -> TwoLayerNet:
        """A copy of this net on ``backend`` (default: the same) in ``dtype`` (default: same)."""
        state = self.state_dict()
        if dtype is not None:
            state["config"]["dtype"] = get_backend(backend or self.backend).dtype_name(dtype)
        return TwoLayerNet.from_state_dict(state, backend=backend or self.backend)

    def astype(self, dtype: DtypeLike) -> TwoLayerNet:
        """A copy of this net with parameters in ``dtype`` (used by :func:`xgrad.gradcheck`)."""
        return self.to(self.backend, dtype)


# -- the perturbation engine ---------------------------------------------------------------
def _activation(xp: Any, a: Any, activation: str) -> Any:
    # The same expressions as the Sigmoid and Relu layers.
    if activation == "sigmoid":
        return _sigmoid(xp, a)
    return xp.where(a <= 0, 0.0, a)


def _activation_change(xp: Any, a: Any, delta: Any, z: Any, activation: str) -> Any:
    """``act(a + delta) - act(a)`` (``z = act(a)``) without cancellation.

    Subtracting the two activations loses the digits of ``a`` that ``a + delta`` rounds
    away (a relative error ``~eps * |a| / |delta|``: 1e-4 in float32 for the default step).
    The identities below keep the full precision of ``delta``.
    """
    moved = a + delta
    if activation == "sigmoid":
        # s(a + d) - s(a) = s(a + d) * (1 - s(a)) * (1 - exp(-d))
        return _sigmoid(xp, moved) * (1.0 - z) * -xp.expm1(-delta)
    # relu: delta where the unit stays active, the exact jump where it crosses zero.
    return xp.where(a > 0, xp.where(moved > 0, delta, -a), xp.where(moved > 0, moved, 0.0))


class _ParamLoss:
    """The net's loss as a function of one parameter: what workers receive and call.

    Holds the other parameters, the batch and the net's structure (not the parameter
    itself, which f must take from its argument); the net is rebuilt once per process.
    """

    def __init__(self, net: TwoLayerNet, key: str, x: Any, target: Any) -> None:
        self.config = {k: v for k, v in net.config().items() if k != "dtype"}
        self.dtype, self.spec = net.dtype_name, net.backend.spec
        self.others = {k: v for k, v in net.params.items() if k != key}
        self.key, self.x, self.target = key, x, target
        # A private net (never the caller's, whose params must stay as they are).
        self.net: TwoLayerNet | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "net": None}

    def __call__(self, value: Any) -> Any:
        net = self.net
        if net is None:
            net = self.net = TwoLayerNet(**self.config, backend=self.spec, dtype=self.dtype)
        net.params = {**self.others, self.key: value}
        net._sync_layers()
        return net._loss_rows(self.x, self.target)


def _loss_differences(
    xp: Any, x: Any, target: Any, params: dict[str, Any], activation: str, h: float, chunk_size: int
) -> dict[str, tuple[Any, Any, Any, Any]]:
    W1, b1, W2, b2 = (params[k] for k in _PARAM_KEYS)
    n = int(x.shape[0])
    n_in, n_hidden = int(W1.shape[0]), int(W1.shape[1])
    dev = _compat.device(x)

    a1 = matmul(x, W1) + b1
    z1 = _activation(xp, a1, activation)
    a2 = matmul(z1, W2) + b2
    _, y = _softmax_cross_entropy(xp, a2, target)
    row_sum = xp.sum(target, axis=1)  # 1 for labels and one-hot rows
    y_t, target_t = y.T, target.T  # (C, N)

    def logit_change(da: Any) -> Any:
        """Mean loss change when logit c of every sample n moves by ``da[..., c, n]``."""
        per_sample = row_sum * xp.log1p(y_t * xp.expm1(da)) - target_t * da
        return xp.sum(per_sample, axis=-1) / n

    out: dict[str, tuple[Any, Any, Any, Any]] = {}

    # b2[c] and W2[j, c]: one logit moves, by d or by d * z1[:, j].
    up, down = _policy.representable_steps(b2, h)
    out["b2"] = (
        logit_change(xp.expand_dims(up, axis=1)),
        logit_change(xp.expand_dims(down, axis=1)),
        up,
        down,
    )
    up, down = _policy.representable_steps(W2, h)
    z1_t = xp.expand_dims(z1.T, axis=1)  # (H, 1, N)
    out["W2"] = (
        logit_change(xp.expand_dims(up, axis=2) * z1_t),
        logit_change(xp.expand_dims(down, axis=2) * z1_t),
        up,
        down,
    )

    # W1[i, j] and b1[j] (b1 as the weight of a constant input 1): hidden unit j moves.
    ones = xp.ones((n, 1), dtype=x.dtype, device=dev)
    x_aug_t = xp.concat([x, ones], axis=1).T  # (D + 1, N)
    w_aug = xp.concat([W1, xp.expand_dims(b1, axis=0)], axis=0)  # (D + 1, H)
    up, down = _policy.representable_steps(w_aug, h)
    steps = xp.stack([up, down])  # (2, D + 1, H)
    target_w2 = matmul(target, W2.T)  # (N, H): sum_c t_c W2[j, c]
    y_b = xp.expand_dims(y, axis=1)  # (N, 1, C)
    n_rows = n_in + 1
    if chunk_size >= n_rows:
        rows_per, cols_per = n_rows, min(n_hidden, chunk_size // n_rows)
    else:
        rows_per, cols_per = chunk_size, 1
    columns = []
    for j0 in range(0, n_hidden, cols_per):
        j1 = min(j0 + cols_per, n_hidden)
        a1_j, z1_j, w2_j, tw_j = a1[:, j0:j1], z1[:, j0:j1], W2[j0:j1, :], target_w2[:, j0:j1]
        blocks = []
        for i0 in range(0, n_rows, rows_per):
            i1 = min(i0 + rows_per, n_rows)
            d = steps[:, i0:i1, j0:j1]  # (2, ni, nj)
            shift = d[:, :, None, :] * x_aug_t[None, i0:i1, :, None]  # (2, ni, N, nj)
            dz = _activation_change(xp, a1_j, shift, z1_j, activation)
            spread = xp.expm1(dz[..., None] * w2_j)  # (2, ni, N, nj, C)
            mixed = xp.vecdot(spread, y_b, axis=-1)  # (2, ni, N, nj): sum_c y_c spread_c
            per_sample = row_sum[:, None] * xp.log1p(mixed) - dz * tw_j
            blocks.append(xp.sum(per_sample, axis=2) / n)  # (2, ni, nj)
        columns.append(xp.concat(blocks, axis=1) if len(blocks) > 1 else blocks[0])
    diffs = xp.concat(columns, axis=2) if len(columns) > 1 else columns[0]  # (2, D + 1, H)
    out["W1"] = (diffs[0, :n_in, :], diffs[1, :n_in, :], up[:n_in, :], down[:n_in, :])
    out["b1"] = (diffs[0, n_in, :], diffs[1, n_in, :], up[n_in, :], down[n_in, :])
    return {k: out[k] for k in _PARAM_KEYS}
