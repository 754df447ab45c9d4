"""Host-side randomness: drawn by NumPy from a seed, then moved to the backend once.

Every backend gets the very same numbers for the same seed (float32 results are the
float64 draws rounded once), which is what makes runs comparable across backends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xgrad.backends import Backend, get_backend
from xgrad.backends._base import DtypeLike
from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = ["HostRandom", "minibatch_stream"]


class HostRandom:
    """A ``numpy.random.Generator`` whose results land on a backend.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        Seed for ``numpy.random.default_rng``; a Generator is used as it is.
    backend : str or Backend, optional
        Where the arrays go (default: the current default backend).

    Examples
    --------
    >>> r = HostRandom(0, backend="numpy")
    >>> r.standard_normal((2,)).tolist()
    [0.12573022..., -0.13210486...]
    """

    def __init__(
        self, seed: int | np.random.Generator | None = None, *, backend: str | Backend | None = None
    ) -> None:
        if isinstance(seed, bool) or (
            seed is not None and not isinstance(seed, int | np.integer | np.random.Generator)
        ):
            raise ArgumentTypeError(
                f"seed: expected an int >= 0, a numpy Generator or None, found {seed!r}"
            )
        if isinstance(seed, int | np.integer) and seed < 0:
            raise ArgumentError(f"seed: expected an int >= 0, found {seed!r}")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.backend = get_backend(backend)

    # The generator's full state, for checkpoints: restoring it resumes the same stream.
    @property
    def state(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self.rng.bit_generator.state = value

    def _float(self, values: np.ndarray, dtype: DtypeLike) -> Any:
        return self.backend.asarray(values, dtype=self.backend.float_dtype(dtype))

    def standard_normal(self, shape: tuple[int, ...] | int, dtype: DtypeLike = None) -> Any:
        """Standard normal draws (float64 on the host, then ``dtype`` on the device)."""
        return self._float(self.rng.standard_normal(shape), dtype)

    def uniform(
        self,
        low: float = 0.0,
        high: float = 1.0,
        shape: tuple[int, ...] | int = (),
        dtype: DtypeLike = None,
    ) -> Any:
        """Uniform draws on ``[low, high)``."""
        return self._float(self.rng.uniform(low, high, shape), dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...] | int = ()) -> Any:
        """Integers on ``[low, high)`` as an int64 array of the backend."""
        return self.backend.asarray(self.rng.integers(low, high, shape, dtype=np.int64))

    def choice(self, n: int, size: int, *, replace: bool = True) -> Any:
        """Indices into ``range(n)`` (the book's ``np.random.choice(train_size, batch_size)``)."""
        return self.backend.asarray(self.rng.choice(n, size, replace=replace).astype(np.int64))

    def permutation(self, n: int) -> Any:
        """A random permutation of ``range(n)`` as an int64 array of the backend."""
        return self.backend.asarray(self.rng.permutation(n).astype(np.int64))


def minibatch_stream(seed: int, *, backend: str | Backend | None = None) -> HostRandom:
    """The generator of minibatch indices for ``seed``: the one ``xgrad train`` draws from.

    A stream of its own, spawned from ``seed`` (the net's initial weights use ``seed``
    itself), so a loop that draws its minibatches here with ``choice(train_size,
    batch_size)`` sees the minibatches of ``xgrad.train(seed=seed)``, on every backend.

    >>> minibatch_stream(0, backend="numpy").choice(60000, 3).tolist()
    [48134, 56576, 328]
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ArgumentError(f"seed: expected a non-negative integer, found {seed!r}")
    spawned = np.random.SeedSequence(int(seed)).spawn(1)[0]
    return HostRandom(np.random.default_rng(spawned), backend=backend)
