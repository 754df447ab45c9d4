"""The public API: ``xgrad.__all__`` is exactly the public names, and type checkers see them."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import xgrad

# Modules that are entry points (the command line, the pytest plugin), not API.
ENTRY_POINTS = {"cli", "commands", "pytest_plugin"}


def public_modules() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(xgrad.__path__) if not m.name.startswith("_")}


def test_all_lists_exactly_the_public_names() -> None:
    for name in public_modules():
        importlib.import_module(f"xgrad.{name}")  # binds every submodule as an attribute
    # (pytest's assertion rewriting adds '@py_builtins' and such to the plugin's package.)
    names = {n for n in dir(xgrad) if n.isidentifier() and not n.startswith("_")}
    assert names - ENTRY_POINTS == set(xgrad.__all__)
    assert public_modules() - ENTRY_POINTS <= set(xgrad.__all__)
    assert len(xgrad.__all__) == len(set(xgrad.__all__))
    for name in xgrad.__all__:
        assert getattr(xgrad, name) is not None, name


def test_every_public_module_defines_its_all() -> None:
    for name in sorted(public_modules() - ENTRY_POINTS):
        module = importlib.import_module(f"xgrad.{name}")
        assert hasattr(module, "__all__"), name
        for public in module.__all__:
            assert hasattr(module, public), f"xgrad.{name}.{public}"
    # Lazy names resolve to objects of public modules (no public name lives only in a
    # private one).
    for name, where in xgrad._LAZY.items():
        assert not where.rsplit(".", 1)[-1].startswith("_"), (name, where)
        assert name in importlib.import_module(where).__all__, (name, where)


def test_type_checkers_see_every_lazy_name() -> None:
    tree = ast.parse(inspect.getsource(xgrad))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "_TYPE_CHECKING"
    )
    seen: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        for alias in node.names:
            seen[alias.name] = node.module
    assert {k: v for k, v in seen.items() if v != "xgrad"} == xgrad._LAZY
    assert {k for k, v in seen.items() if v == "xgrad"} == set(xgrad._SUBMODULES)
