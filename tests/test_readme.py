"""The README's GPU example runs as written, with "cupy" swapped for each matrix row."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

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
