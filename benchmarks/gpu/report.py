"""gpu.md and gpu.json: the page rendered from a run's record, written atomically, and saved
records merged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from _common import markdown_table, write_atomic

from . import TOPICS


def render(result: dict[str, Any]) -> str:
    """gpu.md from a run's record: the environment, then each part measured, in a fixed order."""
    parts = result["parts"]
    lines = _header(result)
    for topic in sorted(TOPICS, key=lambda t: t.key):
        if topic.key in parts:
            lines += topic.render(parts[topic.key])
    return "\n".join(lines) + "\n"


def _header(result: dict[str, Any]) -> list[str]:
    env = result["env"]
    v = env.get("versions", {})
    gpu = "; ".join(env.get("nvidia_smi") or []) or "no nvidia-smi"
    # Records written before the commit was recorded render as they always did.
    commit = f" at xgrad commit {env['revision']}" if "revision" in env else ""
    return [
        "# GPU: training throughput, numerical gradient, the book's chapter 4 experiment",
        "",
        f"`benchmarks/bench_gpu.py`{commit}, {env['date']}. GPU (nvidia-smi: name, driver,"
        f" memory, max SM clock): {gpu}. Python {env['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f". NumPy baseline: {env['cpu_count']}-core {env['cpu']} host,"
        f" {env['numpy_threads']} BLAS thread(s). Total run {result.get('elapsed_s', 0):.0f} s.",
        "",
        *markdown_table(
            ["backend", "library", "version", "device", "default dtype"],
            [
                [s, *(str(i[k]) for k in ("library", "version", "device_name", "default_dtype"))]
                for s, i in env["backends"].items()
            ],
        ),
    ]


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``out`` (markdown) and the raw record as JSON next to it."""
    write_atomic(out, render(result))
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def merge(paths: list[str]) -> dict[str, Any]:
    """Saved results combined: the parts of later files replace those of earlier ones."""
    result: dict[str, Any] = {"parts": {}, "elapsed_s": 0.0}
    for p in paths:
        data = json.loads(Path(p).read_text())
        result.setdefault("env", data["env"])
        result["env"]["backends"] = {**result["env"]["backends"], **data["env"]["backends"]}
        result["parts"].update(data["parts"])
        result["elapsed_s"] += data.get("elapsed_s", 0.0)
    return result
