"""``xgrad gradcheck``: the book's gradient check (ch. 5) on real data, on any backend."""

from __future__ import annotations

import argparse
from typing import Any

from xgrad.commands._options import add_data_arguments, add_device_arguments, add_net_arguments

HELP = (
    "the book's gradient check: backprop vs numerical gradient of a fresh two-layer net "
    "on a few real training samples, on one or every available backend"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--backend",
        help="backend (optionally with a device: torch:cuda); default: $XGRAD_BACKEND or numpy",
    )
    which.add_argument(
        "--all-backends",
        action="store_true",
        help="check on every backend usable here (default device of each)",
    )
    add_device_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--batch", type=int, default=3, help="training samples used (the book's 3)")
    add_net_arguments(parser, activation="relu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the net's weights (0)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="evaluate the numerical gradient (the per-element loop of the loss) on N worker "
        "processes (with --scheduler local: N Dask workers)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the evaluations on a Dask cluster: tcp://HOST:PORT of its scheduler, or "
        "'local' for a LocalCluster on this machine (needs xgrad[dask])",
    )


def _backends(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(label, Backend or the reason it cannot be used) for each backend to check."""
    from xgrad.backends import available_backends, get_backend

    if not args.all_backends:
        return [(args.backend or "default", get_backend(args.backend, args.device))]
    if args.device is not None:
        raise ValueError("--device goes with --backend, not with --all-backends")
    out: list[tuple[str, object]] = []
    for name, reason in sorted(available_backends().items()):
        if reason is not None:
            out.append((name, reason))
            continue
        try:
            out.append((name, get_backend(name)))
        except ImportError as exc:
            out.append((name, str(exc)))
    return out


def run(args: argparse.Namespace) -> int:
    from xgrad.workers import cli_workers

    if args.batch < 1:
        raise ValueError(f"--batch: expected an integer >= 1, found {args.batch}")
    with cli_workers(args.workers, args.scheduler) as workers:
        return _load_and_check(args, workers)


def _load_and_check(args: argparse.Namespace, workers: Any) -> int:
    from xgrad.datasets import load_mnist

    (x_train, t_train), _ = load_mnist(
        normalize=True,
        flatten=True,
        one_hot_label=True,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
    )
    if args.batch > x_train.shape[0]:
        raise ValueError(
            f"--batch: {args.batch} is more than the {x_train.shape[0]} training samples"
        )
    x_host, t_host = x_train[: args.batch], t_train[: args.batch]
    print(
        f"{args.dataset}: the first {args.batch} training samples, a fresh TwoLayerNet("
        f"{x_host.shape[1]}, {args.hidden}, {t_host.shape[1]}, {args.activation}, "
        f"seed={args.seed})\n"
    )
    return _check_all(args, x_host, t_host, workers)


def _check_all(args: argparse.Namespace, x_host: Any, t_host: Any, workers: Any) -> int:
    import numpy as np

    from xgrad.backends import Backend
    from xgrad.checking import ParamCheck, gradcheck
    from xgrad.nn import TwoLayerNet

    failed, checked = [], 0
    for label, b in _backends(args):
        if not isinstance(b, Backend):
            print(f"{label}: skipped: {b}")
            continue
        try:
            dtype = b.float_dtype(args.dtype)
        except ValueError as exc:
            if not args.all_backends:
                raise
            print(f"{b.spec}: skipped: {exc}")
            continue
        net = TwoLayerNet(
            x_host.shape[1],
            args.hidden,
            t_host.shape[1],
            activation=args.activation,
            backend=b,
            dtype=dtype,
            seed=args.seed,
        )
        x = b.asarray(x_host, dtype=dtype)
        t = b.asarray(t_host.astype(np.float64), dtype=dtype)
        result = gradcheck(net, x, t, workers=workers)
        checked += 1
        print(result.report())
        # The book's printout: mean |backprop - numerical| per parameter.
        print(
            "  ".join(
                f"{k}:{p.mean_abs:.3g}"
                for k, p in result.params.items()
                if isinstance(p, ParamCheck)
            )
        )
        print()
        if not result.passed:
            failed.append(b.spec)
    if failed:
        print(f"gradcheck FAILED on: {', '.join(failed)}")
        return 1
    if checked == 0:
        raise RuntimeError("no backend could be checked (see the reasons above)")
    return 0
