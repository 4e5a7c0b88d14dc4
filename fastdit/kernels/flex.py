"""FlexAttention backend: the layout becomes a ``BlockMask`` (FlexAttention's block mask is the same CSR).

Blocks without padding are "full" blocks (no per-token masking); blocks holding padded keys are "partial"
and masked by a ``mask_mod`` that reads the layout's key validity. A layout's per-query selection makes every
block partial, and the ``mask_mod`` reads it too. This is the comparison point for the
Triton kernel; on CUDA the compiled kernel is used.
"""

from __future__ import annotations

import functools

import torch

from fastdit.layout.block import BlockLayout


def block_mask_from_layout(layout: BlockLayout, device: torch.device):
    from torch.nn.attention.flex_attention import BlockMask

    mask = layout.to_dense_block_mask()  # [Hl, nq, nk], one bit per block
    if layout.selection is not None:
        partial_blocks = torch.ones(layout.n_kv_blocks, dtype=torch.bool)
    elif layout.kv_valid is None:
        partial_blocks = torch.zeros(layout.n_kv_blocks, dtype=torch.bool)
    else:
        partial_blocks = ~layout.kv_valid.view(layout.n_kv_blocks, layout.block_kv).all(-1)

    def compact(keep: torch.Tensor):
        # FlexAttention wants every row to list all kv blocks, the kept ones first (in order)
        order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices
        return keep.sum(-1).to(torch.int32), order.to(torch.int32)

    is_partial = mask & partial_blocks
    is_full = mask & ~partial_blocks
    num_partial, partial_idx = compact(is_partial)
    num_full, full_idx = compact(is_full)
    # The mask_mod must state the whole pattern: the eager (uncompiled) path evaluates it on every score,
    # while compiled kernels apply it only inside partial blocks.
    blocks = mask.to(device)
    valid = (torch.ones(layout.seq_len_kv, dtype=torch.bool) if layout.kv_valid is None
             else layout.kv_valid).to(device)
    bq, bk, per_head = layout.block_q, layout.block_kv, layout.num_heads > 1

    def in_blocks(b, h, q_idx, kv_idx):
        return blocks[h if per_head else 0, q_idx // bq, kv_idx // bk] & valid[kv_idx]

    in_layout = in_blocks
    if layout.selection is not None:
        select, group = layout.selection.select.to(device), layout.selection.key_group.to(device)
        per_batch, per_head_select = select.shape[0] > 1, select.shape[1] > 1

        def in_layout(b, h, q_idx, kv_idx):
            g = group[kv_idx]
            chosen = select[b if per_batch else 0, h if per_head_select else 0, q_idx, g.clamp(min=0)]
            return in_blocks(b, h, q_idx, kv_idx) & (g >= 0) & chosen

    return BlockMask.from_kv_blocks(
        num_partial.unsqueeze(0).to(device), partial_idx.unsqueeze(0).to(device),
        num_full.unsqueeze(0).to(device), full_idx.unsqueeze(0).to(device),
        BLOCK_SIZE=(layout.block_q, layout.block_kv),
        mask_mod=in_layout,
        seq_lengths=(layout.seq_len_q, layout.seq_len_kv),
    )


@functools.lru_cache(maxsize=1)
def compiled_flex_attention():
    """``torch.compile``d ``flex_attention``, built once (the kernel benchmark times this same callable)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_block_attention(q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False):
    from torch.nn.attention.flex_attention import flex_attention

    fn = compiled_flex_attention() if q.is_cuda else flex_attention
    block_mask = block_mask_from_layout(layout, q.device)
    return fn(q, k, v, block_mask=block_mask, scale=scale, return_lse=return_lse)
