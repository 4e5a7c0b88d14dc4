"""Radial attention: a static mask whose spatial window shrinks as temporal distance grows (O(n log n)).

Attention energy in video DiTs decays with spatial and temporal distance. For a query frame ``i`` and key
frame ``j`` at distance ``d = |i - j|`` (P tokens per frame, B tokens per block), the published rule is:

* key frame 0 is an attention sink: always attended in full;
* ``d == 0``: the whole frame; ``d == 1``: half the frame (``adjacent="half"``, Wan) or all of it
  (``adjacent="full"``, HunyuanVideo);
* otherwise the window is ``w = max(B, 2**bit_length(P) / 2**bit_length(d) * decay_factor)`` tokens, and once
  ``L = 2**bit_length(P) / 2**bit_length(d)`` drops below one block the frame pair is kept only when
  ``d % floor(B / L) == 0`` (temporal subsampling keeps the total O(n log n)).

The published mask keeps token pairs whose 1D index distance inside the flattened frame is ``<= w``; here
the rule is evaluated in closed form per block pair (a block is kept when its centre lies inside the window),
never through a token mask. ``spatial="2d"`` measures the distance on the 2D frame instead (Chebyshev
distance between tile centres, within a square of the same area as the 1D band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..grid import Tiling
from . import Method, register

_ADJACENT = ("half", "full")
_SPATIAL = ("1d", "2d")


@dataclass(frozen=True)
class RadialOptions:
    """``decay_factor`` scales the window of far frames (published: Wan2.1 0.2, Wan2.2 0.8, Hunyuan 0.95);
    ``adjacent`` is the window of neighbouring frames; ``spatial`` picks the 1D (published) or 2D distance;
    ``sink`` keeps frame 0 attended by every query."""

    decay_factor: float = 0.2
    adjacent: str = "half"
    spatial: str = "1d"
    sink: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.decay_factor, (int, float)) or not self.decay_factor > 0:
            raise ValueError(f"radial decay_factor must be a number > 0, got {self.decay_factor!r}")
        if self.adjacent not in _ADJACENT:
            raise ValueError(f"radial adjacent must be one of {_ADJACENT}, got {self.adjacent!r}")
        if self.spatial not in _SPATIAL:
            raise ValueError(f"radial spatial must be one of {_SPATIAL}, got {self.spatial!r}")
        if not isinstance(self.sink, bool):
            raise ValueError(f"radial sink must be True or False, got {self.sink!r}")


def frame_window(d: int, tokens_per_frame: int, block: int, options: RadialOptions) -> float:
    """Window in tokens for frame distance ``d`` (``0`` = frame pair dropped, ``inf`` = whole frame)."""
    if d == 0 or (d == 1 and options.adjacent == "full"):
        return math.inf
    if d == 1:
        return tokens_per_frame // 2
    reach = 2 ** tokens_per_frame.bit_length() / 2 ** d.bit_length()
    if reach < block and d % int(block // reach) != 0:
        return 0.0
    return max(block, reach * options.decay_factor)


def radial_mask(tiling: Tiling, options: RadialOptions) -> torch.Tensor:
    grid, (tt, th, tw) = tiling.grid, tiling.tile
    nt, nh, nw = tiling.tiles
    # centres of the tiles inside a frame, in token units
    yc = (torch.arange(nh) * th + (th - 1) / 2).view(-1, 1)
    xc = (torch.arange(nw) * tw + (tw - 1) / 2).view(1, -1)
    if options.spatial == "1d":
        pos = (yc * grid.w + xc).flatten()
        dist = (pos.view(-1, 1) - pos.view(1, -1)).abs()
        inside = lambda w: dist <= w  # noqa: E731
    else:
        yc, xc = yc.expand(nh, nw).flatten(), xc.expand(nh, nw).flatten()
        dist = torch.maximum((yc.view(-1, 1) - yc).abs(), (xc.view(-1, 1) - xc).abs())
        inside = lambda w: dist <= math.sqrt(w / 2)  # noqa: E731

    P, B = grid.tokens_per_frame, tiling.block_size
    per_distance = []  # [nt] spatial block masks, one per tile-frame distance
    for dt in range(nt):
        w = frame_window(dt * tt, P, B, options)
        if w == 0:  # frame pair dropped by temporal subsampling
            per_distance.append(torch.zeros_like(dist, dtype=torch.bool))
        else:
            per_distance.append(torch.ones_like(dist, dtype=torch.bool) if w >= P else inside(w))
    per_distance = torch.stack(per_distance)
    frames = torch.arange(nt)
    mask = per_distance[(frames.view(-1, 1) - frames).abs()]  # [nt, nt, nb_f, nb_f]
    if options.sink:
        mask[:, 0] = True
    nv = tiling.video_blocks
    return mask.permute(0, 2, 1, 3).reshape(1, nv, nv)


register(Method("radial", RadialOptions, radial_mask, summary="static energy-decay mask, O(n log n)"))
