"""The data of sparse attention: the token grid, token orders, and the CSR block layout every kernel consumes.

``grid.py`` holds :class:`TokenGrid` (the latent video after patchify, with its text tokens), ``order.py`` the
token orders (a permutation of the model's tokens into kernel blocks, with validity for padding), ``head_order.py``
the per-head query and key orders computed from q and k (SVG2) on top of one, ``block.py`` the
:class:`BlockLayout` (CSR over query blocks; no kernel knows which method made it, and it knows no kernel),
``selection.py`` the per-query key groups a layout may carry (:class:`QuerySelection`), and ``padding.py`` how
much of a layout's work falls on padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastdit._lazy import make_lazy

__all__ = ["TokenGrid", "TokenOrder", "RasterOrder", "TileOrder", "GilbertOrder", "ChunkOrder", "make_order",
           "HeadOrder", "BlockLayout", "QuerySelection"]
# imported on first use, so ``fastdit.layout.grid`` (no torch) imports alone
_OWN_FILE = {"TokenGrid": "grid", "BlockLayout": "block", "HeadOrder": "head_order", "QuerySelection": "selection"}
make_lazy(__name__, {**_OWN_FILE, **{name: "order" for name in __all__ if name not in _OWN_FILE}})

if TYPE_CHECKING:
    from fastdit.layout.block import BlockLayout
    from fastdit.layout.grid import TokenGrid
    from fastdit.layout.head_order import HeadOrder
    from fastdit.layout.order import ChunkOrder, GilbertOrder, RasterOrder, TileOrder, TokenOrder, make_order
    from fastdit.layout.selection import QuerySelection
