"""Block-mean summaries of q and k: what the dynamic methods score instead of the S×S attention.

Pyramid and vmoba choose their layout from one vector per kernel block (or per group of blocks): the mean of
its valid tokens, taken over the batch as well, so one layout serves the whole batch. Scoring those means is
O(H · blocks² · D) against the O(H · S² · D) of the attention the layout replaces, which is what keeps the
layout cost a rounding error of the attention time.
"""

from __future__ import annotations

import functools
import math

import torch

from ..grid import Tiling

__all__ = ["block_means", "pooled_logits"]


def block_means(
    x: torch.Tensor,
    tiling: Tiling,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over batch and valid tokens of each video block of tile-ordered ``x [B, H, S, D]``.

    ``groups [n_video_blocks]`` (with ``num_groups``) merges blocks into larger cells first, e.g. vmoba's
    partition cells; the mean is then over every valid token of the cell. Returns ``(means [H, n, D],
    counts [n])`` with ``counts`` the valid tokens per block or cell (one batch element's worth), in a float
    type of at least fp32 on ``x``'s device. Padded positions never count, whatever they hold.
    """
    if x.ndim != 4 or x.shape[2] != tiling.seq_len:
        raise ValueError(f"expected q/k as [B, H, {tiling.seq_len}, D] in tile order for {tiling.grid} with tile "
                         f"{tiling.tile}, got shape {tuple(x.shape)}")
    B, H, _, D = x.shape
    nv, bs = tiling.video_blocks, tiling.block_size
    acc = torch.promote_types(x.dtype, torch.float32)
    sums = x[:, :, : nv * bs].reshape(B, H, nv, bs, D).sum(dim=(0, 3), dtype=acc)  # one pass over q or k
    padded, counts = (t.to(x.device) for t in _padding(tiling))
    if padded.numel():  # take the padding back out (zeros in tile order, but a caller's tensor may hold anything)
        sums.index_add_(1, padded // bs, x.index_select(2, padded).sum(0, dtype=acc), alpha=-1)
    counts = counts.to(acc)
    if groups is not None:
        groups = groups.to(x.device)
        sums = sums.new_zeros(H, num_groups, D).index_add_(1, groups, sums)
        counts = counts.new_zeros(num_groups).index_add_(0, groups, counts)
    return sums / (B * counts).view(1, -1, 1), counts


@functools.lru_cache(maxsize=64)
def _padding(tiling: Tiling) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded tile-order positions among the video blocks, and valid tokens per video block (per tiling, once:
    a layout is rebuilt every call, and on a busy CPU every small op counts)."""
    valid = tiling.valid[: tiling.video_blocks * tiling.block_size]
    return (~valid).nonzero().flatten(), valid.view(tiling.video_blocks, -1).sum(-1)


def pooled_logits(q_means: torch.Tensor, k_means: torch.Tensor, k_counts: torch.Tensor) -> torch.Tensor:
    """``[H, nq, nk]`` block logits: ``q̄ · k̄ / sqrt(D) + ln(n_k)``.

    The scale is the attention's own, so a softmax over these approximates the attention mass a query block
    puts on each key block; ``ln(n_k)`` makes a key summary weigh like the ``n_k`` keys it stands for, so a
    partly padded block (or a smaller cell) is not over-rated against full ones.
    """
    scale = 1.0 / math.sqrt(q_means.shape[-1])
    return torch.matmul(q_means, k_means.transpose(-1, -2)) * scale + torch.log(k_counts)
