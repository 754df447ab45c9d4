"""glibc's malloc thresholds, raised once per process.

A blocked derivative's temporaries (the stencil points, f's values there, f's own
temporaries, the tableau), several alive at once, add up to more free memory at the top of
glibc's heap than its trim threshold (twice the largest mmap'ed chunk freed so far, 128 kB
at the start), so glibc hands the memory back after every block and the next one faults
its pages in afresh: a derivative on 1e5 points made 1,700 page faults a call (56 ns per
point, against 30 warm). glibc raises its thresholds itself when a large mmap'ed chunk is freed;
one such chunk, allocated and freed untouched (no page is faulted in), raises them above
such peaks for the rest of the process. Under other allocators it costs nothing.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["WORKSPACE_BYTES", "warm"]

#: The chunk's size: glibc then trims only above twice this much free memory.
WORKSPACE_BYTES = 8 * 2**20


@functools.cache
def warm() -> None:
    """Raise this process's malloc thresholds once (see the module's docstring)."""
    np.empty(WORKSPACE_BYTES, dtype=np.uint8)  # freed at once; its pages are never touched
