"""The README's GPU example runs as written, with "cupy" swapped for each matrix row."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import xgrad
from xgrad.nn import TwoLayerNet

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example(backend: xgrad.Backend) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert '"cupy"' in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace('"cupy"', repr(backend.spec)), {})
    loss_line, grad_line = out.getvalue().splitlines()
    rng = np.random.default_rng(0)
    x, t = rng.random((100, 784)), rng.integers(0, 10, 100)
    expected_loss = float(TwoLayerNet(784, 50, 10, seed=0).loss(x, t))
    assert abs(float(loss_line.split()[0]) - expected_loss) <= 1e-12 * expected_loss
    assert grad_line == "[6. 8.]"


def _commands(text: str) -> list[str]:
    """The commands of the sh blocks, in order, from the first one that installs packages."""
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
        for line in block.strip().splitlines()
    ]
    start = next(i for i, line in enumerate(lines) if "apt-get" in line)
    return lines[start:]


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("with_sudo", [True, False])
def test_first_command_runs_with_and_without_sudo(tmp_path: Path, with_sudo: bool) -> None:
    # Before: the command began with `sudo`, which aborts the chain where sudo is missing
    # (a root shell in a container). Every program it calls is a stub that logs its call;
    # PATH holds the stubs only, so `command -v sudo` finds sudo exactly when stubbed.
    first = _commands(README.read_text())[0]
    if not Path("/bin/sh").exists() or not Path("/bin/mkdir").exists():
        pytest.skip("needs /bin/sh and /bin/mkdir")
    stubs, venv_bin, log = tmp_path / "bin", tmp_path / "work" / ".venv" / "bin", tmp_path / "log"
    stubs.mkdir()
    (tmp_path / "work").mkdir()
    logger = f'echo "${{0##*/}} $*" >> {log}\n'
    for name in ("apt-get", "pip", "xgrad"):
        _stub(stubs / name, logger)
    if with_sudo:
        _stub(stubs / "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    _stub(
        stubs / "python3",
        logger
        + f"/bin/mkdir -p {venv_bin}\necho 'PATH=\"{venv_bin}:$PATH\"' > {venv_bin}/activate\n",
    )
    proc = subprocess.run(
        ["/bin/sh", "-c", first],
        cwd=tmp_path / "work",
        env={"PATH": str(stubs), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    sudo = ["sudo apt-get update", "sudo apt-get install -y dataset-fashion-mnist python3-venv"]
    apt = ["apt-get update", "apt-get install -y dataset-fashion-mnist python3-venv"]
    expected = [
        *([sudo[0], apt[0], sudo[1], apt[1]] if with_sudo else apt),
        "python3 -m venv .venv",
        "pip install -e .[plot]",
        "xgrad train --dataset fashion-mnist",
    ]
    assert calls == expected


def test_index_page_has_the_readme_commands() -> None:
    index = README.parent / "docs" / "index.md"
    assert _commands(index.read_text())[:2] == _commands(README.read_text())[:2]
    assert _commands(README.read_text())[1] == 'pip install -e ".[test]" && pytest'
