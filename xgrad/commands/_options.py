"""Command-line options that several subcommands share, defined once."""

from __future__ import annotations

from typing import Any

from xgrad.backends._base import FLOAT_NAMES
from xgrad.datasets import DATASETS
from xgrad.nn import ACTIVATIONS

__all__ = ["add_data_arguments", "add_device_arguments", "add_net_arguments"]


def add_data_arguments(group: Any) -> None:
    """``--dataset``, ``--data-dir``, ``--no-download`` (choices from the dataset registry)."""
    group.add_argument(
        "--dataset",
        default="mnist",
        choices=sorted(DATASETS),
        help="data set (default: mnist; fashion-mnist is also the Debian/Ubuntu package "
        "dataset-fashion-mnist)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="look for (and download) the data here first; also $XGRAD_DATA",
    )
    group.add_argument("--no-download", action="store_true", help="only use data already on disk")


def add_device_arguments(group: Any) -> None:
    """``--device`` and ``--dtype``, the companions of ``--backend``."""
    group.add_argument("--device", help="device of the backend, e.g. cuda:1")
    group.add_argument(
        "--dtype", choices=list(FLOAT_NAMES), help="float precision (default float64)"
    )


def add_net_arguments(group: Any, *, activation: str) -> None:
    """``--hidden`` and ``--activation`` of the two-layer net."""
    group.add_argument("--hidden", type=int, default=50, help="hidden units (50)")
    group.add_argument(
        "--activation",
        default=activation,
        choices=list(ACTIVATIONS),
        help=f"hidden activation (sigmoid: ch. 4; relu: ch. 5; default {activation})",
    )
