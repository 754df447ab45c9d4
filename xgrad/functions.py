"""Activation and loss functions of the book (chapters 3-5), on any array API backend.

Every public function takes arrays of any registered backend (or NumPy / Python data, which
lands on the default backend) and returns arrays of the same backend and device. Integer
input is promoted to float64, as in :func:`xgrad._arrays.as_float_array`.

The private helpers (``_softmax``, ``_softmax_cross_entropy``, ...) take the namespace
first and skip all checks: the layers and nets call them on arrays they already validated.
"""

from __future__ import annotations

import math
from typing import Any

from xgrad import _compat
from xgrad._arrays import as_float_array
from xgrad.backends import Backend, resolve_backend
from xgrad.backends._registry import backend_of
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "cross_entropy_error",
    "identity",
    "mean_squared_error",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "step_function",
]


# -- input handling ---------------------------------------------------------------------
def _float_operand(x: Any, name: str) -> tuple[Any, Backend]:
    """A book function's argument: a float array as it is, anything else made one."""
    owner = backend_of(x, strict=False)
    if owner is not None and owner.dtype_name(x.dtype) in ("float32", "float64"):
        return x, owner
    return as_float_array(x, name=name)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape)


# How far a target row's sum may be from 1: loose enough for probabilities rounded to
# float32 (or summed there), tight enough to catch rows that sum to 0.5, 2 or 0.
_ROW_SUM_TOL = 1e-3


def _index_dtype(b: Backend) -> Any:
    """The namespace's default integer dtype (int32 for JAX without x64, else int64).

    Asking for int64 where JAX cannot give it makes JAX warn on every call.
    """
    info = getattr(b.xp, "__array_namespace_info__", None)
    if info is None:
        return b.xp.int64
    return info().default_dtypes(device=b.device)["integral"]


def _targets(
    b: Backend,
    t: Any,
    y_shape: tuple[int, ...],
    dtype: Any,
    name: str = "t",
    batch_name: str = "x",
) -> tuple[Any, bool]:
    """``t`` on backend ``b``, and whether it holds class labels (else one-hot rows).

    Labels have shape ``y_shape[:-1]`` and an integer dtype, values in ``[0, C)``; one-hot
    (or probability) targets have shape ``y_shape`` and become floating ``dtype``, with
    entries >= 0 and rows summing to 1. Anything else is refused with a message naming
    both shapes, as is an empty batch (``batch_name`` is the argument that holds it).
    Each check costs one reduction and one device-to-host transfer per call.
    """
    xp = b.xp
    if math.prod(y_shape[:-1]) == 0:
        raise ArgumentError(
            f"{batch_name}: expected at least one sample, found an empty batch (scores of"
            f" shape {y_shape}); a mean over no samples is undefined"
        )
    if not b.owns(t):
        try:
            t = b.asarray(t)
        except (TypeError, ValueError) as exc:
            raise ArgumentTypeError(
                f"{name}: expected class labels or one-hot rows as an array, found"
                f" {type(t).__name__} that is not one ({exc})"
            ) from None
    t_shape = _shape(t)
    if t_shape == y_shape:
        if not xp.isdtype(t.dtype, ("real floating", "integral", "bool")):
            raise ArgumentTypeError(
                f"{name}: expected a real array, found dtype {b.dtype_name(t.dtype)}"
            )
        t = xp.astype(t, dtype)
        # One transfer for both checks; NaN fails both comparisons and is refused too.
        lo, off = (
            float(v)
            for v in b.to_numpy(xp.stack([xp.min(t), xp.max(xp.abs(xp.sum(t, axis=-1) - 1.0))]))
        )
        if not (lo >= 0 and off <= _ROW_SUM_TOL):
            raise ArgumentError(
                f"{name}: expected one-hot (or probability) rows of shape {y_shape} with entries"
                f" >= 0 and each row summing to 1; found smallest entry {lo:g} and a row sum"
                f" off from 1 by {off:g} (pass integer class labels of shape {y_shape[:-1]}"
                f" for hard targets)"
            )
        return t, False
    if t_shape == y_shape[:-1]:
        if not xp.isdtype(t.dtype, "integral"):
            raise ArgumentError(
                f"{name}: shape {t_shape} means class labels for y of shape {y_shape}, which must"
                f" be integers; found dtype {b.dtype_name(t.dtype)} (one-hot targets must have"
                f" the shape of y)"
            )
        n_classes = y_shape[-1]
        if t.size:
            # One device-to-host transfer (two int() calls would synchronize twice).
            lo, hi = (int(v) for v in b.to_numpy(xp.stack([xp.min(t), xp.max(t)])))
            if lo < 0 or hi >= n_classes:
                raise ArgumentError(
                    f"{name}: class labels must lie in [0, {n_classes}) for y of shape"
                    f" {y_shape}; found values in [{lo}, {hi}]"
                )
        index = _index_dtype(b)
        return (t if t.dtype == index else xp.astype(t, index)), True
    raise ArgumentError(
        f"{name}: expected class labels of shape {y_shape[:-1]} or one-hot targets of shape"
        f" {y_shape} (y has shape {y_shape}); found shape {t_shape}"
    )


def _one_hot(xp: Any, labels: Any, n_classes: int, dtype: Any) -> Any:
    """0/1 rows from integer labels, built by comparison (no fancy-index assignment)."""
    classes = xp.arange(n_classes, dtype=labels.dtype, device=_compat.device(labels))
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype)


# -- kernels (namespace first, no checks) -------------------------------------------------
def _sigmoid(xp: Any, x: Any) -> Any:
    # exp(-|x|) never overflows: the book's 1 / (1 + exp(-x)) warns for x < -709.
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    return xp.where(x >= 0, r, e * r)


def _softmax(xp: Any, x: Any, axis: int = -1) -> Any:
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _softmax_cross_entropy(xp: Any, a: Any, target: Any) -> tuple[Any, Any]:
    """Per-row cross entropy of ``softmax(a)`` against ``target`` rows, and the softmax.

    ``target`` is a 0/1 or probability array of ``a``'s shape. The log-softmax is formed as
    ``(a - max) - log(sum(exp(a - max)))``: exact, with no ``+1e-7`` and no overflow.
    """
    shifted = a - xp.max(a, axis=-1, keepdims=True)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=-1, keepdims=True)
    per_row = -xp.sum(target * (shifted - xp.log(s)), axis=-1)
    return per_row, e / s


# -- public functions -----------------------------------------------------------------
def identity(x: Any) -> Any:
    """The identity output function (the book's ``identity_function``).

    >>> identity(3.0)
    3.0
    """
    return x


def step_function(x: Any) -> Any:
    """1 where ``x > 0``, else 0, in the floating dtype of ``x``.

    >>> step_function([-1.0, 0.0, 2.0]).tolist()
    [0.0, 0.0, 1.0]
    """
    x, b = _float_operand(x, "x")
    return b.xp.astype(x > 0, x.dtype)


def sigmoid(x: Any) -> Any:
    """The logistic function ``1 / (1 + exp(-x))``, evaluated without overflow.

    For ``x < 0`` it is computed as ``exp(x) / (1 + exp(x))``, so ``sigmoid(-1000.0)`` is 0
    with no overflow warning (the book's formula warns there).

    >>> sigmoid([0.0, 2.0]).round(6).tolist()
    [0.5, 0.880797]
    """
    x, b = _float_operand(x, "x")
    return _sigmoid(b.xp, x)


def sigmoid_grad(x: Any) -> Any:
    """Derivative of :func:`sigmoid`: ``(1 - sigmoid(x)) * sigmoid(x)``.

    >>> float(sigmoid_grad(0.0))
    0.25
    """
    x, b = _float_operand(x, "x")
    s = _sigmoid(b.xp, x)
    return (1.0 - s) * s


def relu(x: Any) -> Any:
    """``max(x, 0)``.

    >>> relu([-1.0, 0.5]).tolist()
    [0.0, 0.5]
    """
    x, b = _float_operand(x, "x")
    return b.xp.maximum(x, 0.0)


def relu_grad(x: Any) -> Any:
    """Derivative of :func:`relu`: 1 where ``x >= 0``, else 0 (the book's convention at 0).

    The book's ``relu_grad`` takes 1 at ``x == 0`` while its ``Relu`` layer passes 0 there;
    both are valid subgradients, and both are kept as the book has them.

    >>> relu_grad([-1.0, 0.0, 2.0]).tolist()
    [0.0, 1.0, 1.0]
    """
    x, b = _float_operand(x, "x")
    return b.xp.astype(x >= 0, x.dtype)


def softmax(x: Any, axis: int = -1) -> Any:
    """Softmax along ``axis`` (default: the last), stable for large inputs.

    A vector gives one distribution; a batch ``(N, C)`` gives one per row.

    >>> softmax([1010.0, 1000.0, 990.0]).round(8).tolist()
    [0.9999546, 4.54e-05, 0.0]
    """
    x, b = _float_operand(x, "x")
    if x.ndim == 0:
        raise ArgumentError("x: expected an array with at least one dimension, found a scalar")
    return _softmax(b.xp, x, axis=axis)


def cross_entropy_error(y: Any, t: Any, eps: float = 1e-7) -> Any:
    """The book's cross-entropy error ``-sum(t * log(y + eps)) / batch_size``.

    Parameters
    ----------
    y : array, shape (C,) or (N, C)
        Predicted probabilities (a softmax output), one sample or a batch.
    t : array
        One-hot (or probability) targets of ``y``'s shape, or integer class labels of shape
        ``y.shape[:-1]`` (a Python int for one sample).
    eps : float
        Added inside the log so that ``log(0)`` cannot happen; the book's ``1e-7``.

    Returns
    -------
    array
        0-d array of ``y``'s backend: the mean over the batch.

    Notes
    -----
    For exact one-hot targets this equals the book's code, which first turns one-hot rows
    into labels with ``argmax``; for probability targets it is the true cross entropy,
    where the book's ``argmax`` would ignore all but the largest entry. The ``eps`` biases
    the result by about ``eps / y[label]``; :class:`xgrad.layers.SoftmaxWithLoss` and
    :class:`xgrad.nn.TwoLayerNet` use an exact log-softmax instead.

    Examples
    --------
    The book's example (section 4.2.2): 0.510825457099338 for the right answer.

    >>> y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
    >>> round(float(cross_entropy_error(y, 2)), 6)
    0.510825
    >>> t = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    >>> round(float(cross_entropy_error(y, t)), 6)
    0.510825
    """
    y, b = _float_operand(y, "y")
    b = resolve_backend(b, y, t)
    xp = b.xp
    if y.ndim not in (1, 2):
        raise ArgumentError(f"y: expected shape (C,) or (N, C), found {_shape(y)}")
    target, is_labels = _targets(b, t, _shape(y), y.dtype, batch_name="y")
    if is_labels:
        target = _one_hot(xp, target, int(y.shape[-1]), y.dtype)
    batch = 1 if y.ndim == 1 else int(y.shape[0])
    return -xp.sum(target * xp.log(y + eps)) / batch


def mean_squared_error(y: Any, t: Any) -> Any:
    """The book's sum of squares ``0.5 * sum((y - t) ** 2)`` (not divided by the batch).

    >>> y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
    >>> t = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    >>> round(float(mean_squared_error(y, t)), 6)
    0.0975
    """
    y, b = _float_operand(y, "y")
    b = resolve_backend(b, y, t)
    t, _ = as_float_array(t, backend=b, dtype=b.dtype_name(y.dtype), name="t")
    if _shape(t) != _shape(y):
        raise ArgumentError(f"t: expected the shape of y {_shape(y)}, found {_shape(t)}")
    d = y - t
    return 0.5 * b.xp.sum(d * d)
