"""xgrad.datasets: the IDX reader, the search order and the downloader (against 127.0.0.1)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xgrad.datasets import (
    DATASETS,
    DataFile,
    DatasetNotFoundError,
    DatasetSpec,
    IdxFormatError,
    cache_dir,
    find_files,
    load_mnist,
    read_idx,
    write_idx,
)
from xgrad.datasets._registry import PARTS

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No test may see the user's cache or XGRAD_DATA.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XGRAD_DATA", raising=False)


def make_arrays(
    seed: int = 0, n_train: int = 12, n_test: int = 5, rows: int = 4, cols: int = 3
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_set(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for part, array in arrays.items():
        name = NAMES[part] if gz else NAMES[part][:-3]
        write_idx(directory / name, array)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written out by hand from the format's definition (independent of write_idx)."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return head + array.astype(np.uint8).tobytes()


# -- IDX reader ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_roundtrip(tmp_path: Path, dtype: str, name: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) * 3 - 20).astype(dtype)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(b, a)


def test_idx_reads_hand_made_bytes(tmp_path: Path) -> None:
    a = np.array([[0, 255], [7, 128]], dtype=np.uint8)
    (tmp_path / "raw").write_bytes(idx_bytes(a))
    (tmp_path / "named.gz").write_bytes(gzip.compress(idx_bytes(a)))
    (tmp_path / "gz-without-suffix").write_bytes(gzip.compress(idx_bytes(a)))
    for name in ("raw", "named.gz", "gz-without-suffix"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    # Big-endian multi-byte values, written by hand.
    (tmp_path / "i32").write_bytes(
        bytes([0, 0, 0x0C, 1, 0, 0, 0, 2])
        + (-2).to_bytes(4, "big", signed=True)
        + (70000).to_bytes(4, "big")
    )
    assert read_idx(tmp_path / "i32").tolist() == [-2, 70000]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "truncated IDX header"),
        (idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1], "truncated"),
        (idx_bytes(np.zeros((3, 2, 2), np.uint8)) + b"\x00", "trailing data"),
        (
            gzip.compress(idx_bytes(np.zeros((30, 28, 28), np.uint8)))[:-40],
            "corrupt or truncated gzip",
        ),
        (b"\x1f\x8bnot really gzip", "corrupt or truncated gzip"),
    ],
)
def test_idx_rejects_bad_files_naming_them(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_write_idx_refuses_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(2, dtype=np.complex128))


# -- load_mnist: the book's formats --------------------------------------------------------
def test_load_mnist_formats_match_the_book(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_set(tmp_path / "d", arrays)
    (x, t), (xt, tt) = load_mnist(data_dir=tmp_path / "d", download=False)
    assert x.dtype == np.float32 and x.shape == (12, 12) and xt.shape == (5, 12)
    expected = arrays["train_images"].reshape(12, -1).astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(x, expected)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert t.dtype == np.uint8
    np.testing.assert_array_equal(t, arrays["train_labels"])
    np.testing.assert_array_equal(tt, arrays["test_labels"])

    (x, t), (xt, tt) = load_mnist(
        normalize=False, flatten=False, one_hot_label=True, data_dir=tmp_path / "d", download=False
    )
    assert x.dtype == np.uint8 and x.shape == (12, 1, 4, 3)
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"])
    assert t.shape == (12, 10) and tt.shape == (5, 10)
    np.testing.assert_array_equal(t.sum(axis=1), np.ones(12))
    np.testing.assert_array_equal(t.argmax(axis=1), arrays["train_labels"])


def test_mismatched_counts_name_both_files(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["test_labels"] = arrays["test_labels"][:4]
    write_set(tmp_path, arrays)
    with pytest.raises(IdxFormatError, match=r"5 images but .* 4 labels") as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_wrong_kind_of_file_is_named(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["train_labels"] = arrays["train_labels"].reshape(3, 4)
    write_set(tmp_path, arrays)
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte\.gz: expected uint8 labels"):
        load_mnist(data_dir=tmp_path, download=False)


@pytest.mark.parametrize("one_hot_label", [False, True])
@pytest.mark.parametrize("part", ["train_labels", "test_labels"])
def test_label_out_of_range_names_the_file(tmp_path: Path, one_hot_label: bool, part: str) -> None:
    # Before: plain labels loaded, and `xgrad train` widened the net to max label + 1.
    arrays = make_arrays()
    arrays[part][3] = 12
    write_set(tmp_path, arrays)
    pattern = (
        rf"{NAMES[part]}: label 12 \(at index 3\) is out of range for mnist, which has 10"
        rf" classes \(labels 0 to 9\)"
    )
    with pytest.raises(IdxFormatError, match=pattern):
        load_mnist(one_hot_label=one_hot_label, data_dir=tmp_path, download=False)


def test_labels_are_checked_against_the_spec_classes(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["train_labels"] %= 3
    arrays["test_labels"] %= 3
    arrays["test_labels"][0] = 3
    write_set(tmp_path, arrays)
    spec = DatasetSpec("three", {p: DataFile(NAMES[p]) for p in PARTS}, num_classes=3)
    assert spec.num_classes == DATASETS["mnist"].num_classes - 7
    with pytest.raises(IdxFormatError, match=r"label 3 \(at index 0\) .* 3 classes"):
        load_mnist(dataset=spec, data_dir=tmp_path, download=False)
    arrays["test_labels"][0] = 2
    write_set(tmp_path, arrays)
    (_, t), _ = load_mnist(dataset=spec, one_hot_label=True, data_dir=tmp_path, download=False)
    assert t.shape == (12, 3)
    np.testing.assert_array_equal(t.argmax(axis=1), arrays["train_labels"])


@pytest.mark.parametrize("bad", [0, 257, 2.0, True, "10"])
def test_spec_num_classes_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match=r"num_classes: expected an int in \[1, 256\]"):
        DatasetSpec("x", {p: DataFile(NAMES[p]) for p in PARTS}, num_classes=bad)  # type: ignore[arg-type]


def test_uncompressed_and_dotted_names_are_found(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_set(tmp_path / "raw", arrays, gz=False)
    raw = tmp_path / "raw"
    (raw / "t10k-labels-idx1-ubyte").rename(raw / "t10k-labels.idx1-ubyte")
    (_, _), (_, tt) = load_mnist(data_dir=tmp_path / "raw", download=False)
    np.testing.assert_array_equal(tt, arrays["test_labels"])


# -- where the files come from ------------------------------------------------------------
def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sets = {key: make_arrays(seed) for seed, key in enumerate(["dir", "dirsub", "env", "cache"])}
    write_set(tmp_path / "dd", sets["dir"])
    write_set(tmp_path / "dd" / "mnist", sets["dirsub"])
    write_set(tmp_path / "env", sets["env"])
    write_set(cache_dir() / "mnist", sets["cache"])
    monkeypatch.setenv("XGRAD_DATA", str(tmp_path / "env"))

    def labels(**kw: object) -> np.ndarray:
        return load_mnist(download=False, **kw)[0][1]  # type: ignore[arg-type]

    np.testing.assert_array_equal(labels(data_dir=tmp_path / "dd"), sets["dirsub"]["train_labels"])
    np.testing.assert_array_equal(labels(), sets["env"]["train_labels"])
    monkeypatch.delenv("XGRAD_DATA")
    np.testing.assert_array_equal(labels(), sets["cache"]["train_labels"])
    # An incomplete directory is passed over, not half used.
    (tmp_path / "dd" / "mnist" / NAMES["test_labels"]).unlink()
    np.testing.assert_array_equal(labels(data_dir=tmp_path / "dd"), sets["dir"]["train_labels"])
    assert cache_dir() == tmp_path / "cache" / "xgrad"


def test_explicit_location_is_used_or_the_call_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a data_dir or XGRAD_DATA without the files fell through to the cache (or the
    # OS package) and trained on that data, rc 0.
    write_set(cache_dir() / "mnist", make_arrays(1))
    system = tmp_path / "usr-share"
    write_set(system, make_arrays(2))
    spec = DatasetSpec("mnist", DATASETS["mnist"].files, system_dirs=(str(system),))
    assert find_files(spec) is not None
    missing = tmp_path / "nonexistent"
    with pytest.raises(
        DatasetNotFoundError, match=r"mnist data not found: data_dir \(--data-dir\) names .*"
    ):
        load_mnist(dataset=spec, data_dir=missing)
    assert not missing.exists()  # not created, nothing downloaded there
    assert find_files(spec, data_dir=missing) is None
    monkeypatch.setenv("XGRAD_DATA", str(missing))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset=spec)
    msg = str(info.value)
    assert msg.startswith(f"mnist data not found: XGRAD_DATA names {missing}, which does not exist")
    for name in NAMES.values():
        assert name in msg
    # data_dir wins over XGRAD_DATA; an existing directory that lacks files names them.
    partial = tmp_path / "partial"
    write_set(partial, make_arrays(3))
    (partial / NAMES["test_labels"]).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset=spec, data_dir=partial, download=False)
    msg = str(info.value)
    assert f"in {partial}: {NAMES['test_labels']}" in msg
    assert f"in {partial / 'mnist'}: all four files" in msg
    assert "data_dir (--data-dir)" in msg and "XGRAD_DATA=DIR" in msg


@pytest.mark.parametrize("bad", ["", "  ", 3, ["d"]])
def test_bad_data_dir_values(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"data_dir: expected a directory path"):
        load_mnist(data_dir=bad, download=False)  # type: ignore[arg-type]


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "xgrad"


def test_system_dir_of_spec(tmp_path: Path) -> None:
    arrays = make_arrays(3)
    write_set(tmp_path / "usr-share", arrays)
    spec = DatasetSpec(
        "toy", {p: DataFile(NAMES[p]) for p in PARTS}, system_dirs=(str(tmp_path / "usr-share"),)
    )
    assert find_files(spec) == {p: tmp_path / "usr-share" / NAMES[p] for p in PARTS}
    np.testing.assert_array_equal(
        load_mnist(dataset=spec, download=False)[1][1], arrays["test_labels"]
    )


def test_offline_error_says_how_to_get_the_data(tmp_path: Path) -> None:
    spec = DATASETS["fashion-mnist"]
    spec = DatasetSpec(
        spec.name,
        spec.files,
        spec.mirrors,
        system_dirs=(str(tmp_path / "none"),),
        hint=spec.hint,
        homepage=spec.homepage,
    )
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset=spec, download=False)
    msg = str(info.value)
    for needle in (
        "apt-get install dataset-fashion-mnist",
        "XGRAD_DATA",
        "--data-dir",
        str(cache_dir() / "fashion-mnist"),
        str(tmp_path / "none"),
        "train-images-idx3-ubyte.gz",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels",
    ):
        assert needle in msg
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset=spec, data_dir=tmp_path / "mine", download=False)
    msg = str(info.value)
    assert str(tmp_path / "mine") in msg and str(tmp_path / "none") not in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match=r"dataset: unknown name 'cifar'.*fashion-mnist"):
        load_mnist(dataset="cifar")
    with pytest.raises(ValueError, match="timeout"):
        load_mnist(timeout=0)


def test_registry_is_complete() -> None:
    for spec in DATASETS.values():
        assert set(spec.files) == set(PARTS)
        for f in spec.files.values():
            assert f.sha256 is not None and len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert f.size is not None and f.size > 0
        assert all(u.startswith(("http://", "https://")) for u in spec.mirrors)


# -- downloads from a local server --------------------------------------------------------
class Server:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes); ``/slow/`` stalls."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path.startswith("/slow/"):
                    owner.stop.wait(5)
                    return
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that time out leave broken pipes behind

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def publish(
    server: Server, arrays: dict[str, np.ndarray], prefix: str = "/m/"
) -> dict[str, DataFile]:
    files = {}
    for part, array in arrays.items():
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in array.shape
        )
        body = gzip.compress(header + array.tobytes(), mtime=0)
        server.files[prefix + NAMES[part]] = body
        files[part] = DataFile(NAMES[part], hashlib.sha256(body).hexdigest(), len(body))
    return files


def spec_for(files: dict[str, DataFile], *mirrors: str) -> DatasetSpec:
    return DatasetSpec("toy", files, mirrors, hint="ask a colleague for the toy files")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_download_then_cache(server: Server, tmp_path: Path) -> None:
    arrays = make_arrays(5)
    spec = spec_for(publish(server, arrays), server.url + "/m/")
    (_, t), (xt, _) = load_mnist(dataset=spec, timeout=5)
    np.testing.assert_array_equal(t, arrays["train_labels"])
    np.testing.assert_array_equal(
        xt, arrays["test_images"].reshape(5, -1).astype(np.float32) / np.float32(255)
    )
    assert sorted(server.requests) == sorted("/m/" + n for n in NAMES.values())
    assert leftovers(cache_dir()) == sorted(["toy", *NAMES.values()])
    # Second time: from the cache, with the server gone.
    server.close()
    (_, t2), _ = load_mnist(dataset=spec, timeout=1)
    np.testing.assert_array_equal(t2, arrays["train_labels"])
    assert len(server.requests) == 4


def test_download_into_data_dir_and_only_missing_files(server: Server, tmp_path: Path) -> None:
    arrays = make_arrays(6)
    spec = spec_for(publish(server, arrays), server.url + "/m/")
    (tmp_path / "d").mkdir()
    write_idx(tmp_path / "d" / NAMES["train_images"], arrays["train_images"])
    load_mnist(dataset=spec, data_dir=tmp_path / "d", timeout=5)
    assert sorted(server.requests) == sorted("/m/" + NAMES[p] for p in PARTS[1:])
    assert leftovers(tmp_path / "d") == sorted(NAMES.values())
    assert not cache_dir().exists()


def test_corrupt_download_leaves_nothing(server: Server) -> None:
    arrays = make_arrays(7)
    files = publish(server, arrays)
    size = files["test_images"].size
    assert size is not None
    server.files["/m/" + NAMES["test_images"]] = b"\x1f\x8b" + b"x" * (size - 2)
    spec = spec_for(files, server.url + "/m/")
    with pytest.raises(DatasetNotFoundError, match="SHA-256 mismatch") as info:
        load_mnist(dataset=spec, timeout=5)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert "ask a colleague" in str(info.value)
    # The good files before it stay; the bad one and its temporary file do not.
    assert NAMES["test_images"] not in leftovers(cache_dir())
    assert not [n for n in leftovers(cache_dir()) if n.endswith(".part")]


def test_wrong_size_is_rejected_before_digest(server: Server) -> None:
    files = publish(server, make_arrays(8))
    server.files["/m/" + NAMES["train_labels"]] += b"extra"
    with pytest.raises(DatasetNotFoundError, match="more than the expected"):
        load_mnist(dataset=spec_for(files, server.url + "/m/"), timeout=5)
    assert not [n for n in leftovers(cache_dir()) if "labels" in n]


def test_404_then_next_mirror(server: Server) -> None:
    arrays = make_arrays(9)
    spec = spec_for(publish(server, arrays, "/good/"), server.url + "/gone/", server.url + "/good/")
    (_, t), _ = load_mnist(dataset=spec, timeout=5)
    np.testing.assert_array_equal(t, arrays["train_labels"])
    assert sum(r.startswith("/gone/") for r in server.requests) == 4


def test_404_everywhere_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    spec = spec_for(publish(server, make_arrays(1), "/elsewhere/"), server.url + "/gone/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset=spec, timeout=5)
    msg = str(info.value)
    assert "HTTP 404" in msg and server.url + "/gone/train-images-idx3-ubyte.gz" in msg
    assert "XGRAD_DATA" in msg and "ask a colleague" in msg
    assert leftovers(cache_dir() / "toy") == []


def test_timeout_is_a_clear_error(server: Server) -> None:
    spec = spec_for(publish(server, make_arrays(2)), server.url + "/slow/")
    with pytest.raises(DatasetNotFoundError, match=r"timed out|timeout"):
        load_mnist(dataset=spec, timeout=0.3)
    assert leftovers(cache_dir() / "toy") == []


def test_unreachable_host_is_a_clear_error(server: Server) -> None:
    url = server.url + "/m/"
    server.close()  # nothing listens on that port any more
    spec = spec_for(publish(server, make_arrays(2)), url)
    with pytest.raises(DatasetNotFoundError, match="could not download train-images"):
        load_mnist(dataset=spec, timeout=2)


# -- the real Fashion-MNIST (Debian package dataset-fashion-mnist), when installed ---------
def test_real_fashion_mnist() -> None:
    if find_files("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    (x, t), (xt, tt) = load_mnist(dataset="fashion-mnist", download=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(t, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(tt, minlength=10), np.full(10, 1000))
