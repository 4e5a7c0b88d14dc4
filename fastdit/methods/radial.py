"""Radial attention: a static mask whose spatial window shrinks as temporal distance grows (O(n log n)).

Attention energy in video DiTs decays with spatial and temporal distance. The published rule (Radial
Attention, ``gen_log_mask_shrinked`` in mit-han-lab/radial-attention) lives on the raster (frame-major) token
order with ``P`` tokens per frame; for query frame ``i``, key frame ``j`` and ``d = |i - j|``:

* key frame 0 is an attention sink, attended in full by every query (``sink``; Wan: yes, HunyuanVideo: no);
* with ``L = 2**bit_length(P) / 2**bit_length(d)``: once ``L`` drops below ``subsample_tokens`` (128,
  hard-coded upstream) the frame pair is kept only when ``d % floor(subsample_tokens / L) == 0`` (temporal
  subsampling keeps the total O(n log n); upstream applies it to every ``d``, so on frames of fewer than 128
  tokens even neighbouring frames are dropped);
* ``d <= 1``: the whole frame (``adjacent="full"``, the repo's HEAD) or, for ``d == 1``, a band of half a
  frame (``adjacent="half"``, the code before commit 72788d4);
* otherwise a band ``|x_q - x_k| <= w`` on the flattened in-frame index, ``w = max(B, L · decay_factor)``.

Each frame pair's token mask is then shrunk to ``B``-token blocks the way the official code does it: the
pair's mask is placed at its frames' offsets inside the block grid (frames straddle blocks), and a block is
kept when more than 60% of its non-empty key columns are more than a third full. The shrunk pair masks are
OR-ed together, and the block holding the end of the video (shared with text upstream) is kept whole in its
row and column. Here that shrink is evaluated in closed form (the band's column counts are interval
lengths), once per distinct (window, row offset, column offset), never through a token mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastdit.layout.order import TokenOrder
from fastdit.methods.base import Method

_ADJACENT = ("full", "half")


@dataclass(frozen=True)
class RadialOptions:
    """``decay_factor`` scales the window of far frames (published: Wan2.1 0.2, Wan2.2 0.8, HunyuanVideo
    0.95); ``sink`` keeps frame 0 attended by every query (Wan) ; ``adjacent``: ``"full"`` keeps whole
    neighbouring frames (HEAD), ``"half"`` a half-frame band (the older Wan rule); ``subsample_tokens``: the
    window below which far frame pairs are subsampled (hard-coded 128 upstream, whatever the block size)."""

    decay_factor: float = 0.2
    sink: bool = True
    adjacent: str = "full"
    subsample_tokens: int = 128

    def __post_init__(self) -> None:
        if (isinstance(self.decay_factor, bool) or not isinstance(self.decay_factor, (int, float))
                or not 0 < self.decay_factor < math.inf):
            raise ValueError(f"radial decay_factor must be a finite number > 0, got {self.decay_factor!r}")
        if not isinstance(self.sink, bool):
            raise ValueError(f"radial sink must be True or False, got {self.sink!r}")
        if self.adjacent not in _ADJACENT:
            raise ValueError(f"radial adjacent must be one of {_ADJACENT}, got {self.adjacent!r}")
        if isinstance(self.subsample_tokens, bool) or not isinstance(self.subsample_tokens, int) \
                or self.subsample_tokens < 1:
            raise ValueError(f"radial subsample_tokens must be an int >= 1, got {self.subsample_tokens!r}")


def frame_window(d: int, tokens_per_frame: int, block: int, options: RadialOptions) -> int | None:
    """Band half-width in tokens for frame distance ``d``: ``None`` = frame pair dropped, ``>= P`` = whole frame.

    Token indices are integers, so the published ``|x_q - x_k| <= w`` with a fractional ``w`` is
    ``<= floor(w)``.
    """
    P = tokens_per_frame
    reach = 2 ** P.bit_length() / 2 ** d.bit_length()
    if reach < options.subsample_tokens and d % int(options.subsample_tokens / reach) != 0:
        return None  # upstream subsamples every d >= 1 this way, neighbours of frames under 128 tokens too
    if d == 0 or (d == 1 and options.adjacent == "full"):
        return P
    if d == 1:
        return P // 2
    return math.floor(max(block, reach * options.decay_factor))


def shrink_band(tokens_per_frame: int, block: int, window: int, row_offset: int, col_offset: int) -> torch.Tensor:
    """The official block shrink of one frame pair's band mask, in closed form.

    The pair's ``P × P`` band ``|x_q - x_k| <= window`` sits at ``(row_offset, col_offset)`` inside a
    ``(offset + ceil(P/B)·B)``-sized square per side, cut to its first ``n = ceil(P/B)`` blocks per side
    (the official code slices both sides to ``n·B``). Returns ``[n, n]`` bool: block ``(a, b)`` is kept when
    more than 60% of its non-empty columns have more than ``B/3`` kept rows.
    """
    P, B = tokens_per_frame, block
    n = -(-P // B)
    starts = torch.arange(n) * B
    # rows of block a that belong to the frame, as in-frame query indices [lo, hi]
    lo = (torch.clamp(starts, min=row_offset) - row_offset).view(n, 1)
    hi = (torch.clamp(starts + B, max=row_offset + P) - 1 - row_offset).view(n, 1)
    xk = torch.arange(n * B) - col_offset  # in-frame key index of every column
    in_frame = ((xk >= 0) & (xk < P)).view(1, -1)
    count = (torch.minimum(hi, xk + window) - torch.maximum(lo, xk - window) + 1).clamp_(min=0)
    count = torch.where(in_frame, count, 0).view(n, n, B)  # kept rows per (row block, column block, column)
    non_empty = (count > 0).sum(-1)
    dense = (3 * count > B).sum(-1)  # column density > 1/3
    return 5 * dense > 3 * non_empty  # share of dense columns > 0.6 (exact in integers)


def radial_mask(order: TokenOrder, options: RadialOptions) -> torch.Tensor:
    """``[1, n_video_blocks, n_video_blocks]`` bool: the OR of every frame pair's shrunk band."""
    grid, B = order.grid, order.block_size
    T, P = grid.t, grid.tokens_per_frame
    nv = order.video_blocks
    mask = torch.zeros(nv, nv, dtype=torch.bool)
    shrunk: dict[tuple[int, int, int], torch.Tensor] = {}
    for i in range(T):
        for j in range(T):
            window = P if (options.sink and j == 0) else frame_window(abs(i - j), P, B, options)
            if window is None:
                continue
            key = (min(window, P), (i * P) % B, (j * P) % B)
            if key not in shrunk:
                shrunk[key] = shrink_band(P, B, *key)
            blocks = shrunk[key]
            r, c = (i * P) // B, (j * P) // B
            rows, cols = min(blocks.shape[0], nv - r), min(blocks.shape[1], nv - c)
            mask[r:r + rows, c:c + cols] |= blocks[:rows, :cols]
    if grid.video_tokens % B:  # upstream, the block where the video ends is global (it would hold text)
        mask[-1, :] = mask[:, -1] = True
    return mask.unsqueeze(0)


RADIAL = Method("radial", RadialOptions, radial_mask, orders=("raster",),
                summary="static energy-decay mask, O(n log n) (Radial Attention)")
