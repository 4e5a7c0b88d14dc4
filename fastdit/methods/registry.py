"""The table of sparse attention methods: one line per method file.

Adding a method is one new file in this package that defines a :class:`~fastdit.methods.base.Method`, plus
its line in ``_METHODS`` below. Code outside fastdit registers its own with :func:`register`.
"""

from __future__ import annotations

from fastdit.methods import dense, grat, pyramid, radial, sol, svg2, vmoba
from fastdit.methods.base import Method

__all__ = ["register", "get_method", "available_methods"]

_METHODS: dict[str, Method] = {m.name: m for m in (
    dense.DENSE,
    radial.RADIAL,
    grat.GRAT,
    pyramid.PYRAMID,
    vmoba.VMOBA,
    sol.SOL,
    svg2.SVG2,
)}


def register(method: Method) -> Method:
    """Make ``method`` available by its name to ``fastdit.apply``, ``build_layout`` and the command line (a
    method of the same name is replaced). Returns ``method``."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a fastdit.methods.Method, got {type(method).__name__}")
    _METHODS[method.name] = method
    return method


def available_methods() -> list[str]:
    """The names of every registered method, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """The registered method called ``name``; a ``ValueError`` lists the available ones."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}")
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None
