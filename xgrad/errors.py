"""xgrad's exceptions and warnings: one root, typed, caught by type (never by message text).

Every error xgrad raises on purpose derives from `XgradError`, and also from the built-in
exception a Python user would expect there (``ValueError`` for a bad value, ``TypeError``
for a bad type, ``ArithmeticError`` for a numerical failure), so ``except ValueError`` in
existing code keeps working and ``except xgrad.XgradError`` catches all of xgrad's own.

>>> import xgrad
>>> issubclass(xgrad.NonFiniteError, xgrad.XgradError), issubclass(xgrad.NonFiniteError, ValueError)
(True, True)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccuracyError",
    "AccuracyWarning",
    "ArgumentError",
    "ArgumentTypeError",
    "DivergenceError",
    "InputIgnoredWarning",
    "StepSizeWarning",
    "NonFiniteError",
    "NumericalError",
    "XgradError",
]


class XgradError(Exception):
    """Root of every exception xgrad raises on purpose."""


class ArgumentError(XgradError, ValueError):
    """An argument has a bad value; the message names the argument, expected and found."""


class ArgumentTypeError(XgradError, TypeError):
    """An argument has a bad type; the message names the argument, expected and found."""


class NumericalError(XgradError, ArithmeticError):
    """A numerical computation failed (no finite value, no derivative, divergence)."""


class NonFiniteError(NumericalError, ValueError):
    """f gave no finite value near a point, even with smaller and one-sided steps.

    Attributes
    ----------
    index : tuple of int
        The element of x (``()`` for a scalar x).
    value : float
        x at that element.
    """

    def __init__(self, message: str, *, index: tuple[int, ...] = (), value: float = float("nan")):
        super().__init__(message)
        self.index = index
        self.value = value


class AccuracyError(NumericalError, ValueError):
    """A numerical derivative did not meet its tolerance (``on_failure="raise"``).

    Attributes
    ----------
    result : DiffResult
        The full result: derivative, error estimate, status and success per element.
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class DivergenceError(NumericalError):
    """Gradient descent reached inf or nan.

    Attributes
    ----------
    step : int
        The step (1-based) whose update produced the non-finite iterate or gradient.
    x : array
        The last finite iterate (before that step).
    """

    def __init__(self, message: str, *, step: int, x: Any) -> None:
        super().__init__(message)
        self.step = step
        self.x = x


class AccuracyWarning(RuntimeWarning):
    """A numerical derivative did not meet its tolerance (or has no derivative) somewhere.

    The message names the first such element, its value, the error estimate and what to
    try. ``on_failure="raise"`` turns it into `AccuracyError`; ``full_output=True``
    reports it in ``DiffResult.status`` instead.
    """


class StepSizeWarning(RuntimeWarning):
    """An explicit step ``h`` did not change ``x`` somewhere and was enlarged there."""


class InputIgnoredWarning(RuntimeWarning):
    """f received a copy of x and no perturbation of it changed f's value."""
