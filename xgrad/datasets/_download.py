"""Downloading one file safely: timeout, size and SHA-256 checks, atomic placement.

The file is streamed into a temporary file in the destination directory and moved into
place with ``os.replace`` only after its digest matched, so an interrupted or corrupt
download never sits where a later run would find and trust it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from xgrad.datasets._registry import DataFile
from xgrad.errors import XgradError

__all__ = ["DownloadError", "download_file"]

_CHUNK = 1 << 16


class DownloadError(XgradError, OSError):
    """A file could not be downloaded from any mirror (the message lists each attempt)."""


def _fetch(url: str, dest: Path, file: DataFile, timeout: float) -> None:
    """Download ``url`` to ``dest`` via a temporary file; raise DownloadError on any fault."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        request = urllib.request.Request(url, headers={"User-Agent": "xgrad"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if file.size is not None and size > file.size:
                    raise DownloadError(f"{url}: more than the expected {file.size} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if file.size is not None and size != file.size:
            raise DownloadError(f"{url}: got {size} bytes, expected {file.size}")
        if file.sha256 is not None and digest.hexdigest() != file.sha256.lower():
            raise DownloadError(
                f"{url}: SHA-256 mismatch (got {digest.hexdigest()}, expected {file.sha256})"
            )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{url}: {exc.reason}") from None
    except TimeoutError:
        raise DownloadError(f"{url}: no answer within {timeout:g} s (timeout)") from None
    except DownloadError:
        raise
    except OSError as exc:
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def download_file(
    urls: list[str], dest: str | os.PathLike[str], file: DataFile, *, timeout: float = 30.0
) -> Path:
    """Download ``file`` to ``dest`` from the first of ``urls`` that serves the right bytes.

    Parameters
    ----------
    urls : list of str
        Mirrors' URLs of the file, tried in order.
    dest : path-like
        Final path; its directory is created if needed.
    file : DataFile
        Expected size and SHA-256 (each checked when known).
    timeout : float
        Seconds to wait for a connection or for data before giving up on a mirror.

    Raises
    ------
    DownloadError
        No mirror delivered the file; the message has one reason per URL.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            _fetch(url, dest, file, timeout)
            return dest
        except DownloadError as exc:
            errors.append(str(exc))
    if not urls:
        errors.append("no download URL is known")
    raise DownloadError(f"could not download {file.name}: " + "; ".join(errors))
