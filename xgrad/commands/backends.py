"""``xgrad backends``: every registered backend, usable or why not, for bug reports."""

from __future__ import annotations

import argparse
import contextlib
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


def run(args: argparse.Namespace) -> int:
    import xgrad

    rows = collect()
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "xgrad": xgrad.__version__,
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "backends": rows,
                },
                indent=2,
            )
        )
        return 0
    print(f"xgrad {xgrad.__version__}, Python {platform.python_version()}, {platform.platform()}")
    cols = ["backend", "status", "version", "devices", "default_dtype", "device_name"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
        if r["reason"]:
            print(f"    {r['reason']}")
    sys.stdout.flush()
    return 0
