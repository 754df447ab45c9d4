"""Implicit synchronization and host transfers: whether a training step, an SGD update and a
numerical gradient with inputs already on the device run without an implicit device
synchronization or host transfer (CuPy ``allow_synchronize(False)``, torch sync debug mode
"error", JAX ``transfer_guard``)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from _common import markdown_table, mnist_like

from xgrad.backends import Backend
from xgrad.nn import TwoLayerNet
from xgrad.optim import SGD

from .base import Topic, error, short, synchronize


@contextlib.contextmanager
def _torch_sync_errors() -> Iterator[None]:
    import torch

    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def sync_guard(b: Backend) -> Any:
    """A context in which ``b``'s library raises on an implicit sync or transfer, or None.

    Library specifics on purpose: this is a diagnostic of the library's own debug modes, not
    a code path of xgrad.
    """
    if b.library == "cupy":
        import cupyx

        # CuPy warns that the detection is not exhaustive: a miss is possible, a false
        # alarm is not, which is what this probe needs.
        warnings.filterwarnings("ignore", message="cupyx.allow_synchronize will be removed")
        return cupyx.allow_synchronize(False)
    if b.library == "torch" and b.device_label.startswith("cuda"):
        warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype")
        return _torch_sync_errors()
    if b.library == "jax" and not b.device_label.startswith("cpu"):
        import jax

        return jax.transfer_guard("disallow")
    return None


class SyncProbe(Topic):
    """The probe: each operation once unguarded, then under the library's guard."""

    key = "sync"
    letter = "s"

    def setup(self, backends: list[Backend]) -> None:
        self.x, self.labels = mnist_like(100, seed=1)

    def measure(self, backends: list[Backend], done: dict[str, Any]) -> Any:
        return [self._probe_one(b) for b in backends]

    def _probe_one(self, b: Backend) -> dict[str, Any]:
        row: dict[str, Any] = {"spec": b.spec}
        if sync_guard(b) is None:
            row["note"] = "no sync/transfer guard for this library or device"
            return row
        dtype = "float64" if b.supports_float64 else "float32"
        net = TwoLayerNet(784, 50, 10, activation="relu", backend=b, dtype=dtype, seed=0)
        xb = b.asarray(self.x, dtype=dtype)
        tb = b.asarray(np.eye(10)[self.labels], dtype=dtype)
        lb = b.asarray(self.labels.astype(np.int64))
        opt = SGD(lr=0.1)
        grads = net.gradient(xb, tb)
        checks: dict[str, Callable[[], Any]] = {
            "loss_and_gradient (one-hot t)": lambda: net.loss_and_gradient(xb, tb),
            "loss_and_gradient (label t)": lambda: net.loss_and_gradient(xb, lb),
            "SGD.update": lambda: opt.update(net.params, grads),
            "numerical_gradient": lambda: net.numerical_gradient(xb, tb, chunk_size=39250),
        }
        for what, fn in checks.items():
            try:
                fn()  # unguarded first: compilation and caches are not the question
                synchronize(b, *net.params.values())
                with sync_guard(b):
                    fn()
                synchronize(b, *net.params.values())
                row[what] = "ok"
            except Exception as exc:
                row[what] = error(exc)
            self.log(f"(sync) {b.spec} {what}: {row[what]}")
        return row

    @classmethod
    def render(cls, record: Any) -> list[str]:
        rows = record
        checks = list(dict.fromkeys(k for r in rows for k in r if k not in ("spec", "note")))
        checks = checks or ["note"]
        lines = [
            "",
            "## Implicit synchronization / host transfers",
            "",
            "Each operation, inputs already on the device, run under the library's guard (CuPy"
            " `allow_synchronize(False)`, torch `set_sync_debug_mode('error')`, JAX"
            " `transfer_guard('disallow')`): `ok` means no implicit device synchronization"
            " or transfer.",
            "",
        ]
        return lines + markdown_table(
            ["backend", *checks],
            [[short(r["spec"]), *(r.get(k, r.get("note", "-")) for k in checks)] for r in rows],
        )
