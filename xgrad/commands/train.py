"""``xgrad train``: the book's two-layer net on MNIST or Fashion-MNIST, on any backend."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HELP = "train the book's two-layer net on MNIST-format data (history, figures, checkpoints)"


# Where each setting of TrainConfig appears in --help (the settings themselves, their
# defaults, choices and help are TrainConfig's).
_GROUPS = {"dataset": "data", "backend": "where", "device": "where", "dtype": "where"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from xgrad.training import TrainConfig

    groups = {
        "data": parser.add_argument_group("data"),
        "model": parser.add_argument_group("model and training (defaults: the book's ch. 4)"),
        "where": parser.add_argument_group("where to compute"),
    }
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        text = meta["help"] + ("" if f.default is None else f" (default {f.default})")
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": text}
        if meta["choices"] is not None:
            kwargs["choices"] = list(meta["choices"]())
        elif type(f.default) in (int, float):
            kwargs["type"] = type(f.default)
        groups[_GROUPS.get(f.name, "model")].add_argument("--" + f.name.replace("_", "-"), **kwargs)
    data = groups["data"]
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="look for (and download) the data here first; also $XGRAD_DATA",
    )
    data.add_argument("--no-download", action="store_true", help="only use data already on disk")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        metavar="DIR",
        help="directory for history.json, loss.png, accuracy.png and the "
        "checkpoint (default: a new xgrad-runs/<dataset>-<time>)",
    )
    out.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    out.add_argument("--no-plot", action="store_true", help="do not write the figures")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    scale = parser.add_argument_group("scale-out (--gradient numerical)")
    scale.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="each step's numerical gradient as the book's per-element loop on N worker "
        "processes (with --scheduler local: N Dask workers)",
    )
    scale.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the numerical gradient on a Dask cluster: tcp://HOST:PORT of its scheduler, "
        "or 'local' for a LocalCluster on this machine (needs xgrad[dask])",
    )


def _default_out(dataset: str) -> Path:
    """A new directory ``xgrad-runs/<dataset>-<time>[-n]``, created here.

    Created, not just chosen: ``mkdir`` fails if the name is taken, so two runs started in
    the same second get different directories.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("xgrad-runs") / f"{dataset}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


@contextlib.contextmanager
def _removed_if_unused(out: Path, *, created: bool) -> Iterator[None]:
    """Remove the default run directory again if the run fails before writing into it.

    A refused argument or missing data would otherwise leave an empty
    ``xgrad-runs/<dataset>-<time>`` behind for every failed attempt. ``rmdir`` removes
    only an empty directory, so nothing a run wrote is ever lost.
    """
    try:
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def run(args: argparse.Namespace) -> int:
    from xgrad._rundir import sigterm_as_interrupt
    from xgrad.errors import ArgumentError
    from xgrad.training import TrainConfig, train

    if args.resume and not args.out:
        raise ArgumentError("--resume needs --out DIR, the directory of the run to continue")
    out = Path(args.out) if args.out else _default_out(args.dataset)
    # SIGTERM (kill, systemd, a batch scheduler) stops the run like Ctrl-C: the checkpoint
    # stays, the lock is released, and the message says how to resume.
    from xgrad.workers import cli_workers

    with (
        sigterm_as_interrupt(),
        _removed_if_unused(out, created=not args.out),
        cli_workers(args.workers, args.scheduler) as workers,
    ):
        result = train(
            TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}),
            data_dir=args.data_dir,
            download=not args.no_download,
            out=out,
            resume=args.resume,
            plot=not args.no_plot,
            quiet=args.quiet,
            workers=workers,
        )
    h = result.history
    cfg = h["config"]
    acc = f"test accuracy {result.test_acc:.4f}" if result.test_acc is not None else "done"
    print(
        f"{acc} after {h['iterations_done']} iterations ({cfg['dataset']}, {cfg['backend']}, "
        f"{cfg['dtype']}, {h['timings']['train_s']:.1f} s training); files in {out}"
    )
    return 0
