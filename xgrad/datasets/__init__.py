"""MNIST-format data sets: the book's ``load_mnist``, found locally or downloaded safely.

``load_mnist`` looks for the four IDX files in, in order: ``data_dir``, the ``XGRAD_DATA``
directory, the per-user cache (``$XDG_CACHE_HOME/xgrad`` or ``~/.cache/xgrad``) and, for
Fashion-MNIST, the Debian/Ubuntu package ``dataset-fashion-mnist``. Each directory is
searched as ``DIR/<dataset>/`` and then ``DIR/``. Missing files are downloaded into
``data_dir`` (if given) or the cache, with SHA-256 checks and atomic writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xgrad.datasets._download import DownloadError, download_file
from xgrad.datasets._idx import IdxFormatError, read_idx, write_idx
from xgrad.datasets._registry import DATASETS, PARTS, DataFile, DatasetSpec, get_spec
from xgrad.errors import ArgumentError, XgradError

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


def _search_dirs(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_DATA, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    dirs = []
    for root in roots:
        dirs += [root / spec.name, root]
    dirs.append(cache_dir() / spec.name)
    dirs += [Path(d) for d in spec.system_dirs]
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

    Returns None if no searched directory is complete (see the module docstring for the
    order). Nothing is downloaded.
    """
    spec = get_spec(dataset)
    for directory in _search_dirs(spec, data_dir):
        found = _find_in(directory, spec)
        if len(found) == len(PARTS):
            return found
    return None


def _not_found_message(spec: DatasetSpec, searched: list[Path], reason: str) -> str:
    urls = [url for part in PARTS for url in spec.urls(part)[:1]]
    names = ", ".join(spec.files[p].name for p in PARTS)
    ways = []
    if spec.hint:
        ways.append(spec.hint)
    ways.append(
        f"download {names} (e.g. {' '.join(urls) if urls else 'from ' + spec.homepage}) "
        f"into a directory and pass data_dir=DIR (--data-dir DIR) or set {ENV_DATA}=DIR"
    )
    return (
        f"{spec.name} data not found ({reason}); looked in: "
        f"{', '.join(str(d) for d in searched)}. To get it: " + "; or ".join(ways)
    )


def _locate(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, download: bool, timeout: float
) -> dict[str, Path]:
    found = find_files(spec, data_dir)
    if found is not None:
        return found
    searched = _search_dirs(spec, data_dir)
    if not download:
        raise DatasetNotFoundError(_not_found_message(spec, searched, "download=False"))
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir() / spec.name
    have = _find_in(target, spec)
    try:
        for part in PARTS:
            if part not in have:
                file = spec.files[part]
                have[part] = download_file(
                    spec.urls(part), target / file.name, file, timeout=timeout
                )
    except DownloadError as exc:
        raise DatasetNotFoundError(_not_found_message(spec, searched, str(exc))) from None
    return have


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
        Labels as float64 one-hot rows ``(N, 10)``; else the uint8 class numbers.
    dataset : str or DatasetSpec
        ``"mnist"`` or ``"fashion-mnist"`` (or a :class:`DatasetSpec` of your own).
    data_dir : path-like, optional
        Directory searched first (as ``DIR/<dataset>/`` and ``DIR/``); downloads go here
        when given, else to :func:`cache_dir`.
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
        the other ways to get the data (OS package, ``data_dir``, ``XGRAD_DATA``, URLs).
    IdxFormatError
        A file is corrupt, truncated, or images and labels do not match (names the file).
    """
    spec = get_spec(dataset)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ArgumentError(f"timeout: expected a positive number of seconds, found {timeout!r}")
    paths = _locate(spec, data_dir, download, float(timeout))
    splits = []
    for prefix in ("train", "test"):
        x, t = _load_pair(paths[f"{prefix}_images"], paths[f"{prefix}_labels"])
        if normalize:
            # The book's recipe (float32, then divide), so values match it bit for bit.
            x = x.astype(np.float32)
            x /= 255.0
        x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *x.shape[1:])
        if one_hot_label:
            if t.size and int(t.max()) >= spec.num_classes:
                raise IdxFormatError(
                    f"{paths[f'{prefix}_labels']}: label {int(t.max())} is out of range for "
                    f"{spec.num_classes} classes"
                )
            onehot = np.zeros((t.shape[0], spec.num_classes))
            onehot[np.arange(t.shape[0]), t] = 1.0
            t = onehot
        splits.append((x, t))
    return splits[0], splits[1]
