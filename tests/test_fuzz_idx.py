"""The IDX reader under hypothesis: random bytes, truncations and bit flips of valid files.

``read_idx`` documents two outcomes for a readable file: an array whose shape and values
are those of the header and the data, or `IdxFormatError` naming the file. Anything else
(an IndexError from numpy, a struct.error, a MemoryError from a lying header) is a crash.
Each strategy runs ``XGRAD_FUZZ_EXAMPLES`` examples (default 200, the CI run; the same
variable as the checkpoint fuzzer's). The long run, 10,000 per strategy (~17 minutes here):

    XGRAD_FUZZ_EXAMPLES=10000 python -m pytest -p no:cacheprovider tests/test_fuzz_idx.py
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xgrad.datasets import IdxFormatError, read_idx, write_idx

FUZZ_EXAMPLES = int(os.environ.get("XGRAD_FUZZ_EXAMPLES") or 200)

_DTYPES = ["uint8", "int8", ">i2", ">i4", ">f4", ">f8"]
_CODES = {"uint8": 0x08, "int8": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
_DIR = Path(tempfile.mkdtemp(prefix="xgrad-fuzz-idx-"))


def _encode(array: np.ndarray) -> bytes:
    """IDX bytes from the format's definition, independent of write_idx."""
    dtype = array.dtype.str if array.dtype.itemsize > 1 else array.dtype.name
    dtype = {"|u1": "uint8", "|i1": "int8"}.get(dtype, dtype)
    head = struct.pack(f">HBB{array.ndim}I", 0, _CODES[dtype], array.ndim, *array.shape)
    return head + array.tobytes()


@st.composite
def idx_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    size = math.prod(shape) * dtype.itemsize
    raw = draw(st.binary(min_size=size, max_size=size))
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _read(data: bytes, name: str = "f-idx-ubyte") -> np.ndarray | None:
    """``read_idx`` of ``data``: the array, or None for the documented IdxFormatError."""
    path = _DIR / name
    path.write_bytes(data)
    message = ""
    try:
        return read_idx(path)
    except IdxFormatError as exc:
        message = str(exc)
    assert str(path) in message  # every refusal names the file
    return None


def _consistent(data: bytes, result: np.ndarray | None) -> None:
    """A raw (uncompressed) file that was read gives exactly the header's shape and values."""
    if result is None or data[:2] == b"\x1f\x8b":
        return
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    assert result.shape == dims
    assert result.dtype.isnative
    itemsize = result.dtype.itemsize
    assert len(data) == 4 + 4 * ndim + math.prod(dims) * itemsize
    # Values bit for bit (NaN payloads included): the big-endian bytes are the file's.
    assert result.astype(result.dtype.newbyteorder(">")).tobytes() == data[4 + 4 * ndim :]


def _random_bytes(data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from([b"", b"\x1f\x8b", b"\x00\x00", b"\x00\x00\x08"]))
    raw = prefix + data.draw(st.binary(max_size=300))
    _consistent(raw, _read(raw))


def _header_lies(data: st.DataObject) -> None:
    # Huge or many dimensions: must be refused from the sizes alone, without allocating.
    ndim = data.draw(st.integers(0, 255))
    dims = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
    code = data.draw(st.sampled_from([*_CODES.values(), 0x00, 0x0A, 0xFF]))
    body = data.draw(st.binary(max_size=64))
    raw = struct.pack(f">HBB{ndim}I", 0, code, ndim, *dims) + body
    _consistent(raw, _read(raw))


def _truncated(data: st.DataObject) -> None:
    array = data.draw(idx_arrays())
    raw = _encode(array)
    compress = data.draw(st.booleans())
    blob = gzip.compress(raw, mtime=0) if compress else raw
    cut = data.draw(st.integers(0, max(len(blob) - 1, 0)))
    result = _read(blob[:cut])
    if not compress:
        _consistent(blob[:cut], result)
    # The untruncated file reads back exactly.
    whole = _read(blob)
    assert whole is not None
    assert whole.shape == array.shape
    assert whole.tobytes() == array.astype(whole.dtype).tobytes()


def _bit_flips(data: st.DataObject) -> None:
    array = data.draw(idx_arrays())
    compress = data.draw(st.booleans())
    raw = _encode(array)
    blob = bytearray(gzip.compress(raw, mtime=0) if compress else raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    result = _read(bytes(blob), "f-idx-ubyte.gz" if compress else "f-idx-ubyte")
    _consistent(bytes(blob), result)


def _write_read(data: st.DataObject) -> None:
    array = data.draw(idx_arrays())
    path = _DIR / ("w.gz" if data.draw(st.booleans()) else "w")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    assert back.tobytes() == array.astype(back.dtype).tobytes()


STRATEGIES: dict[str, Callable[[st.DataObject], None]] = {
    "random_bytes": _random_bytes,
    "header_lies": _header_lies,
    "truncated": _truncated,
    "bit_flips": _bit_flips,
    "write_read": _write_read,
}


def _run(name: str, examples: int) -> None:
    body = STRATEGIES[name]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        body(data)

    fuzz()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_fuzz_idx_reader(name: str) -> None:
    _run(name, FUZZ_EXAMPLES)


def test_known_crashers_are_format_errors(tmp_path: Path) -> None:
    # Found by the fuzzer on the reader of before; each must be a clean IdxFormatError.
    cases = {
        "empty file": b"",
        "gzip magic only": b"\x1f\x8b",
        "gzip, trailing garbage": gzip.compress(_encode(np.zeros(2, np.uint8))) + b"\x00x",
        "dims overflow int64": struct.pack(">HBB3I", 0, 8, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1),
        "zero-size with trailing": struct.pack(">HBB1I", 0, 8, 1, 0) + b"\x01",
        "empty, huge other dims": struct.pack(">HBB4I", 0, 8, 4, 0, *[2**32 - 1] * 3),
        "65 dimensions": struct.pack(">HBB65I", 0, 8, 65, *[1] * 65) + b"\x00",
    }
    for label, raw in cases.items():
        path = tmp_path / "x"
        path.write_bytes(raw)
        with pytest.raises(IdxFormatError, match=str(path)):
            read_idx(path)
        assert label
