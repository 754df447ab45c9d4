"""The book's backprop layers (chapter 5): ``Affine``, ``Sigmoid``, ``Relu``, ``SoftmaxWithLoss``.

Each layer has ``forward`` and ``backward`` like the book's; the arrays flow through
unchanged in backend and device. Layers keep no state between calls except what
``backward`` needs from the last ``forward``.
"""

from __future__ import annotations

from typing import Any

from xgrad import _compat
from xgrad.backends import Backend
from xgrad.backends._registry import backend_of, matmul
from xgrad.errors import ArgumentError
from xgrad.functions import _one_hot, _sigmoid, _softmax_cross_entropy, _targets

__all__ = ["Affine", "Relu", "Sigmoid", "SoftmaxWithLoss"]


def _namespace(x: Any, name: str = "x") -> Any:
    return _compat.array_namespace(x, name=name)


class Relu:
    """``max(x, 0)``; ``backward`` passes the gradient where ``x > 0`` (0 at ``x == 0``).

    >>> import numpy as np
    >>> layer = Relu()
    >>> layer.forward(np.array([-1.0, 2.0])).tolist(), layer.backward(np.ones(2)).tolist()
    ([0.0, 2.0], [0.0, 1.0])
    """

    def __init__(self) -> None:
        self.mask: Any = None

    def forward(self, x: Any) -> Any:
        xp = _namespace(x)
        self.mask = x <= 0
        return xp.where(self.mask, 0.0, x)

    def backward(self, dout: Any) -> Any:
        if self.mask is None:
            raise RuntimeError("Relu.backward called before forward")
        return _namespace(dout, "dout").where(self.mask, 0.0, dout)


class Sigmoid:
    """The logistic function; ``backward`` is ``dout * (1 - y) * y``.

    >>> import numpy as np
    >>> layer = Sigmoid()
    >>> layer.forward(np.array([0.0])).tolist(), layer.backward(np.ones(1)).tolist()
    ([0.5], [0.25])
    """

    def __init__(self) -> None:
        self.out: Any = None

    def forward(self, x: Any) -> Any:
        self.out = _sigmoid(_namespace(x), x)
        return self.out

    def backward(self, dout: Any) -> Any:
        if self.out is None:
            raise RuntimeError("Sigmoid.backward called before forward")
        return dout * (1.0 - self.out) * self.out


class Affine:
    """``x @ W + b``, with inputs of more than two dimensions flattened per sample (book ch. 5).

    Parameters
    ----------
    W : array, shape (D, M)
    b : array, shape (M,)
    input_grad : bool
        Whether ``backward`` computes ``dx = dout @ W.T``. The first layer of a net does not
        need it; skipping it saves the largest matrix product of the backward pass.

    Attributes
    ----------
    dW, db : array
        Gradients from the last ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Affine(np.eye(2), np.array([1.0, 0.0]))
    >>> layer.forward(np.array([[1.0, 2.0]])).tolist()
    [[2.0, 2.0]]
    >>> layer.backward(np.array([[1.0, 1.0]])).tolist(), layer.dW.tolist()
    ([[1.0, 1.0]], [[1.0, 1.0], [2.0, 2.0]])
    """

    def __init__(self, W: Any, b: Any, *, input_grad: bool = True) -> None:
        if W.ndim != 2 or b.ndim != 1 or b.shape[0] != W.shape[1]:
            raise ArgumentError(
                f"W, b: expected shapes (D, M) and (M,),"
                f" found {tuple(W.shape)} and {tuple(b.shape)}"
            )
        self.W = W
        self.b = b
        self.input_grad = input_grad
        self.x: Any = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: Any = None
        self.db: Any = None

    def forward(self, x: Any) -> Any:
        xp = _namespace(x)
        self.original_x_shape = tuple(x.shape)
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0] if x.ndim else 1, -1))
        if x.shape[1] != self.W.shape[0]:
            raise ArgumentError(
                f"x: expected {self.W.shape[0]} features per sample for W of shape"
                f" {tuple(self.W.shape)}, found input of shape {self.original_x_shape}"
            )
        self.x = x
        return matmul(x, self.W) + self.b

    def backward(self, dout: Any) -> Any:
        if self.x is None:
            raise RuntimeError("Affine.backward called before forward")
        xp = _namespace(dout, "dout")
        self.dW = matmul(self.x.T, dout)
        self.db = xp.sum(dout, axis=0)
        if not self.input_grad:
            return None
        dx = matmul(dout, self.W.T)
        return xp.reshape(dx, self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss, averaged over the batch.

    Parameters
    ----------
    eps : float
        0 (default): the loss is the exact cross entropy, computed through a stable
        log-softmax, and ``backward`` returns its exact gradient ``(y - t) / N``.
        ``1e-7``: the book's value ``-sum(t * log(y + eps)) / N``; ``backward`` stays
        ``(y - t) / N`` as in the book, which is then off from the loss's true gradient by a
        relative ``~eps / y`` (the uniform ~5e-7 gap the book's gradient check shows).

    Notes
    -----
    ``t`` is integer class labels of shape ``(N,)`` or one-hot (probability) rows of shape
    ``(N, C)`` with entries >= 0 summing to 1 per row; other rows (negative entries, sums
    such as 2 or 0, NaN) and empty batches are refused, since their "loss" is no cross
    entropy (it can be negative). ``backward`` returns ``(y * sum(t) - t) / N``, the exact
    gradient of the loss computed even for rows whose sums are 1 only up to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> layer = SoftmaxWithLoss()
    >>> round(float(layer.forward(np.zeros((1, 4)), np.array([2]))), 6)  # log 4
    1.386294
    >>> layer.backward().tolist()
    [[0.25, 0.25, -0.75, 0.25]]
    """

    def __init__(self, eps: float = 0.0) -> None:
        if not eps >= 0.0:
            raise ArgumentError(f"eps: expected a number >= 0, found {eps!r}")
        self.eps = float(eps)
        self.loss: Any = None
        self.y: Any = None
        self.t: Any = None

    def forward(self, x: Any, t: Any) -> Any:
        _namespace(x)
        if x.ndim != 2:
            raise ArgumentError(f"x: expected scores of shape (N, C), found {tuple(x.shape)}")
        b = backend_of(x)
        assert isinstance(b, Backend)
        t, is_labels = _targets(b, t, tuple(x.shape), x.dtype)
        if is_labels:
            t = _one_hot(b.xp, t, int(x.shape[1]), x.dtype)
        return self._forward_rows(x, t)

    def _forward_rows(self, x: Any, target: Any) -> Any:
        """``forward`` for validated target rows of ``x``'s shape and dtype (nets use it)."""
        xp = _namespace(x)
        self.t = target
        per_row, self.y = _softmax_cross_entropy(xp, x, target)
        if self.eps:
            per_row = -xp.sum(target * xp.log(self.y + self.eps), axis=1)
        self.loss = xp.sum(per_row) / int(x.shape[0])
        return self.loss

    def backward(self, dout: Any = 1.0) -> Any:
        if self.y is None:
            raise RuntimeError("SoftmaxWithLoss.backward called before forward")
        xp = _namespace(self.y)
        batch = int(self.y.shape[0])
        row_sum = xp.sum(self.t, axis=1, keepdims=True)
        return (self.y * row_sum - self.t) * (dout / batch)
