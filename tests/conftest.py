"""xgrad's own test needs on top of its pytest plugin (``xgrad/pytest_plugin.py``).

The backend matrix (the ``backend``, ``xp``, ``dtype`` and ``jit`` fixtures, row selection
with ``--xgrad-backend`` or ``XGRAD_TEST_BACKENDS``, row skips folded one line per reason)
comes from the plugin, which installing xgrad registers for every project. This file adds
what only xgrad's suite wants: ``--backend`` as the old spelling of ``--xgrad-backend``, and
JAX in float64 from the start (tests that call JAX directly, outside the matrix, expect it).
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        dest="xgrad_backend",
        help="xgrad's suite: the same as --xgrad-backend NAME[:DEVICE]",
    )


# Tests that compare NumPy results on purpose inside a matrix test (a NumPy-backed Variable,
# a net moved to NumPy, host copies): exempt from assert_close's namespace check.
_HOST_RESULTS = {
    "tests/test_backends.py::test_asarray_from_other_backend_goes_through_host",
    "tests/test_dezero.py::test_numpy_operands_defer_to_variable",
    "tests/test_nn.py::test_state_dict_round_trip",
    "tests/test_optim.py::test_book_optimizer_compare",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.partition("[")[0] in _HOST_RESULTS:
            item.add_marker(pytest.mark.xgrad_any_namespace)
