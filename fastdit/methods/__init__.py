"""Sparse attention methods: pure functions from a token order (and, for dynamic methods, q and k) to a layout.

One file per method (``radial.py``, ``grat.py``, ``pyramid.py``, ``vmoba.py``, ``sol.py``, ``svg2.py``,
``dense.py``), each defining a :class:`Method`: a frozen options dataclass (the knobs, their defaults and
validation), the token orders it is defined on (the published one first) and a function returning a block mask
over the order's video blocks (SVG2's with the per-head orders, computed from q and k, that its blocks are cut
from).
``registry.py`` is the table of methods; ``build.py`` turns a method's mask into a :class:`~fastdit.BlockLayout`.
"""

from fastdit.methods.base import DEFAULT_BLOCK_SIZE, HeadSlice, Method
from fastdit.methods.build import (
                                   build_layout,
                                   check_order,
                                   clear_layout_cache,
                                   layout_order,
                                   make_head_layout,
                                   make_layout,
                                   parse_options,
)
from fastdit.methods.registry import available_methods, get_method, register

__all__ = ["Method", "HeadSlice", "DEFAULT_BLOCK_SIZE", "register", "get_method", "available_methods",
           "build_layout", "parse_options", "check_order", "make_layout", "make_head_layout", "layout_order",
           "clear_layout_cache"]
