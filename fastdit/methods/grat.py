"""GRAT: grouped queries attending a structured set of key groups (training-free).

Contiguous tokens form non-overlapping ``tt × th × tw`` groups (published: 4×8×8 on HunyuanVideo, the
official ``init_local_mask_flex`` in OliverRensu/GRAT), laid out group after group (the ``"tiles"`` order),
so all queries of a group share one key set and a group is a whole number of kernel blocks. Between groups:

* ``crisscross`` (GRAT-X, published default): every key group that shares **any one** group coordinate with
  the query group: the same temporal slab, the same row band or the same column band (three planes through
  the group). On an image (t = 1) the temporal slab is left out, which gives the 2D criss-cross of rows and
  columns (upstream, video only, would keep every group there);
* ``surround`` (GRAT-B): the key groups within ``radius`` groups along every axis;
* ``lines``: fastdit's sparser variant of criss-cross, key groups sharing **two** coordinates (the three
  lines through the group).

Text is always attended (added by the engine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.layout.order import TileOrder
from fastdit.methods.base import Method

_MODES = ("crisscross", "surround", "lines")
PUBLISHED_GROUP = (4, 8, 8)


@dataclass(frozen=True)
class GratOptions:
    """``mode``: ``"crisscross"`` (published), ``"surround"`` or ``"lines"``; ``radius``: groups kept around
    the query group in surround mode, one int for all axes or ``(t, y, x)``. The group shape is the layout's
    tile (``tile=``; default the published 4×8×8, 1×16×16 on images, where the grid has room for it)."""

    mode: str = "crisscross"
    radius: int | tuple[int, int, int] = 1

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"grat mode must be one of {_MODES}, got {self.mode!r}")
        radius = self.radius if isinstance(self.radius, (tuple, list)) else (self.radius,) * 3
        if len(radius) != 3 or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in radius):
            raise ValueError(f"grat radius must be an int >= 0 or three of them (t, y, x), got {self.radius!r}")
        object.__setattr__(self, "radius", radius)


def default_group(grid: TokenGrid, block_size: int, options: GratOptions,
                  layer: int = 0) -> tuple[int, int, int] | None:
    """The published 4×8×8 group (1×16×16 for an image) when the grid holds two of them along every axis it
    splits and a group holds whole kernel blocks, else ``None`` (one block per group, shaped to minimise
    padding): with fewer groups, criss-cross would keep them all."""
    group = PUBLISHED_GROUP if grid.t > 1 else (1, 16, 16)
    fits = all(g == 1 or 2 * g <= n for g, n in zip(group, (grid.t, grid.h, grid.w)))
    return group if fits and (group[0] * group[1] * group[2]) % block_size == 0 else None


def group_mask(tiles: tuple[int, int, int], options: GratOptions, image: bool = False) -> torch.Tensor:
    """``[n_groups, n_groups]`` bool from per-axis relations of group coordinates (broadcast, never S×S);
    ``image``: the grid is one frame."""
    axes = [torch.arange(n) for n in tiles]
    diff = [(a.view(-1, 1) - a.view(1, -1)).abs() for a in axes]  # [n, n] per axis

    def spread(rel: torch.Tensor, axis: int) -> torch.Tensor:  # [n, n] -> broadcastable [t, y, x, t', y', x']
        shape = [1] * 6
        shape[axis], shape[axis + 3] = rel.shape
        return rel.view(shape)

    if options.mode == "surround":
        # a radius past the grid keeps every group, as the grid's own size does (and fits in an int64)
        near = [spread(d <= min(r, n), i) for i, (d, r, n) in enumerate(zip(diff, options.radius, tiles))]
        mask = near[0] & near[1] & near[2]
    else:
        same_t, same_y, same_x = (spread(d == 0, i) for i, d in enumerate(diff))
        if options.mode == "crisscross":
            # an image (t = 1) is one temporal slab: there, sharing it says nothing, rows and columns remain
            mask = (same_y | same_x) if image else (same_t | same_y | same_x)
        else:
            mask = (same_t & same_y) | (same_t & same_x) | (same_y & same_x)
    n = tiles[0] * tiles[1] * tiles[2]
    return mask.expand(*tiles, *tiles).reshape(n, n)


def grat_mask(order: TileOrder, options: GratOptions) -> torch.Tensor:
    """``[1, n_video_blocks, n_video_blocks]``: the group pattern, each group expanded to its kernel blocks."""
    per_group = order.tile_volume // order.block_size
    groups = group_mask(order.tiles, options, image=order.grid.t == 1)
    return groups.repeat_interleave(per_group, 0).repeat_interleave(per_group, 1).unsqueeze(0)


GRAT = Method("grat", GratOptions, grat_mask, orders=("tiles",), shape=default_group,
              summary="grouped queries; criss-cross planes or surrounding groups (GRAT)")
