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
steps of 50. Wan2.1-1.3B adds a **key-similarity cap** (``similarity``): a key block is pooled at most to the
coarsest level ``l`` whose groups of ``2**l`` keys have a mean first-to-last cosine above its threshold. Wan2.2
scores 128-token query blocks against **32-token key blocks** (``query_block=128`` on 32-token blocks; run here as
32-token blocks whose rows come in fours: the same pairs and levels).

Scores are computed as upstream's kernel does, in the input's dtype (bf16 in, bf16 block scores and bf16 bands):
on bf16 inputs the kept token pairs equal the official code's in all 9 fixture cases (coverage 1.0, 0 extra;
scoring in fp32 instead gave coverage 0.980-1.0 and up to 6.9% extra pairs), levels 0.988-1.0 the same.
Differences from the official code, deliberately: the similarity cap is computed in fp32 as upstream's GPU
kernel does (its CPU fallback, which made the fixtures, rounds in bf16: 1 of 26 key blocks of one fixture differs); the
sampled positions come from a seeded generator of their own (upstream draws from the global RNG on every
call), so a seed reproduces a video and the caller's RNG is untouched; ties sort stably (upstream's sort is
not stable, so tied blocks may swap bands there: the other level differences on bf16, 0.5-0.9% of the Wan2.2
fixtures' entries, kept pairs equal); one layout serves the batch, each block at the finest level any batch
element gives it; and pooled keys of a partly padded block average its real tokens only (upstream repeats
the last token).
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
    always at full resolution (``int(min_full · n) + 1``); ``seed``: of the sampled positions; ``query_block``:
    tokens per query block of the importance, a multiple of the layout's block (``None``: that block; Wan2.2 sets
    128 over 32-token key blocks); ``similarity``: ``levels`` cosine thresholds capping the pooling of each key
    block by how alike its keys are (Wan2.1-1.3B: ``(0.7, 0.65, 0.6)``; ``None``: no cap)."""

    levels: int = 3
    thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.8)
    prune: bool = True
    min_full: float = 0.06
    seed: int = 0
    query_block: int | None = None
    similarity: tuple[float, ...] | None = None

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
        if self.query_block is not None and (isinstance(self.query_block, bool) or not isinstance(self.query_block, int)
                                             or self.query_block < 1):
            raise ValueError(f"pyramid query_block must be a positive int or None, got {self.query_block!r}")
        if self.similarity is not None:
            sims = tuple(self.similarity) if isinstance(self.similarity, (tuple, list)) else ()
            if len(sims) != self.levels or any(isinstance(t, bool) or not isinstance(t, (int, float)) for t in sims):
                raise ValueError(f"pyramid similarity needs {self.levels} numbers (a cosine threshold per pooled "
                                 f"level 1..{self.levels}) or None, got {self.similarity!r}")
            object.__setattr__(self, "similarity", tuple(float(t) for t in sims))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in taus))


def sample_positions(heads: int, query_block: int, key_block: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query [heads, query_block // 4], key [heads, key_block // 4])`` in-block offsets: a random subset per
    head, as upstream draws them (queries first), from a generator of their own."""
    gen = torch.Generator().manual_seed(seed)
    draw = lambda size: torch.rand(heads, size, generator=gen).topk(max(1, size // 4), dim=-1).indices  # noqa: E731
    return draw(query_block), draw(key_block)


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
                     k_pos: torch.Tensor, query_block: int | None = None) -> torch.Tensor:
    """``[B, H, n_q, n]`` PSA importance of each (query block, key block) over ``order``'s video blocks, each
    row summing to about 1, in ``q``'s dtype; ``q, k [B, H, S, D]`` in ``order``, ``q_pos, k_pos [H, samples]``
    in-block offsets; query blocks of ``query_block`` tokens (default: the order's block).

    The arithmetic of upstream's pooling kernel: dot products in fp32, each block's max times
    ``scale · log2(e)`` stored in the input dtype, ``exp2`` of it less the row's (fp32) max, the max over a
    query block's samples stored in the input dtype, and the row normalised in that dtype by a sum that, as
    upstream's, includes the copies of the last sampled key that pad the samples to 64.
    """
    B, H, _, D = q.shape
    n, size = order.video_blocks, order.block_size
    q_size = query_block or size
    keys = _edge_padded(k, order).reshape(B, H, n, size, D)
    queries = _edge_padded(q, order)
    n_q = -(-queries.shape[2] // q_size)
    tail = n_q * q_size - queries.shape[2]  # upstream pads queries to whole query blocks with the last token
    queries = torch.cat([queries, queries[:, :, -1:].expand(-1, -1, tail, -1)], 2).reshape(B, H, n_q, q_size, D)
    qs = torch.stack([queries[:, h, :, q_pos[h]] for h in range(H)], 1).reshape(B, H, -1, D).float()
    ks = torch.stack([keys[:, h, :, k_pos[h]] for h in range(H)], 1).reshape(B, H, -1, D).float()  # [B,H,n*sk,D]
    per_key = k_pos.shape[1]
    ghosts = -(-((-ks.shape[2]) % 64) // per_key)  # blocks of copies of the last sampled key: upstream pads to 64
    scale = torch.tensor(D ** -0.5, dtype=torch.float32) * torch.tensor(1.44269504, dtype=torch.float32)
    rows = []
    for lo in range(0, qs.shape[2], ROW_CHUNK):
        logits = torch.matmul(qs[:, :, lo:lo + ROW_CHUNK], ks.transpose(-1, -2))
        block_max = logits.view(*logits.shape[:3], n, -1).amax(-1) * scale  # [B, H, rows, n]
        block_max = torch.cat([block_max, (logits[..., -1:] * scale).expand(-1, -1, -1, ghosts)], -1)
        stored = block_max.to(q.dtype)
        rows.append(torch.exp2(stored.float() - block_max.amax(-1, keepdim=True)))
    score = torch.cat(rows, 2).view(B, H, n_q, -1, n + ghosts).amax(3).to(q.dtype)  # max over sampled queries
    return (score / score.sum(-1, keepdim=True))[..., :n]


def similarity_levels(k: torch.Tensor, order: TokenOrder, thresholds: tuple[float, ...]) -> torch.Tensor:
    """``[B, H, n]`` int64: the coarsest level each video key block may be pooled to (upstream's
    ``calc_k_similarity``): level ``l`` when the mean cosine between the first and last key of its groups of
    ``2**l`` tokens exceeds ``thresholds[l - 1]`` (the coarsest such ``l``), else 0; in fp32 as upstream's GPU
    kernel, whose ``+1e-12`` and ``+1e-6`` guards it keeps."""
    B, H, _, D = k.shape
    keys = _edge_padded(k, order).float().reshape(B, H, order.video_blocks, -1, D)
    norm = (keys * keys).sum(-1).add(1e-12).sqrt()
    cap = torch.zeros(B, H, order.video_blocks, dtype=torch.int64, device=k.device)
    for level, threshold in enumerate(thresholds, start=1):
        group = 1 << level
        first, last = keys[..., 0::group, :], keys[..., group - 1::group, :]
        cos = (first * last).sum(-1) / (norm[..., 0::group] * norm[..., group - 1::group] + 1e-6)
        cap = torch.where(cos.mean(-1) > threshold, level, cap)
    return cap


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


def select_levels(q: torch.Tensor, k: torch.Tensor, order: TokenOrder, options: PyramidOptions,
                  q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """``[B, H, n_q, n]`` int64 level of each (query block of ``options.query_block``, video key block);
    ``levels + 1`` = skipped. ``q, k [B, H, S, D]`` in ``order``; ``q_pos, k_pos``: the sampled offsets."""
    score = block_importance(q, k, order, q_pos, k_pos, options.query_block)
    level = assign_levels(score, options, order.block_size)
    if options.similarity is None:
        return level
    cap = similarity_levels(k, order, options.similarity).unsqueeze(2)  # keys too unlike to pool are read finer
    return torch.where(level <= options.levels, torch.minimum(level, cap), level)  # skipped blocks stay skipped


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
    query_block = options.query_block or order.block_size
    if query_block % order.block_size:
        raise ValueError(f"pyramid query_block={query_block} must be a multiple of the {order.block_size}-token "
                         f"kernel block (a query block's rows are whole kernel blocks)")
    total, first = (q.shape[1], 0) if heads is None else (heads.total, heads.start)
    q_pos, k_pos = (p[first:first + q.shape[1]].to(q.device)
                    for p in sample_positions(total, query_block, order.block_size, options.seed))
    level = select_levels(q, k, order, options, q_pos, k_pos).amin(0)  # the finest any batch element gives
    level = level.repeat_interleave(query_block // order.block_size, 1)[:, : order.video_blocks]  # rows share it
    mask = level <= options.levels
    return mask.cpu(), level.to(torch.int8).cpu()  # levels where mask is False are never read


PYRAMID = Method("pyramid", PyramidOptions, pyramid_mask, dynamic=True,
                 orders=tuple(dict.fromkeys(("gilbert", *ORDERS))),
                 summary="dynamic; key blocks read at full or pooled resolution by sampled importance (PSA)")
