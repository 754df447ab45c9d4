"""Warnings attributed to the user's line: the one ``stacklevel`` rule of the package.

A leaf module (it imports nothing from xgrad), so that the backend registry and the
numerical modules share it without importing each other.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

__all__ = ["user_stacklevel", "warn"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` that points ``warnings.warn`` at the first frame outside xgrad.

    Counted from the caller of this function, so ``warnings.warn(..., stacklevel=
    user_stacklevel())`` names the user's line however deep inside xgrad the call is.
    """
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the caller's line, not to xgrad's."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
