"""The checkpoint loader under hypothesis: random bytes, truncations and bit flips.

A checkpoint is ``checkpoint.json`` (the record, with the SHA-256 of its own canonical
text and of the npz) and the npz it names. The documented outcomes of reading one are:
the checkpoint, with exactly the content that was written, or `CheckpointError` naming
the file; resuming from one may also end in `ArgumentError` (settings or ``iters`` that do
not fit the run). Anything else -- BadZipFile, KeyError, a MemoryError from a lying npz
header, a wrong resume -- is a crash.

Each strategy runs ``XGRAD_FUZZ_EXAMPLES`` examples (default 200, the CI run). The slow
run, at least 10,000 examples per strategy::

    XGRAD_FUZZ_EXAMPLES=10000 python -m pytest -p no:cacheprovider tests/test_fuzz_checkpoint.py
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xgrad._rundir import CHECKPOINT, Checkpoint, _canonical, check_history, read_checkpoint
from xgrad.errors import ArgumentError
from xgrad.training import CheckpointError, TrainingInterrupted, TrainStep, train

FUZZ_EXAMPLES = int(os.environ.get("XGRAD_FUZZ_EXAMPLES") or 200)


def _data() -> Any:
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = rng.integers(0, 3, n).astype(np.uint8)
        return (np.eye(3)[t] @ np.ones((3, 6)) + 0.2 * rng.standard_normal((n, 6))), t

    return draw(40), draw(10)


# 40 // 10 = 4 iterations per epoch: checkpoints after iterations 1, 5, 9, ...
RUN: dict[str, Any] = {
    "data": _data(),
    "iters": 16,
    "batch_size": 10,
    "lr": 0.05,
    "hidden": 4,
    "optimizer": "adam",
    "num_classes": 3,
    "plot": False,
    "quiet": True,
}


def _stop(step: TrainStep) -> None:
    if step.iteration == 11:
        raise KeyboardInterrupt


def _pristine() -> tuple[bytes, str, bytes, Checkpoint, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        with pytest.raises(TrainingInterrupted):
            train(**RUN, out=run, callback=_stop)
        good = read_checkpoint(run)
        assert good is not None and good.iteration == 9
        record = (run / CHECKPOINT).read_bytes()
        npz = (run / good.arrays).read_bytes()
        resumed = train(**RUN, out=run, resume=True).history
        return record, good.arrays, npz, good, resumed


RECORD, NPZ_NAME, NPZ, GOOD, RESUMED = _pristine()


def _same(a: Checkpoint, b: Checkpoint) -> bool:
    def flat(c: Checkpoint) -> list[Any]:
        out: list[Any] = []

        def walk(x: Any) -> None:
            if isinstance(x, dict):
                for k in sorted(x):
                    out.append(k)
                    walk(x[k])
            elif isinstance(x, list):
                for v in x:
                    walk(v)
            elif isinstance(x, np.ndarray):
                out.append((x.dtype.str, x.shape, x.tobytes()))
            else:
                out.append(x)

        walk([c.iteration, c.params, c.optimizer, c.rng, c.history, c.arrays])
        return out

    return flat(a) == flat(b)


def _write(run: Path, record: bytes, npz: bytes) -> None:
    (run / CHECKPOINT).write_bytes(record)
    (run / NPZ_NAME).write_bytes(npz)


def _forge(record: bytes, npz: bytes) -> bytes:
    """The record with its digests recomputed: damage only the parsers can catch."""
    obj = json.loads(record)
    obj["arrays_sha256"] = hashlib.sha256(npz).hexdigest()
    text = _canonical(obj)
    return f'{{"sha256":"{hashlib.sha256(text.encode()).hexdigest()}",{text[1:]}'.encode()


def _read_is_checked(record: bytes, npz: bytes) -> None:
    """The documented outcomes of read_checkpoint, and nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        _write(run, record, npz)
        try:
            found = read_checkpoint(run)
        except CheckpointError as exc:
            message = str(exc)
        else:
            message = None
        if message is not None:
            assert message.startswith("resume: cannot use the checkpoint ")
            return
        # Accepted: only if it says exactly what was written (e.g. a flip of "e" to "E"
        # in a float's exponent parses to the same number).
        assert found is not None and _same(found, GOOD)


def _flip(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[(p // 8) % len(out)] ^= 1 << (p % 8)
    return bytes(out)


# -- strategies: each draws a damaged (record, npz) pair and checks the outcome ----------------
def _random_bytes(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["record", "npz", "forged npz", "both"]))
    junk = data.draw(st.binary(max_size=4096))
    if which == "record":
        _read_is_checked(junk, NPZ)
    elif which == "npz":
        _read_is_checked(RECORD, junk)
    elif which == "forged npz":  # right digest: the npz parser itself meets the junk
        _read_is_checked(_forge(RECORD, junk), junk)
    else:
        _read_is_checked(junk, data.draw(st.binary(max_size=4096)))


def _truncated(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["record", "npz", "forged npz"]))
    size = len(RECORD) if which == "record" else len(NPZ)
    keep = data.draw(st.integers(0, size - 1))
    if which == "record":
        _read_is_checked(RECORD[:keep], NPZ)
    elif which == "npz":
        _read_is_checked(RECORD, NPZ[:keep])
    else:
        _read_is_checked(_forge(RECORD, NPZ[:keep]), NPZ[:keep])


def _bit_flips(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["record", "npz", "forged npz"]))
    size = len(RECORD) if which == "record" else len(NPZ)
    flips = data.draw(st.lists(st.integers(0, 8 * size - 1), min_size=1, max_size=8))
    if which == "record":
        _read_is_checked(_flip(RECORD, flips), NPZ)
    elif which == "npz":
        _read_is_checked(RECORD, _flip(NPZ, flips))
    else:
        bad = _flip(NPZ, flips)
        _read_is_checked(_forge(RECORD, bad), bad)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):  # the first few elements of the long lists
            out += _paths(v, (*prefix, i))
    return out


def _forged_record(data: st.DataObject) -> None:
    """A consistent-looking record (digest recomputed) with parts deleted or replaced.

    This goes past the digest into every check behind it, and on through a whole resume.
    """
    obj = json.loads(RECORD)
    paths = [p for p in _paths(obj) if p and p[0] != "sha256"]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = obj
        try:
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            fits = (isinstance(parent, dict) and isinstance(key, str)) or (
                isinstance(parent, list) and isinstance(key, int) and key < len(parent)
            )
            if not fits:
                continue  # an earlier mutation changed what is at this path
            if data.draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(_JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    text = _canonical(obj)
    record = f'{{"sha256":"{hashlib.sha256(text.encode()).hexdigest()}",{text[1:]}'.encode()
    _resume_is_checked(record, NPZ, exact=False)


def _forged_arrays(data: st.DataObject) -> None:
    """An npz with arrays dropped, renamed, reshaped or retyped, digests recomputed."""
    with np.load(io.BytesIO(NPZ)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key in sorted(arrays):
        action = data.draw(st.sampled_from(["keep", "keep", "drop", "shape", "dtype", "rename"]))
        if action == "drop":
            del arrays[key]
        elif action == "shape":
            arrays[key] = np.zeros(data.draw(st.lists(st.integers(0, 5), max_size=3)))
        elif action == "dtype":
            arrays[key] = arrays[key].astype(data.draw(st.sampled_from(["int8", "bool", "U3"])))
        elif action == "rename":
            arrays[key + "x"] = arrays.pop(key)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz = buffer.getvalue()
    _resume_is_checked(_forge(RECORD, npz), npz, exact=False)


def _resume_is_checked(record: bytes, npz: bytes, *, exact: bool) -> None:
    """The documented outcomes of a resume, and nothing else.

    ``exact``: the checkpoint may only be accepted as the one that was written (digests
    intact). Otherwise (digests forged over edited content: a consistent checkpoint of
    some other run is possible) an accepted one must give a complete, well-formed run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        _write(run, record, npz)
        try:
            result = train(**RUN, out=run, resume=True)
        except (CheckpointError, ArgumentError):
            return
        h = result.history
        if exact:
            assert {k: v for k, v in h.items() if k != "timings"} == {
                k: v for k, v in RESUMED.items() if k != "timings"
            }
        check_history(h, RUN["iters"])
        assert h["finished"] and len(h["epochs"]) == 4
        final = read_checkpoint(run)
        assert final is not None and final.iteration == RUN["iters"]


STRATEGIES: dict[str, Callable[[st.DataObject], None]] = {
    "random_bytes": _random_bytes,
    "truncated": _truncated,
    "bit_flips": _bit_flips,
    "forged_record": _forged_record,
    "forged_arrays": _forged_arrays,
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
def test_fuzz_checkpoint_loader(name: str) -> None:
    _run(name, FUZZ_EXAMPLES)


def test_the_pristine_checkpoint_reads_back_and_resumes() -> None:
    # The fuzzers' reference is a real, readable checkpoint; a fuzzer that only ever saw
    # errors would prove nothing.
    _read_is_checked(RECORD, NPZ)
    _resume_is_checked(RECORD, NPZ, exact=True)
    assert RESUMED["iterations_done"] == 16 and RESUMED["finished"]


@pytest.mark.parametrize(
    ("record", "npz", "message"),
    [
        (RECORD, NPZ[:100], "does not match the SHA-256"),  # the truncated npz
        (_forge(RECORD, NPZ[:100]), NPZ[:100], "not a readable npz"),
        (b"", NPZ, "not valid JSON"),
        (b"[" * 100_000, NPZ, "not valid JSON"),  # RecursionError inside json
        (b'{"format": "xgrad-train-checkpoint", "version": 3}', NPZ, "format version 3"),
        (b'{"format": "xgrad-train-checkpoint", "version": true}', NPZ, "format version True"),
    ],
)
def test_known_damage_is_a_checkpoint_error(record: bytes, npz: bytes, message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), record, npz)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(Path(tmp))


def test_a_record_cannot_point_outside_its_directory(tmp_path: Path) -> None:
    obj = json.loads(RECORD)
    obj["arrays"] = "../checkpoint-000000009.npz"
    text = _canonical(obj)
    (tmp_path / "run").mkdir()
    (tmp_path / NPZ_NAME).write_bytes(NPZ)  # a readable file one level up
    (tmp_path / "run" / CHECKPOINT).write_text(
        f'{{"sha256":"{hashlib.sha256(text.encode()).hexdigest()}",{text[1:]}'
    )
    with pytest.raises(CheckpointError, match="bad npz name"):
        read_checkpoint(tmp_path / "run")
