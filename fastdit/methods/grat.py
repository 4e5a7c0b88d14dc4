"""GRAT: grouped queries attending a structured key set (training-free).

Contiguous tokens form non-overlapping groups, and a group is exactly one kernel tile, so all queries of a
block share one key set. ``surround`` keeps the tiles within a per-axis radius of the group; ``crisscross``
keeps the tiles on the group's row and column of its frame and on its temporal line (for images, t = 1, this
is the classic criss-cross). Text is always attended (added by the engine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Tiling
from . import Method, register

_MODES = ("crisscross", "surround")


@dataclass(frozen=True)
class GratOptions:
    """``mode``: ``"crisscross"`` or ``"surround"``; ``radius``: tiles kept around the group in surround mode,
    one int for all axes or ``(t, y, x)``."""

    mode: str = "crisscross"
    radius: int | tuple[int, int, int] = 1

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"grat mode must be one of {_MODES}, got {self.mode!r}")
        radius = (self.radius,) * 3 if isinstance(self.radius, int) else tuple(self.radius)
        if len(radius) != 3 or any((not isinstance(r, int)) or r < 0 for r in radius):
            raise ValueError(f"grat radius must be an int >= 0 or three of them (t, y, x), got {self.radius!r}")
        object.__setattr__(self, "radius", radius)


def grat_mask(tiling: Tiling, options: GratOptions) -> torch.Tensor:
    """Block mask from per-axis relations of tile coordinates, combined by broadcasting (never S×S)."""
    axes = [torch.arange(n) for n in tiling.tiles]
    diff = [(a.view(-1, 1) - a.view(1, -1)).abs() for a in axes]  # [n, n] per axis
    # reshape each per-axis [n, n] relation to broadcast over [t, y, x, t', y', x']
    def spread(rel: torch.Tensor, axis: int) -> torch.Tensor:
        shape = [1] * 6
        shape[axis], shape[axis + 3] = rel.shape
        return rel.view(shape)

    if options.mode == "surround":
        near = [spread(d <= r, i) for i, (d, r) in enumerate(zip(diff, options.radius))]
        mask = near[0] & near[1] & near[2]
    else:
        same_t, same_y, same_x = (spread(d == 0, i) for i, d in enumerate(diff))
        mask = (same_t & same_y) | (same_t & same_x) | (same_y & same_x)
    nv = tiling.video_blocks
    return mask.expand(*tiling.tiles, *tiling.tiles).reshape(1, nv, nv)


register(Method("grat", GratOptions, grat_mask, summary="grouped queries; criss-cross or surrounding tiles"))
