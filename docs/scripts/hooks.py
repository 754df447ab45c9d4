"""mkdocs hooks: run the docs' scripts at build time and put their output into the pages.

Every figure and every printed result on the book pages and in the numerical
differentiation guide comes from running ``docs/examples/*.py`` and ``docs/scripts/*.py``
during the build (nothing is pasted, nothing generated is committed):

* ``<!-- output: NAME -->`` in a page becomes a ``text`` block with the standard output of
  script ``NAME``;
* the figures the scripts write are added to the site under ``img/``.

Environment: ``XGRAD_DOCS_BACKEND`` (default numpy) is the backend the scripts run on;
``XGRAD_DOCS_ITERS``, ``XGRAD_DOCS_DATASET`` and ``XGRAD_DOCS_DATA_DIR`` shorten or redirect
the training example (the test suite builds with a few iterations); with
``XGRAD_DOCS_OUTPUTS=DIR`` each script's output is also saved as ``DIR/NAME.txt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from examples_table import EXAMPLES  # noqa: E402  (the one table of the docs' scripts)

SCRIPTS = {name: script for name, (script, _) in EXAMPLES.items()}

# Commands whose output a page shows: <!-- output: NAME --> as for the scripts.
COMMANDS = {
    "xgrad_train_help": ["-m", "xgrad.cli", "train", "--help"],
}

_state: dict[str, Any] = {}


def _training_args() -> list[str]:
    """Train on MNIST as the book does, or on Fashion-MNIST where only that is on disk."""
    dataset = os.environ.get("XGRAD_DOCS_DATASET")
    if not dataset:
        from xgrad.datasets import find_files

        dataset = "mnist"
        if find_files("mnist") is None and find_files("fashion-mnist") is not None:
            dataset = "fashion-mnist"
    args = ["--dataset", dataset]
    if os.environ.get("XGRAD_DOCS_DATA_DIR"):
        args += ["--data-dir", os.environ["XGRAD_DOCS_DATA_DIR"]]
    return args


def on_pre_build(config: Any) -> None:
    root = Path(config.config_file_path).parent
    tmp = Path(tempfile.mkdtemp(prefix="xgrad-docs-build-"))
    img = tmp / "img"
    img.mkdir()
    env = {
        **os.environ,
        "XGRAD_DOCS_OUT": str(img),
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "COLUMNS": "100",
    }
    backend = os.environ.get("XGRAD_DOCS_BACKEND", "numpy")
    procs = {}
    for name, script in SCRIPTS.items():
        extra = _training_args() if name == "ch4_train_neuralnet" else []
        procs[name] = subprocess.Popen(
            [sys.executable, str(root / script), backend, *extra],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, args in COMMANDS.items():
        procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outputs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            what = SCRIPTS.get(name) or " ".join(COMMANDS[name])
            raise PluginError(f"docs: {what} failed ({proc.returncode}):\n{stderr}")
        outputs[name] = stdout
    keep = os.environ.get("XGRAD_DOCS_OUTPUTS")
    if keep:  # for the tests: each script's output as NAME.txt
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name, text in outputs.items():
            (Path(keep) / f"{name}.txt").write_text(text, encoding="utf-8")
    _state.update(tmp=tmp, img=img, outputs=outputs)


def on_files(files: Files, config: Any) -> Files:
    img = _state["img"]
    for path in sorted(img.iterdir()):
        files.append(
            File(
                f"img/{path.name}",
                src_dir=str(img.parent),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    if files.get_file_from_path("benchmarks.md") is None:
        # docs/benchmarks.md is assembled separately; until it exists, list the tables.
        pages = sorted(
            f.src_uri
            for f in files
            if f.src_uri.startswith("benchmarks/") and f.src_uri.endswith(".md")
        )
        links = "\n".join(f"- [{Path(p).stem}]({p})" for p in pages) or "(none yet)"
        content = (
            f"# Benchmarks\n\nResults tables written by the scripts in `benchmarks/`:\n\n{links}\n"
        )
        files.append(File.generated(config, "benchmarks.md", content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    outputs = _state["outputs"]
    lines = []
    for line in markdown.split("\n"):
        stripped = line.strip()
        if stripped.startswith("<!-- output:") and stripped.endswith("-->"):
            name = stripped[len("<!-- output:") : -3].strip()
            if name not in outputs:
                raise PluginError(f"{page.file.src_uri}: no docs script called {name!r}")
            lines += ["```text", outputs[name].rstrip("\n"), "```"]
        else:
            lines.append(line)
    return "\n".join(lines)


def on_post_build(config: Any) -> None:
    tmp = _state.pop("tmp", None)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
