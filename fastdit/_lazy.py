"""Package attributes imported on first use, so importing the package costs nothing.

The command line imports ``fastdit.cli`` through the ``fastdit`` package; with eager re-exports that import
pulled in torch and diffusers (seconds) before the CLI could check an argument or catch a Ctrl-C.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["make_lazy"]


class LazyPackage(types.ModuleType):
    """A package whose public names are imported from their submodules when first read. No public name is
    also a submodule's, so importing a submodule never hides one."""

    def __getattr__(self, name: str) -> Any:
        exports = self.__dict__["_lazy_exports"]
        package = self.__name__
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        elif importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        super().__setattr__(name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__["_lazy_exports"]})


def make_lazy(package: str, exports: dict[str, str]) -> None:
    """Make ``package`` (call from its ``__init__``) a :class:`LazyPackage`; ``exports`` maps each public name
    to the submodule, relative and without the dot, that defines it."""
    module = sys.modules[package]
    module.__dict__["_lazy_exports"] = exports
    module.__class__ = LazyPackage
