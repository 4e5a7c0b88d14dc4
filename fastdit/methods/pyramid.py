"""PSA (Pyramid Sparse Attention): every query block reads each key block at a resolution that fits its weight.

A binary keep/drop mask throws away the mass of every dropped block. PSA instead keeps a KV pyramid (level
``l`` averages K and V over groups of ``2**l`` consecutive tokens of a block) and gives the blocks that matter
most full resolution and the others coarser and coarser summaries. A pooled key standing for ``m`` tokens adds
``ln(m)`` to its logit (the kernel does this), so a block of identical keys gives the full-resolution result.

The rule of the official code (ziplab/Pyramid-Sparse-Attention ``src/psa_triton``, Wan2.1 settings):

1. **Order.** Tokens are laid along a 3D Gilbert curve (``fastdit.layout.order.GilbertOrder``) and cut into
   128-token blocks, so a block is a compact blob of the video.
2. **Importance from sampled tokens.** ``block / 4`` positions are drawn at random per head, the same in every
   block, for queries and (separately) keys. For a sampled query ``i`` and key block ``n``,
   ``r[i, n] = scale · max_j q_i · k_j`` over the block's sampled keys; the block pair scores
   ``P[m, n] = max_i exp(r[i, n] - max_n' r[i, n'])`` over the query block's sampled queries, and each row of
   ``P`` is normalised to sum to 1.
3. **Bands.** Per query block the key blocks are sorted by ``P`` (descending) and the cumulative share is cut
   at ``thresholds``: the blocks up to ``thresholds[0]`` (the block that crosses it included) at full
   resolution, the next up to ``thresholds[1]`` at 2× pooling, and so on; the rest are skipped. At least the
   ``int(0.06 · n) + 1`` top-ranked blocks are at full resolution, and a band's length is rounded to whole
   pooled kernel tiles (the 8× band of 128-token blocks to an even count).

Published (PSA ``configs/attention_config.yaml``, Wan2.1-14B): bands ``.4 / .5 / .6 / .8``, 15 dense warm-up
steps of 50. Differences from the official code, deliberately: the sampled positions come from a seeded
generator of their own (upstream draws from the global RNG on every call), so a seed reproduces a video and
the caller's RNG is untouched; ties sort stably (upstream's sort is not stable, so tied blocks may swap
bands there); one layout serves the batch, each block at the finest level any batch element gives it; and
pooled keys of a partly padded block average its real tokens only (upstream repeats the last token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdit.layout.order import ORDERS, TokenOrder
from fastdit.methods.base import HeadSlice, Method

KERNEL_TILE = 32  # tokens per pooled kernel tile upstream: bands of coarse levels are whole tiles
ROW_CHUNK = 2048  # sampled queries scored at a time (bounds memory at ROW_CHUNK × S/4 per head)


@dataclass(frozen=True)
class PyramidOptions:
    """``levels``: the coarsest level ``L`` (groups of ``2**L`` tokens); ``thresholds``: ``L + 1`` cumulative
    importance shares ending the bands of levels ``0..L``, non-decreasing in ``(0, 1]``; ``prune``: skip the
    blocks past the last band (published) or read them at level ``L``; ``min_full``: the share of key blocks
    always at full resolution (``int(min_full · n) + 1``); ``seed``: of the sampled positions."""

    levels: int = 3
    thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.8)
    prune: bool = True
    min_full: float = 0.06
    seed: int = 0

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
            raise ValueError(f"pyramid thresholds must be non-decreasing (cumulative shares ending the bands of "
                             f"levels 0, 1, ...; an equal neighbour leaves a level empty), got {self.thresholds!r}")
        if not isinstance(self.prune, bool):
            raise ValueError(f"pyramid prune must be True or False, got {self.prune!r}")
        if (isinstance(self.min_full, bool) or not isinstance(self.min_full, (int, float))
                or not 0 <= self.min_full <= 1):
            raise ValueError(f"pyramid min_full must be a number in [0, 1], got {self.min_full!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"pyramid seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in taus))


def sample_positions(heads: int, block: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query, key)`` in-block offsets, ``[heads, block // 4]`` each: a random subset per head, as upstream
    draws them (queries first), from a generator of their own."""
    gen = torch.Generator().manual_seed(seed)
    keep = max(1, block // 4)
    draw = lambda: torch.rand(heads, block, generator=gen).topk(keep, dim=-1).indices  # noqa: E731
    return draw(), draw()


def _edge_padded(x: torch.Tensor, order: TokenOrder) -> torch.Tensor:
    """The video part of ``x [B, H, S, D]`` with every padded position holding the last real token (upstream
    pads by repetition, so a sample that lands on padding sees a real token)."""
    video = x[:, :, : order.video_len]
    pad = (~order.valid[: order.video_len]).nonzero().flatten()
    if not pad.numel():
        return video
    video = video.clone()
    last = int(order.video_destination.max())
    video[:, :, pad.to(x.device)] = video[:, :, last:last + 1].clone()  # a copy: the source lies in video
    return video


def block_importance(q: torch.Tensor, k: torch.Tensor, order: TokenOrder, q_pos: torch.Tensor,
                     k_pos: torch.Tensor) -> torch.Tensor:
    """``[B, H, n, n]`` PSA importance of each (query block, key block) over ``order``'s video blocks, each
    row summing to 1; ``q, k [B, H, S, D]`` in ``order``, ``q_pos, k_pos [H, samples]`` in-block offsets."""
    B, H, _, D = q.shape
    n, size = order.video_blocks, order.block_size
    scale = D ** -0.5
    qs, ks = (_edge_padded(x, order).reshape(B, H, n, size, D) for x in (q, k))
    qs = torch.stack([qs[:, h, :, q_pos[h]] for h in range(H)], 1).reshape(B, H, -1, D).float() * scale
    ks = torch.stack([ks[:, h, :, k_pos[h]] for h in range(H)], 1).reshape(B, H, -1, D).float()  # [B,H,n*sk,D]
    rows = []
    for lo in range(0, qs.shape[2], ROW_CHUNK):
        logits = torch.matmul(qs[:, :, lo:lo + ROW_CHUNK], ks.transpose(-1, -2))  # scale folded into q
        block_max = logits.view(*logits.shape[:3], n, -1).amax(-1)  # [B, H, rows, n]
        rows.append(torch.exp(block_max - block_max.amax(-1, keepdim=True)))
    score = torch.cat(rows, 2).view(B, H, n, -1, n).amax(3)  # max over each query block's sampled queries
    return score / score.sum(-1, keepdim=True)


def assign_levels(score: torch.Tensor, options: PyramidOptions, block: int) -> torch.Tensor:
    """``score [..., n]`` (rows summing to 1) → ``[..., n]`` int64 level per key block; ``levels + 1`` = skip.

    Bands follow upstream's ``thresholdbound`` rule: ``cnt`` blocks have a cumulative share within the band's
    end, so the band ends after ``cnt + 1`` (the crossing block in); level 0 holds at least the ``min_full``
    top blocks; a band of level ``l`` is rounded to whole ``2**l``-pooled kernel tiles, up, or down where it
    would run past the last block.
    """
    N = score.shape[-1]
    ranked, rank_order = score.sort(dim=-1, descending=True, stable=True)
    share = ranked.cumsum(-1)
    share = share / share[..., -1:]
    per_tile = max(1, block // KERNEL_TILE)
    start = torch.zeros(score.shape[:-1], dtype=torch.int64, device=score.device)
    ends = []
    for level, end_share in enumerate(options.thresholds):
        count = (share <= end_share + 1e-6).sum(-1)
        end = torch.where(count > 0, count + 1, start)
        align = -(-(1 << level) // per_tile)
        if align > 1:
            length = ((end - start).clamp(min=0) + align - 1) // align * align
            end = (start + length).clamp(max=N)
            end = torch.where(end == N, start + (N - start) // align * align, end)
        else:
            end = torch.maximum(end.clamp(0, N), start)
            if level == 0:
                end = end.clamp(min=min(N, int(N * options.min_full) + 1))
        ends.append(end)
        start = end
    position = torch.arange(N, device=score.device)
    band = sum((position >= e.unsqueeze(-1)).long() for e in ends)  # level of each rank; levels + 1 = past all
    if not options.prune:
        band = band.clamp(max=options.levels)
    return torch.empty_like(band).scatter_(-1, rank_order, band)


def pyramid_mask(order: TokenOrder, options: PyramidOptions, *, q: torch.Tensor, k: torch.Tensor,
                 layer: int = 0, heads: HeadSlice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, level)``, both ``[H, n_video_blocks, n_video_blocks]``: which key blocks each query block
    reads per head, and at which pyramid level (``layer`` is unused: PSA decides from q and k alone).
    ``heads``: ``q, k`` hold that slice of the model's heads, whose
    sampled positions are those drawn for all heads."""
    if (1 << options.levels) > order.block_size:
        raise ValueError(f"pyramid levels={options.levels} pools groups of {1 << options.levels} tokens, more than "
                         f"the {order.block_size}-token kernel block; use levels <= "
                         f"{order.block_size.bit_length() - 1} or a larger block_size")
    total, first = (q.shape[1], 0) if heads is None else (heads.total, heads.start)
    q_pos, k_pos = (p[first:first + q.shape[1]].to(q.device)
                    for p in sample_positions(total, order.block_size, options.seed))
    score = block_importance(q, k, order, q_pos, k_pos)
    level = assign_levels(score, options, order.block_size).amin(0)  # finest level any batch element gives
    mask = level <= options.levels
    return mask.cpu(), level.to(torch.int8).cpu()  # levels where mask is False are never read


PYRAMID = Method("pyramid", PyramidOptions, pyramid_mask, dynamic=True,
                 orders=tuple(dict.fromkeys(("gilbert", *ORDERS))),
                 summary="dynamic; key blocks read at full or pooled resolution by sampled importance (PSA)")
