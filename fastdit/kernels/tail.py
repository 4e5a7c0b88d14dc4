"""Sol-Attn's approximation correction: the key blocks a row does not list still enter its softmax, one pooled
term each, merged into any backend's block-sparse result through its log-sum-exp.

The official rule (comfy-kitchen 0.2.40, ``comfy_kitchen/backends/eager/sol_attn.py``): with ``kc_j`` each key
block's mean key, ``k̄`` the mean of the ``kc_j`` over all blocks, ``c_I`` the query block's mean query (live rows
only) and ``m_j`` the block's live token count, an unlisted block ``j`` adds to the softmax of every row of query
block ``I`` one term of logit ``scale · c_I · (kc_j - k̄)`` against keys centred on ``k̄``, weighing ``m_j`` tokens
and carrying the block's summed values. Upstream centres the keys for the exact scores too (a per-row shift,
invisible to a softmax over exact keys alone but not to the mix); here the kernel scores uncentred keys, so the
pooled terms get the same shift instead: ``+ scale · q_t · k̄`` for row ``t``. Per query block the pooled terms
reduce to one softmax state (``lse_I``, ``o_I``) of ``n × n × D`` work, which is merged with each row's
``(out, lse)`` from the kernel. Not a pyramid level: the pooled key is scored by the block's mean query, not the
row's own, and on centred keys.
"""

from __future__ import annotations

import math

import torch

from fastdit.kernels.common import merge_partial
from fastdit.layout.block import BlockLayout, block_means

__all__ = ["pooled_tail", "merge_tail"]


def pooled_tail(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pooled terms of the blocks each row does not list, as a softmax state per query block.

    Args:
        q, k, v: ``[B, H, S, D]`` in the layout's order.
        layout: a layout with ``tail`` set (equal query and key blocks; the query blocks are the first blocks of
            the keys' sequence: all of them, or the video's when text queries run elsewhere).
        scale: the softmax scale.

    Returns:
        ``(lse [B, H, n], out [B, H, n, D], shift [B, H, S])``, fp32: the log-sum-exp and normalised output
        of each query block's pooled terms (``-inf`` and 0 where a row lists every block) against centred keys,
        and each row's shift ``scale · q_t · k̄`` to the uncentred scores the kernel computed.
    """
    if layout.block_q != layout.block_kv or layout.seq_len_q > layout.seq_len_kv:
        raise ValueError("Sol-Attn's pooled tail needs equal query and key blocks, the queries being the leading "
                         f"blocks of the keys' sequence; got {layout.block_q}x{layout.block_kv} blocks over "
                         f"{layout.seq_len_q}x{layout.seq_len_kv} tokens")
    block, S = layout.block_kv, k.shape[2]
    valid = torch.ones(S, dtype=torch.bool) if layout.kv_valid is None else layout.kv_valid
    kc, lengths = block_means(k, valid, block)
    centroid, _ = block_means(q, valid[:q.shape[2]], block)
    vc, _ = block_means(v, valid, block)
    k_mean = kc.mean(2, keepdim=True)  # [B, H, 1, D]
    logits = torch.matmul(centroid, (kc - k_mean).transpose(-1, -2)) * scale + lengths.log().to(q.device)
    listed = layout.to_dense_block_mask().to(q.device)  # [H|1, n, n]: exact blocks take no pooled term
    logits = logits.masked_fill(listed.unsqueeze(0), -math.inf)
    lse = torch.logsumexp(logits, -1)
    weights = torch.exp(logits - lse.unsqueeze(-1)).nan_to_num(0.0)  # a fully listed row: no term at all
    shift = torch.matmul(q.float(), k_mean.transpose(-1, -2)).squeeze(-1) * scale
    return lse, torch.matmul(weights, vc), shift


def merge_tail(out: torch.Tensor, lse: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               layout: BlockLayout, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A backend's block-sparse ``(out, lse)`` with the layout's pooled terms merged into every row's softmax.

    Args:
        out: ``[B, H, S, D]`` the exact part (normalised over the listed blocks).
        lse: ``[B, H, S]`` fp32, its log-sum-exp.
        q, k, v: ``[B, H, S, D]`` the call's inputs, in the layout's order.
        layout: the layout (``tail`` set).
        scale: the softmax scale.

    Returns:
        ``(out [B, H, S, D]`` in ``out``'s dtype, ``lse [B, H, S]`` fp32) over the whole sequence.
    """
    B, H, S, D = out.shape
    n, block = layout.n_q_blocks, layout.block_q
    tail_lse, tail_out, shift = pooled_tail(q, k, v, layout, scale)
    row_lse = tail_lse.unsqueeze(-1) + shift.view(B, H, n, block)  # [B, H, n, block]: each row's pooled part
    merged, merged_lse = merge_partial(out.view(B, H, n, block, D), lse.view(B, H, n, block),
                                       tail_out.unsqueeze(3), row_lse)
    return merged.view(B, H, S, D), merged_lse.view(B, H, S)
