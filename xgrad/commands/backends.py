"""``xgrad backends``: every registered backend, usable or why not, for bug reports."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys

HELP = "list registered backends: available or why not, versions, devices, dtypes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def collect() -> list[dict[str, str]]:
    """One row per registered backend (imports each installed library to probe it)."""
    from importlib.metadata import PackageNotFoundError, version

    from xgrad.backends import get_backend, registered_backends

    rows = []
    for name, entry in sorted(registered_backends().items()):
        row = {
            "backend": name,
            "status": "available",
            "version": "-",
            "devices": "-",
            "default_dtype": "-",
            "device_name": "-",
            "reason": "",
        }
        reason = entry.unavailable_reason()
        if reason is None:
            try:
                b = get_backend(name)
                info = b.info()
                row["version"] = info["version"]
                row["default_dtype"] = info["default_dtype"]
                row["device_name"] = info["device_name"]
                row["devices"] = ", ".join(entry.devices()) or b.device_label
                if not b.supports_float64:
                    row["reason"] = b.float64_error or ""
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            row["status"] = "unavailable"
            row["reason"] = reason
            if entry.library:
                with contextlib.suppress(PackageNotFoundError):
                    row["version"] = version(entry.library.replace("_", "-"))
        rows.append(row)
    return rows


def default_backend() -> dict[str, str]:
    """Which backend calls without arrays use, where that choice comes from, or the error.

    A bad ``XGRAD_BACKEND`` is reported here rather than hidden: it is what users paste.
    """
    from xgrad.backends._registry import ENV_VAR, default_spec

    env = os.environ.get(ENV_VAR)
    row = {"spec": "", "source": "", "env": "" if env is None else env, "error": ""}
    try:
        name, device, source = default_spec()
    except ValueError as exc:
        row["error"] = str(exc)
        return row
    row["spec"] = name if device is None else f"{name}:{device}"
    row["source"] = source
    return row


def run(args: argparse.Namespace) -> int:
    import xgrad

    rows = collect()
    default = default_backend()
    status = 1 if default["error"] else 0
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "xgrad": xgrad.__version__,
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "default": default,
                    "backends": rows,
                },
                indent=2,
            )
        )
        if default["error"]:
            print(f"xgrad backends: error: {default['error']}", file=sys.stderr)
        return status
    print(f"xgrad {xgrad.__version__}, Python {platform.python_version()}, {platform.platform()}")
    if default["error"]:
        print(f"default backend: ERROR: {default['error']}")
    else:
        print(f"default backend: {default['spec']} ({default['source']})")
    cols = ["backend", "status", "version", "devices", "default_dtype", "device_name"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
        if r["reason"]:
            print(f"    {r['reason']}")
    sys.stdout.flush()
    if default["error"]:
        print(f"xgrad backends: error: {default['error']}", file=sys.stderr)
    return status
