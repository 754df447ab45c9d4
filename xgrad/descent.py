"""Gradient descent with numerical gradients: the book's ``gradient_descent``, on any backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from xgrad._arrays import as_float_array
from xgrad.backends import Backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import ArgumentError, ArgumentTypeError, DivergenceError, NonFiniteError
from xgrad.numdiff import numerical_gradient

__all__ = ["DivergenceError", "gradient_descent"]


def gradient_descent(
    f: Callable[[Any], Any],
    init_x: Any,
    lr: float = 0.01,
    step_num: int = 100,
    *,
    history: bool = False,
    h: float | None = None,
    method: str = "central",
    backend: str | Backend | None = None,
    dtype: DtypeLike = None,
) -> Any:
    """Minimize f by ``x <- x - lr * numerical_gradient(f, x)``, ``step_num`` times.

    Book semantics (``gradient_method`` of chapter 4), without its pitfalls: ``init_x`` is
    copied, never modified; integer input is promoted to float64; an iterate or gradient
    that becomes inf or nan raises `DivergenceError` with the step number instead of being
    returned. A finite but huge result is returned as it is: only inf/nan counts as
    divergence. (The book's lr=10 run multiplies x by -19 each step and ends near 1e128
    here; the book prints -2.6e13 only because its fixed h=1e-4 stops changing x once
    |x| is large, so its gradient becomes 0.)

    Parameters
    ----------
    f : callable
        Scalar-valued; receives the current iterate (an array shaped like init_x).
    init_x : array
        Starting point.
    lr : float
        Learning rate.
    step_num : int
        Number of steps.
    history : bool
        Also return the path: an array of shape ``(step_num, *init_x.shape)`` holding the
        iterate *before* each step, as the book's ``x_history`` (the start comes first;
        the returned x is not in it).
    h, method :
        Passed to :func:`xgrad.numerical_gradient`.
    backend : str or Backend, optional
        Backend for init_x given as a list or NumPy array.
    dtype : {"float32", "float64"}, optional
        Compute in this dtype.

    Returns
    -------
    array, or (array, array) with ``history=True``

    Raises
    ------
    DivergenceError
        The iterate, the gradient or f became inf or nan; ``.step`` says at which step.

    Examples
    --------
    >>> import numpy as np
    >>> x = gradient_descent(lambda x: x[0]**2 + x[1]**2, np.array([-3.0, 4.0]), lr=0.1)
    >>> bool(np.all(np.abs(x) < 1e-8))
    True
    """
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, found {type(f).__name__}")
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.floating):
        raise ArgumentTypeError(f"lr: expected a positive float, found {lr!r}")
    if not (math.isfinite(lr) and lr > 0):
        # lr < 0 ascends and lr = 0 never moves: both are mistakes, never what was meant.
        raise ArgumentError(f"lr: expected a positive finite float, found {lr!r}")
    if isinstance(step_num, bool) or not isinstance(step_num, int | np.integer) or step_num < 0:
        raise ArgumentError(f"step_num: expected a non-negative int, found {step_num!r}")
    x0, b = as_float_array(init_x, backend=backend, dtype=dtype, name="init_x")
    xp = b.xp
    # A private, writeable copy: numerical_gradient perturbs it in place.
    x = xp.asarray(x0, copy=True)
    path = []
    for i in range(int(step_num)):
        if history:
            path.append(xp.asarray(x, copy=True))
        try:
            grad = numerical_gradient(f, x, h, method=method)
        except NonFiniteError as exc:
            raise DivergenceError(
                f"gradient descent diverged at step {i + 1}: f is not finite near x ({exc})",
                step=i + 1,
                x=x,
            ) from exc
        with np.errstate(all="ignore"):  # overflow is reported below, with the step
            new = x - lr * grad
        if not bool(xp.all(xp.isfinite(new))):
            raise DivergenceError(
                f"gradient descent diverged at step {i + 1} of {step_num}: the iterate became "
                f"inf or nan (lr={lr}); lower lr",
                step=i + 1,
                x=x,
            )
        x = new
    if history:
        stacked = (
            xp.stack(path) if path else xp.zeros((0, *x.shape), dtype=x.dtype, device=x.device)
        )
        return x, stacked
    return x
