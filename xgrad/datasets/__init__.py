"""MNIST-format data sets: the book's ``load_mnist``, found locally or downloaded safely.

An explicit location -- ``data_dir`` (``--data-dir``), else the ``XGRAD_DATA`` directory --
is used or the call fails: the four IDX files are looked for there only (as
``DIR/<dataset>/`` and then ``DIR/``), missing ones are downloaded into ``DIR`` if it exists,
and a directory that does not exist, or that still lacks files, is an error naming them.
Nothing else is searched then, so a typo never trains silently on other data.

Without an explicit location the per-user cache (``$XDG_CACHE_HOME/xgrad/<dataset>`` or
``~/.cache/xgrad/<dataset>``) and then, for Fashion-MNIST, the Debian/Ubuntu package
``dataset-fashion-mnist`` are searched, and missing files are downloaded into the cache.
Downloads are checked (size, SHA-256) and written atomically.

Labels are checked against the data set's number of classes
(:attr:`DatasetSpec.num_classes`, 10 for MNIST and Fashion-MNIST).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xgrad.datasets._download import DownloadError, download_file
from xgrad.datasets._idx import IdxFormatError, read_idx, write_idx
from xgrad.datasets._registry import DATASETS, PARTS, DataFile, DatasetSpec, get_spec
from xgrad.errors import ArgumentError, ArgumentTypeError, XgradError

__all__ = [
    "DATASETS",
    "DataFile",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "IdxFormatError",
    "cache_dir",
    "find_files",
    "load_mnist",
    "read_idx",
    "write_idx",
]

ENV_DATA = "XGRAD_DATA"


class DatasetNotFoundError(XgradError, FileNotFoundError):
    """The data set is nowhere on disk and could not (or may not) be downloaded."""


def cache_dir() -> Path:
    """The per-user cache directory: ``$XDG_CACHE_HOME/xgrad``, else ``~/.cache/xgrad``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "xgrad"


def _candidates(file: DataFile) -> list[str]:
    # Published .gz, gunzipped, and the "train-images.idx3-ubyte" spelling some copies use.
    stem = file.stem
    names = [file.name, stem, stem.replace("-idx", ".idx", 1)]
    return list(dict.fromkeys(names))


def _explicit_root(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str] | None:
    """The explicit data location and what gave it (``data_dir`` or ``XGRAD_DATA``), if any."""
    if data_dir is not None:
        if not isinstance(data_dir, str | os.PathLike):
            raise ArgumentTypeError(
                f"data_dir: expected a directory path (str or path-like), found {data_dir!r}"
            )
        if not str(data_dir).strip():
            raise ArgumentError("data_dir: expected a directory path, found an empty string")
        return Path(data_dir).expanduser(), "data_dir (--data-dir)"
    env = os.environ.get(ENV_DATA, "").strip()
    if env:
        return Path(env).expanduser(), ENV_DATA
    return None


def _search_dirs(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    explicit = _explicit_root(data_dir)
    if explicit is not None:
        root = explicit[0]
        return list(dict.fromkeys([root / spec.name, root]))
    dirs = [cache_dir() / spec.name, *(Path(d) for d in spec.system_dirs)]
    return list(dict.fromkeys(dirs))


def _find_in(directory: Path, spec: DatasetSpec) -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for name in _candidates(spec.files[part]):
            if (directory / name).is_file():
                found[part] = directory / name
                break
    return found


def find_files(
    dataset: str | DatasetSpec = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path] | None:
    """Paths of the four files of ``dataset`` in the first directory that holds all four.

    Returns None if no searched directory is complete (see the module docstring for which
    directories: only ``data_dir`` or ``XGRAD_DATA`` when one is given). Nothing is
    downloaded.
    """
    spec = get_spec(dataset)
    for directory in _search_dirs(spec, data_dir):
        found = _find_in(directory, spec)
        if len(found) == len(PARTS):
            return found
    return None


def _how_to_get(spec: DatasetSpec) -> str:
    urls = [url for part in PARTS for url in spec.urls(part)[:1]]
    names = ", ".join(spec.files[p].name for p in PARTS)
    ways = []
    if spec.hint:
        ways.append(spec.hint)
    ways.append(
        f"download {names} (e.g. {' '.join(urls) if urls else 'from ' + spec.homepage}) "
        f"into a directory and pass data_dir=DIR (--data-dir DIR) or set {ENV_DATA}=DIR"
    )
    return "To get it: " + "; or ".join(ways)


def _not_found_message(spec: DatasetSpec, searched: list[Path], reason: str) -> str:
    return (
        f"{spec.name} data not found ({reason}); looked in: "
        f"{', '.join(str(d) for d in searched)}. {_how_to_get(spec)}"
    )


def _missing(spec: DatasetSpec, directories: list[Path]) -> str:
    """Which files each directory lacks, e.g. ``/d: t10k-labels-idx1-ubyte.gz``."""
    parts = []
    for directory in directories:
        found = _find_in(directory, spec)
        names = [spec.files[p].name for p in PARTS if p not in found]
        if len(names) == len(PARTS):
            names = [f"all four files ({', '.join(names)})"]
        parts.append(f"{directory}: {', '.join(names)}")
    return "missing in " + "; in ".join(parts)


def _locate(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, download: bool, timeout: float
) -> dict[str, Path]:
    found = find_files(spec, data_dir)
    if found is not None:
        return found
    searched = _search_dirs(spec, data_dir)
    explicit = _explicit_root(data_dir)
    if explicit is not None:
        root, given_by = explicit
        if not root.is_dir():
            # Not created and downloaded into: a typo would fetch the data to a new place.
            raise DatasetNotFoundError(
                f"{spec.name} data not found: {given_by} names {root}, which does not exist,"
                f" so the files"
                f" ({', '.join(spec.files[p].name for p in PARTS)}) are not there (nothing"
                f" else is searched when a directory is given; create it to download into"
                f" it). {_how_to_get(spec)}"
            )
        if not download:
            raise DatasetNotFoundError(
                f"{spec.name} data not found in {given_by}: {_missing(spec, searched)}"
                f" (download=False,"
                f" --no-download). {_how_to_get(spec)}"
            )
        target = root
    elif not download:
        raise DatasetNotFoundError(_not_found_message(spec, searched, "download=False"))
    else:
        target = cache_dir() / spec.name
    have = _find_in(target, spec)
    try:
        for part in PARTS:
            if part not in have:
                file = spec.files[part]
                have[part] = download_file(
                    spec.urls(part), target / file.name, file, timeout=timeout
                )
    except DownloadError as exc:
        if explicit is not None:
            raise DatasetNotFoundError(
                f"{spec.name} data not found in {explicit[1]}: {_missing(spec, searched)};"
                f" downloading failed: {exc}"
            ) from None
        raise DatasetNotFoundError(_not_found_message(spec, searched, str(exc))) from None
    return have


def _check_labels(labels: np.ndarray, path: Path, spec: DatasetSpec) -> None:
    if labels.size and int(labels.max()) >= spec.num_classes:
        bad = int(np.argmax(labels >= spec.num_classes))
        raise IdxFormatError(
            f"{path}: label {int(labels[bad])} (at index {bad}) is out of range for"
            f" {spec.name}, which has {spec.num_classes} classes (labels 0 to"
            f" {spec.num_classes - 1}); the file is corrupt or of another data set"
        )


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{images_path}: expected uint8 images of shape (N, rows, cols), found "
            f"{images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxFormatError(
            f"{labels_path}: expected uint8 labels of shape (N,), found {labels.dtype} "
            f"of shape {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    return images, labels


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    dataset: str | DatasetSpec = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    timeout: float = 30.0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST or Fashion-MNIST as NumPy arrays, in the format of the book's ``load_mnist``.

    Parameters
    ----------
    normalize : bool
        Pixels as float32 in [0, 1] (value / 255); else the raw uint8 values.
    flatten : bool
        Images as rows of ``rows*cols`` (784) values; else shape ``(N, 1, rows, cols)``.
    one_hot_label : bool
        Labels as float64 one-hot rows ``(N, num_classes)``; else the uint8 class numbers.
    dataset : str or DatasetSpec
        ``"mnist"`` or ``"fashion-mnist"`` (or a :class:`DatasetSpec` of your own).
    data_dir : path-like, optional
        The directory to use (as ``DIR/<dataset>/`` and ``DIR/``), and the only one: it
        must exist; missing files are downloaded into it (``download=True``), else the call
        fails naming them. Default: ``XGRAD_DATA`` if set (the same rules), else the cache
        and the OS package (see the module docstring).
    download : bool
        Download missing files from the mirrors (False: only look on disk).
    timeout : float
        Seconds to wait on a mirror before trying the next.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test))

    Raises
    ------
    DatasetNotFoundError
        Nowhere on disk and not downloadable; the message lists the places searched and
        the other ways to get the data (OS package, ``data_dir``, ``XGRAD_DATA``, URLs), or,
        for an explicit ``data_dir``/``XGRAD_DATA``, the files missing there.
    IdxFormatError
        A file is corrupt, truncated, images and labels do not match, or a label is not
        below the data set's number of classes (names the file).
    """
    spec = get_spec(dataset)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ArgumentError(f"timeout: expected a positive number of seconds, found {timeout!r}")
    paths = _locate(spec, data_dir, download, float(timeout))
    splits = []
    for prefix in ("train", "test"):
        x, t = _load_pair(paths[f"{prefix}_images"], paths[f"{prefix}_labels"])
        _check_labels(t, paths[f"{prefix}_labels"], spec)
        if normalize:
            # The book's recipe (float32, then divide), so values match it bit for bit.
            x = x.astype(np.float32)
            x /= 255.0
        x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *x.shape[1:])
        if one_hot_label:
            onehot = np.zeros((t.shape[0], spec.num_classes))
            onehot[np.arange(t.shape[0]), t] = 1.0
            t = onehot
        splits.append((x, t))
    return splits[0], splits[1]
