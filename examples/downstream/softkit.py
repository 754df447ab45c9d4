"""softkit: two numerically careful functions written once against the array API."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace


def logsumexp(x: Any) -> Any:
    """log(sum(exp(x))) without overflow, as a 0-d array of x's namespace and device."""
    xp = array_namespace(x)
    m = xp.max(x)
    return m + xp.log(xp.sum(xp.exp(x - m)))


def softmax(x: Any) -> Any:
    """exp(x) / sum(exp(x)): the gradient of `logsumexp`."""
    xp = array_namespace(x)
    e = xp.exp(x - xp.max(x))
    return e / xp.sum(e)
