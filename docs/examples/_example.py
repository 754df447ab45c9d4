"""The command line every example script shares: an optional backend, an output folder."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def example_parser(doc: str, *, figures: bool = True) -> argparse.ArgumentParser:
    """``BACKEND`` (default: $XGRAD_BACKEND, else numpy); ``--out`` for scripts with figures."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("backend", nargs="?", help="numpy, torch, jax, cupy, array_api_strict")
    if figures:
        parser.add_argument(
            "--out", default=os.environ.get("XGRAD_DOCS_OUT"), help="directory for the figures"
        )
    return parser


def output_dir(out: str | None) -> Path:
    """``out``, else a new temporary folder: examples never write into the repository."""
    path = Path(out or tempfile.mkdtemp(prefix="xgrad-docs-"))
    path.mkdir(parents=True, exist_ok=True)
    return path
