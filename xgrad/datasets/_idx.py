"""The IDX file format of MNIST and Fashion-MNIST: a strict reader and a small writer.

An IDX file is a big-endian header -- two zero bytes, a type code, the number of
dimensions, then one uint32 per dimension -- followed by exactly ``prod(dims)`` values.
The reader checks every part of that, so a truncated, corrupt or foreign file is reported
with its path instead of surfacing later as a wrongly shaped array.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from xgrad.errors import ArgumentTypeError, XgradError

__all__ = ["IdxFormatError", "read_idx", "write_idx"]

# IDX type code -> big-endian NumPy dtype (the format's own table).
_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=").name: code for code, dt in _TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(XgradError, ValueError):
    """A file is not a valid IDX file (bad magic number, truncated, wrong size...)."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    # Decide by content, not by name: people gunzip files and keep the name, or not.
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array in native byte order.

    Parameters
    ----------
    path : str or path-like
        The file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        Shape from the header, dtype from the type code (``uint8`` for MNIST).

    Raises
    ------
    IdxFormatError
        Bad magic number, unknown type code, or a data size that does not match the
        header; the message names the file.
    OSError
        The file cannot be read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> write_idx(p, np.array([7, 2, 1], dtype=np.uint8))
    >>> read_idx(p)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxFormatError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES:
        raise IdxFormatError(
            f"{path}: not an IDX file (magic number 0x{data[:4].hex()}; expected "
            f"0x0000 followed by a type code such as 0x08 and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[code]
    # Python ints: a lying header (dims near 2**32) would overflow int64 and could match.
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing data"
        raise IdxFormatError(
            f"{path}: {what}: header says shape {tuple(dims)} of {dtype.name} "
            f"({expected} bytes of data), file holds {found}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    except ValueError as exc:
        # Shapes numpy cannot represent even when empty: more than 64 dimensions, or
        # (0, 2**32 - 1, ...) whose other dims multiply past the index range.
        raise IdxFormatError(
            f"{path}: header says shape {tuple(dims)}, which is no NumPy array shape ({exc})"
        ) from None
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``compress`` or the name ends .gz).

    The inverse of :func:`read_idx`, used to make small MNIST-format data sets and tests.
    """
    array = np.asarray(array)
    name = array.dtype.newbyteorder("=").name
    if name not in _CODES:
        raise ArgumentTypeError(f"array: IDX stores {sorted(_CODES)}, found dtype {array.dtype}")
    code = _CODES[name]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = header + array.astype(_TYPES[code], copy=False).tobytes()
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
