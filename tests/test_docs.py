"""The documentation cannot drift from the code: its scripts, its pages and its build.

* every script in ``docs/examples/`` and ``docs/scripts/error_vs_step.py`` runs on NumPy and
  on array-api-strict's second device (which catches arrays created on the wrong device),
  writes its figures into a temporary directory, and prints the books' numbers (the values
  printed in *Deep Learning from Scratch* ch. 4 and DeZero step 4, not our own output);
* every page's ``pycon`` blocks run as doctests and its ``python`` blocks are executed
  (``docs/scripts/check_pages.py``, one fresh process per page);
* ``mkdocs build --strict`` succeeds (skipped where the ``docs`` extra is not installed).
  The build runs every script itself, so it runs them on array-api-strict and the direct
  runs on that backend are skipped where the build test runs.

Nothing is downloaded: the training example runs on a small synthetic data set in the
MNIST file format, for a few iterations.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xgrad
from xgrad.datasets import DATASETS, write_idx

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _examples() -> dict[str, tuple[str, list[str]]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "examples_table", DOCS / "scripts" / "examples_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXAMPLES


# Script -> figures it must write (the table the docs build runs, docs/scripts/examples_table.py).
SCRIPTS = dict(_examples().values())
OTHER_BACKEND = "array_api_strict:device1"
BACKENDS = ["numpy", OTHER_BACKEND]
TRAIN_ITERS = "30"
PAGES = sorted(
    str(p.relative_to(ROOT))
    for p in DOCS.rglob("*.md")
    if p.relative_to(DOCS).parts[0] not in ("benchmarks", "examples", "scripts")
)
FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _usable(spec: str) -> bool:
    try:
        xgrad.get_backend(spec)
    except (ImportError, ValueError):
        return False
    return True


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XGRAD_")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-format data set (class-dependent blobs), where load_mnist looks first."""
    root = tmp_path_factory.mktemp("data")
    spec = DATASETS["mnist"]
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    for prefix, n in (("train", 600), ("test", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        noise = rng.integers(-60, 61, size=(n, 28, 28))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        write_idx(root / spec.files[f"{prefix}_images"].name, images)
        write_idx(root / spec.files[f"{prefix}_labels"].name, labels)
    return root


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(FLOAT, line.split(":", 1)[-1])]


def _line(stdout: str, start: str) -> str:
    for line in stdout.splitlines():
        if line.strip().startswith(start):
            return line
    raise AssertionError(f"no line starting with {start!r} in:\n{stdout}")


def _check_book_numbers(script: str, out: str) -> None:
    """The numbers the books print (h = 1e-4 reproduces them bit for bit)."""
    name = Path(script).stem
    if name == "ch4_numerical_diff":
        for value in (
            "0.1999999999990898",
            "0.2999999999986347",
            "6.00000000000378",
            "7.999999999999119",
        ):
            assert value in out, value
        # Without h: closer to the exact 0.2 and 0.3 than the book's step.
        auto = [_numbers(_line(out, f"numerical_diff(function_1, {x})"))[-2] for x in (5, 10)]
        assert abs(auto[0] - 0.2) < 1e-12 and abs(auto[1] - 0.3) < 1e-12
    elif name == "ch4_gradient":
        for point, grad in (("[3.0, 4.0]", [6, 8]), ("[0.0, 2.0]", [0, 4]), ("[3.0, 0.0]", [6, 0])):
            values = _numbers(_line(out, f"numerical_gradient(function_2, {point})").split("=")[1])
            np.testing.assert_allclose(values, grad, atol=1e-7)
        np.testing.assert_allclose(_numbers(_line(out, "integer input")), [6, 8], atol=1e-7)
        # The largest arrow: |grad| = 2 * |(-2, -2) ... (2.25, 2.25)|, at (2.25, 2.25).
        assert abs(_numbers(_line(out, "largest arrow"))[0] - 2 * math.hypot(2.25, 2.25)) < 1e-6
    elif name == "ch4_gradient_descent":
        np.testing.assert_allclose(
            _numbers(_line(out, "lr=0.1:")), [-6.11110793e-10, 8.14814391e-10], rtol=1e-6
        )
        np.testing.assert_allclose(
            _numbers(_line(out, "lr=1e-10:")), [-2.99999994, 3.99999992], rtol=1e-8
        )
        # lr=10 multiplies x by -19 per step: x_100 = 19**100 * (-3, 4) = (-2.3e128, 3e128)
        # where the gradient is right. The book's run stops near 1e13, where its step no
        # longer changes x; xgrad's goes on (the steps' rounding perturbs it by some %).
        last = _numbers(_line(out, "lr=10:"))
        np.testing.assert_allclose(last, [-3 * 19.0**100, 4 * 19.0**100], rtol=0.5)
        assert "StepSizeWarning" in out
        assert "DivergenceError at step" in out
    elif name == "ch4_simple_net":
        np.testing.assert_allclose(
            _numbers(_line(out, "predict:")), [1.05414809, 0.63071653, 1.1328074], atol=1e-8
        )
        assert int(_numbers(_line(out, "argmax:"))[0]) == 2
        # The book's W is printed to 8 digits: its loss and dW are reproduced to ~1e-8.
        assert abs(_numbers(_line(out, "loss:"))[0] - 0.92806853663411326) < 1e-8
        block = out.split("dW (h=1e-4):", 1)[1]
        dW = [float(v) for v in re.findall(FLOAT, block)]
        book = [0.21924763, 0.14356247, -0.36281009, 0.32887144, 0.2153437, -0.54421514]
        np.testing.assert_allclose(dW, book, atol=2e-8)
    elif name == "dezero_step4":
        assert "Square at 2.0:      4.000000000004" in out
        assert "composite at 0.5:   3.2974426293330694" in out
        exact = 4 * 0.5 * math.exp(2 * 0.5**2)
        assert abs(_numbers(_line(out, "backward():"))[0] - exact) < 1e-12
        assert (
            abs(_numbers(_line(out, "xgrad, default h:").replace("xgrad, default h", ""))[0] - 4.0)
            < 1e-10
        )
    elif name == "ch4_train_neuralnet":
        for key in ("W1", "b1", "W2", "b2"):
            assert _numbers(_line(out, f"{key}: max |numerical - backprop|"))[0] < 1e-8
        assert f"after {TRAIN_ITERS} iterations" in out
        assert _line(out, "train acc, test acc |")
    elif name == "error_vs_step":
        rows = {
            tuple(line.split()[:2]): [float(v) for v in line.split()[2:]]
            for line in out.splitlines()
            if line.startswith(("float64", "float32"))
        }
        assert len(rows) == 8
        for dtype in ("float64", "float32"):
            book, default = rows[(dtype, "central")][:2]
            assert default < book / 10, (dtype, book, default)  # the guide's claim
        assert rows[("float64", "complex")][1] <= 1e-15


def _docs_extra_missing() -> list[str]:
    return [
        m
        for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
        if importlib.util.find_spec(m) is None
    ]


@pytest.mark.parametrize("spec", BACKENDS)
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_example_script(script: str, spec: str, data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the examples draw the books' figures")
    if not _usable(spec):
        pytest.skip(f"backend {spec} is not usable here")
    if spec == OTHER_BACKEND and not _docs_extra_missing():
        pytest.skip(f"run on {spec} by test_mkdocs_build_strict")
    out_dir = tmp_path / "figures"
    extra = []
    if script.endswith("ch4_train_neuralnet.py"):
        extra = ["--iters", TRAIN_ITERS, "--dataset", "mnist", "--data-dir", str(data_dir)]
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / script), spec, *extra],
        cwd=tmp_path,
        env=_env(XGRAD_DOCS_OUT=str(out_dir)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"backend: {xgrad.get_backend(spec).spec}" in proc.stdout or "error_vs_step" in script
    for figure in SCRIPTS[script]:
        assert (out_dir / figure).stat().st_size > 1000, figure
    _check_book_numbers(script, proc.stdout)


# Runs a script with matplotlib unimportable, as where the optional `plot` extra is missing.
_WITHOUT_MATPLOTLIB = """
import os, runpy, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib' (blocked by the test)")
sys.meta_path.insert(0, _Block())
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_example_script_without_matplotlib(script: str, data_dir: Path, tmp_path: Path) -> None:
    # Before: every script with figures began with `import matplotlib` and died there.
    out_dir = tmp_path / "figures"
    extra = []
    if script.endswith("ch4_train_neuralnet.py"):
        extra = ["--iters", TRAIN_ITERS, "--dataset", "mnist", "--data-dir", str(data_dir)]
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            _WITHOUT_MATPLOTLIB,
            str(ROOT / script),
            "numpy",
            *extra,
        ],
        cwd=tmp_path,
        env=_env(XGRAD_DOCS_OUT=str(out_dir)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    if SCRIPTS[script]:
        assert 'matplotlib is not installed (pip install -e ".[plot]")' in proc.stderr
        assert "figure" not in proc.stderr.replace("figures are skipped", "")
    assert not out_dir.exists() or not any(out_dir.iterdir())
    _check_book_numbers(script, proc.stdout)


def test_every_example_is_tested() -> None:
    scripts = {
        str(p.relative_to(ROOT)) for p in (DOCS / "examples").glob("*.py") if p.name[0] != "_"
    }
    assert scripts <= set(SCRIPTS), scripts - set(SCRIPTS)


@pytest.mark.parametrize("page", PAGES)
def test_page_code_blocks(page: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(DOCS / "scripts" / "check_pages.py"), page],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_check_pages_catches_wrong_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```pycon\n>>> 1 + 1\n3\n```\n\n<!-- docs-test: skip -->\n"
        "```python\nraise SystemExit(1)\n```\n\n```python\nx = 2\n```\n"
        "```pycon\n>>> x\n2\n```\n"
    )
    proc = subprocess.run(
        [sys.executable, str(DOCS / "scripts" / "check_pages.py"), str(page)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "3 blocks run, 1 skipped, 1 failed" in proc.stdout


def test_mkdocs_build_strict(data_dir: Path, tmp_path: Path) -> None:
    missing = _docs_extra_missing()
    if missing:
        pytest.skip(
            f"the docs extra is not installed (missing {', '.join(missing)}): "
            "pip install -e '.[docs]'"
        )
    if not _usable(OTHER_BACKEND):
        pytest.skip(f"backend {OTHER_BACKEND} is not usable here")
    site, outputs = tmp_path / "site", tmp_path / "outputs"
    env = _env(
        XGRAD_DOCS_ITERS=TRAIN_ITERS,
        XGRAD_DOCS_DATASET="mnist",
        XGRAD_DOCS_DATA_DIR=str(data_dir),
        XGRAD_DOCS_BACKEND=OTHER_BACKEND,
        XGRAD_DOCS_OUTPUTS=str(outputs),
        NO_MKDOCS_2_WARNING="1",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    for figure in {f for figures in SCRIPTS.values() for f in figures}:
        assert (site / "img" / figure).stat().st_size > 1000, figure
    book = (site / "book-ch4" / "index.html").read_text(encoding="utf-8")
    assert "0.1999999999990898" in book  # the scripts' output, inserted by the build
    assert "<!-- output:" not in book
    assert (site / "reference" / "numdiff" / "index.html").exists()
    for script in SCRIPTS:
        out = (outputs / f"{Path(script).stem}.txt").read_text(encoding="utf-8")
        assert "error_vs_step" in script or f"backend: {OTHER_BACKEND}" in out
        _check_book_numbers(script, out)
