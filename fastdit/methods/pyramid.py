"""PSA (Pyramid Sparse Attention): every query block reads each key block at a resolution that fits its weight.

A binary keep/drop mask throws away the mass of every dropped block. PSA instead keeps a KV pyramid (level
``l`` averages K and V over groups of ``2**l`` consecutive tokens of a block, ``l = 0..levels``) and gives
the blocks that matter most full resolution and the others coarser and coarser summaries, like fixed-point
quantisation of the attention map. A pooled key standing for ``m`` tokens adds ``ln(m)`` to its logit
(the kernel does this), so a block of identical keys gives exactly the full-resolution result.

The allocation, per head and query block, from the block means of q and k (batch included, so one layout
serves the whole batch):

1. importance ``p_j = softmax_j(q̄ · k̄_j / sqrt(D) + ln(n_j))`` over the video key blocks (``n_j`` = valid
   tokens of block ``j``), the block-level estimate of the attention mass on block ``j``;
2. sort the blocks by ``p`` (descending) and let ``m_j`` be the mass of the blocks ranked above ``j``;
3. block ``j`` goes to the first level ``l`` with ``m_j < thresholds[l]``: the most important blocks up to
   mass ``thresholds[0]`` (the block that crosses it included) at level 0, the next up to ``thresholds[1]``
   at level 1, and so on; blocks past the last threshold are skipped (``prune=True``) or read at the
   coarsest level (``prune=False``). A threshold of 1 takes every remaining block;
4. the diagonal block is always kept at level 0.

Published setting (PSA, Wan2.1-14B): full ``[0, .4]``, 2× pooled ``[.4, .5]``, 4× ``[.5, .6]``,
8× ``[.6, .8]``, skipped ``[.8, 1]`` — the defaults here (``levels=3``, ``thresholds=(.4, .5, .6, .8)``).
The pooling level must fit the kernel block: ``2**levels`` tokens per group at most ``block_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..grid import Tiling
from . import Method, register
from .pooled import block_means, pooled_logits


@dataclass(frozen=True)
class PyramidOptions:
    """``levels``: the coarsest pyramid level ``L`` (groups of ``2**L`` tokens); ``thresholds``: ``L + 1``
    cumulative-mass bounds of the bands at levels ``0..L``, non-decreasing in ``(0, 1]`` (a repeated value
    leaves that level unused, e.g. ``(1, 1, 1, 1)`` keeps everything at full resolution); ``prune``: skip the
    blocks past the last bound (``True``) or read them at level ``L`` (``False``)."""

    levels: int = 3
    thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.8)
    prune: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.levels, int) or isinstance(self.levels, bool) or self.levels < 1:
            raise ValueError(f"pyramid levels must be an int >= 1 (the coarsest level pools 2**levels tokens), "
                             f"got {self.levels!r}")
        if not isinstance(self.thresholds, (tuple, list)):
            raise ValueError(f"pyramid thresholds must be a sequence of {self.levels + 1} numbers, "
                             f"got {self.thresholds!r}")
        taus = tuple(self.thresholds)
        if len(taus) != self.levels + 1:
            raise ValueError(f"pyramid thresholds needs levels + 1 = {self.levels + 1} values (one band per level "
                             f"0..{self.levels}), got {len(taus)}: {self.thresholds!r}")
        if any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1 for t in taus):
            raise ValueError(f"pyramid thresholds must be numbers in (0, 1], got {self.thresholds!r}")
        if any(b < a for a, b in zip(taus, taus[1:])):
            raise ValueError(f"pyramid thresholds must be non-decreasing (cumulative mass bounds of levels 0, 1, "
                             f"...; an equal neighbour leaves a level empty), got {self.thresholds!r}")
        if not isinstance(self.prune, bool):
            raise ValueError(f"pyramid prune must be True or False, got {self.prune!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in taus))


def pyramid_mask(tiling: Tiling, options: PyramidOptions, *, q: torch.Tensor, k: torch.Tensor,
                 layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, level)``, both ``[H, n_video_blocks, n_video_blocks]``: which key blocks each query block
    reads per head, and at which pyramid level (``layer`` is unused: PSA decides from q and k alone)."""
    if (1 << options.levels) > tiling.block_size:
        raise ValueError(f"pyramid levels={options.levels} pools groups of {1 << options.levels} tokens, more than "
                         f"the {tiling.block_size}-token kernel block; use levels <= "
                         f"{tiling.block_size.bit_length() - 1} or a larger block_size")
    q_means, _ = block_means(q, tiling)
    k_means, k_counts = block_means(k, tiling)
    probs = torch.softmax(pooled_logits(q_means, k_means, k_counts), dim=-1)
    ranked, order = probs.sort(dim=-1, descending=True, stable=True)
    above = ranked.cumsum(-1) - ranked  # mass of the blocks ranked before each one
    # a bound of 1 takes every block, whatever the rounding of the cumulative sum
    bounds = torch.tensor([t if t < 1 else math.inf for t in options.thresholds], dtype=above.dtype,
                          device=above.device)
    band = torch.bucketize(above, bounds, right=True)  # bounds <= mass above = the level; L + 1 = past them all
    if not options.prune:
        band = band.clamp_(max=options.levels)
    level = torch.empty_like(band).scatter_(-1, order, band)
    level.diagonal(dim1=-2, dim2=-1).zero_()
    mask = level <= options.levels
    return mask.cpu(), level.to(torch.int8).cpu()  # levels where mask is False are never read


register(Method("pyramid", PyramidOptions, pyramid_mask, dynamic=True,
                summary="dynamic; key blocks read at full or pooled resolution by importance (PSA)"))
