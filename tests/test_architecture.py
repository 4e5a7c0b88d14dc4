"""The house stays the shape it was designed to be: three tiers, imports only downward, no import cycles, and
public functions documented with their arguments and results."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    """``[tool.importlinter]`` in pyproject.toml: the tier layers and the no-diffusers rule of tiers 1-2."""
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_no_import_cycles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("fastdit", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", ["apply", "remove", "stats", "calibrate", "build_layout", "attention",
                                  "TokenGrid", "BlockLayout", "TokenOrder"])
def test_public_api_documents_its_arguments_and_result(name):
    import fastdit

    doc = inspect.getdoc(getattr(fastdit, name)) or ""
    assert "Args:" in doc, f"fastdit.{name} has no Args: section"
    if not inspect.isclass(getattr(fastdit, name)):
        assert "Returns:" in doc, f"fastdit.{name} has no Returns: section"


def test_no_public_name_shadows_a_module():
    """``fastdit.X`` is one thing: never both a function and the module that defines it."""
    import importlib
    import pkgutil

    import fastdit

    for info in pkgutil.walk_packages(fastdit.__path__, "fastdit."):
        if "." not in info.name[len("fastdit."):] and info.ispkg:
            package = importlib.import_module(info.name)
            for name in getattr(package, "__all__", ()):
                value = getattr(package, name)
                assert not (inspect.isroutine(value) or inspect.isclass(value)) or \
                    importlib.util.find_spec(f"{info.name}.{name}") is None, \
                    f"{info.name}.{name} is both a public {type(value).__name__} and a module"
    for name in fastdit.__all__:
        assert importlib.util.find_spec(f"fastdit.{name}") is None, f"fastdit.{name} is also a module"
