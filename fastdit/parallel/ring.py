"""Ring: each rank's query blocks attend the key/value chunks in turn, merged through the log-sum-exp.

Ring attention keeps the heads whole and splits the queries: rank ``r`` computes the rows of its share of
the layout's query blocks, one key/value chunk (a run of key blocks) at a time, and merges the partial
outputs by their log-sum-exp. A chunk whose column slice of the layout keeps no block for these rows is
skipped. Chunks are runs of whole kernel blocks *in the layout's own order*, never the model's sequence
shards: a pooled pyramid key averages tokens of one block, and a block of a Gilbert or tiled order holds
tokens of several shards, so only block-aligned chunks give exactly the single-process result.

How the data moves: like diffusers' ring attention (whose only ``rotate_method`` is ``"allgather"``), the
ranks all-gather their shards, here q, k and v, so that every rank can build the single-process layout from
the global grid (dynamic methods read q and k) and reorder tokens into it; each rank then computes only its
rows and one all-reduce returns every rank its own tokens. Skipped chunks save compute, not bytes. Dense
calls attend this rank's own queries to the gathered keys with the user's diffusers backend, which is what
diffusers' ring computes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..kernels import attention
from ..layout import BlockLayout
from ..order import TokenOrder
from .shards import gathered_order, split_sizes

__all__ = ["ring_attention", "merge_partial", "ring_rows"]


def ring_attention(processor: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   attn_mask: torch.Tensor | None, text_tokens: int | None, text_position: str,
                   config: Any) -> torch.Tensor:
    """``processor``'s self-attention of this rank's sequence shard ``q, k, v [B, H, S_local, D]`` under a
    ring ``config`` (a diffusers ``ParallelConfig``); returns ``[B, H, S_local, D]``."""
    name = f"{type(processor).__name__} ({processor.model_name} layer {processor.layer})"
    if attn_mask is not None:
        raise ValueError(f"fastdit: {name} gets an attention mask (a padded prompt) under ring attention, which "
                         "fastdit does not support; use Ulysses (ulysses_degree) or unpadded prompts")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError(f"fastdit: {name}: training under ring attention is not supported (its gathered keys "
                         "carry no gradient back to the ranks); use Ulysses (ulysses_degree) to train")
    cp = config.context_parallel_config
    group, ranks, rank = cp._ring_mesh.get_group(), cp.ring_degree, cp._ring_local_rank
    sizes, text, positions = gathered_order(processor, text_tokens, q.shape[2], text_position, group, ranks, rank)
    gathered = [_all_gather_tokens(x, sizes, group) for x in (q, k, v)]
    start = sum(sizes[:rank])
    mine = torch.arange(start, start + q.shape[2]) if positions is None else positions[start:start + q.shape[2]]
    if positions is not None:  # into the model's order
        source = torch.empty_like(positions).scatter_(0, positions, torch.arange(positions.numel()))
        gathered = [x.index_select(2, source.to(x.device)) for x in gathered]
    mine = mine.to(q.device)
    ran_sparse = []

    def dense(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor, scale: float | None) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        backend = processor._attention_backend or getattr(processor.original, "_attention_backend", None)
        own = dispatch_attention_fn(q_[:, :, mine].transpose(1, 2), k_.transpose(1, 2), v_.transpose(1, 2),
                                    scale=scale, backend=backend).transpose(1, 2)
        return torch.zeros_like(q_).index_copy_(2, mine, own)

    def sparse(qt: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor, order: TokenOrder, layout: BlockLayout,
               scale: float | None, keys: torch.Tensor | None) -> torch.Tensor:
        ran_sparse.append(True)
        return ring_rows(qt, kt, vt, layout, scale, rank, ranks, backend=processor.engine.config.backend)

    out = processor.engine(*gathered, layer=processor.layer, model=processor.model_name, text_tokens=text,
                           text_position=text_position, grid=processor.call_grid(sum(sizes)), dense=dense,
                           sparse=sparse)
    if ran_sparse:  # every rank computed other tokens' rows (the same decision on every rank)
        dist.all_reduce(out, group=group)
    return out.index_select(2, mine)


def ring_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float | None,
              rank: int, ranks: int, backend: str = "auto") -> torch.Tensor:
    """Rank ``rank``'s share of the query blocks of ``layout`` (tensors in its order), chunk by chunk of key
    blocks in ring order starting at its own, merged by log-sum-exp; zeros in every other row."""
    if layout.block_q != layout.block_kv:
        raise ValueError("ring attention splits queries and keys at the same block boundaries: needs "
                         f"block_q == block_kv, got {layout.block_q} and {layout.block_kv}")
    bounds = torch.tensor([0, *split_sizes(layout.n_q_blocks, ranks)]).cumsum(0).tolist()
    blocks = [range(bounds[r], bounds[r + 1]) for r in range(ranks)]
    rows = blocks[rank]
    tokens = lambda r: slice(r.start * layout.block_q, r.stop * layout.block_q)  # noqa: E731
    mine = tokens(rows)
    out = torch.zeros_like(q)
    partial = None
    for step in range(ranks):
        chunk = blocks[(rank + step) % ranks]
        piece = layout.block_slice(rows, chunk)
        if piece.nnz == 0 or not len(rows):  # nothing kept: neither compute nor merge
            continue
        cols = tokens(chunk)
        result = attention(q[:, :, mine], k[:, :, cols], v[:, :, cols], piece, scale=scale, backend=backend,
                           return_lse=True)
        partial = result if partial is None else merge_partial(*partial, *result)
    if partial is not None:
        out[:, :, mine] = partial[0].to(out.dtype)
    return out


def merge_partial(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                  lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each set's ``(out [B, H, S, D], lse [B, H, S])``.

    Computed in fp32 around the larger log-sum-exp of each row, so a row that one side leaves empty
    (``lse = -inf``, which a block layout gives a query block with no key block in a chunk) takes the other
    side's result unchanged.
    """
    top = torch.maximum(lse_a, lse_b)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    total = w_a + w_b
    out = (out_a.float() * w_a[..., None] + out_b.float() * w_b[..., None]) / total.clamp_min(1e-30)[..., None]
    return out.to(out_a.dtype), top + torch.log(total)


def _all_gather_tokens(x: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """The ranks' ``x [B, H, S_r, D]`` laid end to end along the tokens (``S_r = sizes[r]`` may differ: the
    shards are padded to the longest for the collective and trimmed after)."""
    longest = max(sizes)
    padded = torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[2])).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:, :, :n] for part, n in zip(parts, sizes)], dim=2)
