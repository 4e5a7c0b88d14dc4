"""The torch reference backend: block-sparse attention by gathering kept K/V blocks and calling SDPA.

It defines the correct result for every other backend and runs on any device. Query blocks (per head) are
grouped by how many keys they attend, so each group is one dense SDPA call with no padding; groups are cut
into chunks whose gathered K/V stay under ``CHUNK_BYTES``, so peak extra memory is
O(rows per chunk × keys per row × D), never S×S.

Pyramid levels: level ``l`` stores K/V averaged over groups of ``2**l`` valid tokens of a block. A pooled key
standing for ``m`` tokens adds ``ln(m)`` to its logit (so it weighs like the ``m`` keys it replaces), and a
group with no valid token gets ``-inf``. Level 0 with ``m = 1`` is the plain key, so the same bias also masks
padded keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastdit.kernels.common import pyramid_level
from fastdit.layout.block import BlockLayout

CHUNK_BYTES = 96 * 2**20


def _key_store(k: torch.Tensor, v: torch.Tensor, layout: BlockLayout):
    """K/V of every level concatenated along the token axis, plus per-token log-counts (``None`` if all 0)."""
    keys, values, biases, offsets = [], [], [], []
    offset = 0
    for level in range(layout.max_level + 1):
        lk, lv, log_count = pyramid_level(k, v, layout, level)
        keys.append(lk)
        values.append(lv)
        biases.append(log_count)
        offsets.append(offset)
        offset += log_count.numel()
    bias = torch.cat(biases)
    offsets = torch.tensor(offsets, device=k.device)
    needs_bias = layout.max_level > 0 or layout.kv_valid is not None
    return torch.cat(keys, 2), torch.cat(values, 2), (bias if needs_bias else None), offsets


def _ranges(starts: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(start, start + size)`` for each pair, without a Python loop."""
    total = int(sizes.sum())
    first = torch.cumsum(sizes, 0) - sizes
    within = torch.arange(total, device=starts.device) - torch.repeat_interleave(first, sizes, output_size=total)
    return torch.repeat_interleave(starts, sizes, output_size=total) + within


def _attend(q, k, v, bias, scale, need_lse):
    """Dense attention of ``q [B, R, M, D]`` on ``k, v [B, R, L, D]`` with an additive ``bias [R, L]``."""
    if not need_lse:
        mask = None if bias is None else bias.to(q.dtype).view(1, bias.shape[0], 1, -1)  # SDPA: q's dtype
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), None
    # explicit softmax in fp32 when the log-sum-exp is wanted (chunks are small, so this stays cheap)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.float().view(1, bias.shape[0], 1, -1)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)  # not in place: autograd keeps exp's output
    return torch.matmul(p, v.float()).to(q.dtype), lse


def _select(src: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor | None, shape: tuple[int, ...]):
    """``src.index_select(1, index)``, into ``buffer`` when one is given (the no-grad fast path)."""
    if buffer is None:
        return torch.index_select(src, 1, index).view(shape)
    out = buffer[: math.prod(shape)].view(src.shape[0], index.numel(), *src.shape[2:])
    return torch.index_select(src, 1, index, out=out).view(shape)


def torch_block_attention(q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False):
    """Differentiable when autograd needs it: the gathers then allocate per chunk and the rows are assembled
    without writing in place; otherwise everything goes through buffers allocated once per call."""
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    B, H, S, D = q.shape
    nq, bq, bk = layout.n_q_blocks, layout.block_q, layout.block_kv
    dev = q.device
    k_store, v_store, bias, offsets = _key_store(k, v, layout)
    T = k_store.shape[2]
    q_rows = q.reshape(B, H * nq, bq, D)
    out = torch.zeros(B, H * nq, bq, D, dtype=q.dtype, device=dev)
    lse_out = torch.full((B, H * nq, bq), -math.inf, device=dev) if return_lse else None

    row_ptr, col_idx = layout.row_ptr.to(dev), layout.col_idx.to(dev)
    levels = (torch.zeros_like(col_idx) if layout.level is None else layout.level.to(dev).long())
    # keys each (head, query block) row reads; rows of equal length form one padding-free batch
    sizes = bk >> levels
    entry_keys = torch.zeros(col_idx.numel() + 1, dtype=torch.int64, device=dev)
    torch.cumsum(sizes, 0, out=entry_keys[1:])
    row_len = entry_keys[row_ptr[:, 1:]] - entry_keys[row_ptr[:, :-1]]  # [Hl, nq]
    shared = layout.num_heads == 1
    # gather whole blocks when every entry is full resolution (128x fewer indices), else single tokens
    unit = bk if layout.max_level == 0 else 1
    k_units, v_units = (x.reshape(B, H * T // unit, unit * D) for x in (k_store, v_store))
    bias_units = None if bias is None else bias.view(-1, unit)
    hf = H if shared else 1  # a shared layout row stands for all heads
    groups = [(length, *(row_len == length).nonzero(as_tuple=True))
              for length in torch.unique(row_len).tolist() if length]
    per_chunk = {length: max(1, CHUNK_BYTES // (2 * length * D * q.element_size() * B * hf)) for length, *_ in groups}
    # gathers write into buffers allocated once per call: fresh multi-MB tensors per chunk cost more in page
    # faults than the copy itself
    rows_max = max((min(per_chunk[length], lh.numel()) * hf for length, lh, _ in groups), default=0)
    keys_max = max((min(per_chunk[length], lh.numel()) * hf * length for length, lh, _ in groups), default=0)
    k_buf = v_buf = q_buf = None
    if not needs_grad:
        k_buf, v_buf = (torch.empty(B * keys_max * D, dtype=k_store.dtype, device=dev) for _ in range(2))
        q_buf = torch.empty(B * rows_max * bq * D, dtype=q.dtype, device=dev)
    pieces = []  # (rows, out, lse) per chunk, assembled at the end when autograd is on
    for length, layout_heads, blocks in groups:
        for c in range(0, blocks.numel(), per_chunk[length]):
            lh, qb = layout_heads[c:c + per_chunk[length]], blocks[c:c + per_chunk[length]]
            starts = row_ptr[lh, qb]
            entries = _ranges(starts, row_ptr[lh, qb + 1] - starts)
            lv = levels[entries]
            units = _ranges((offsets[lv] + col_idx[entries] * (bk >> lv)) // unit, (bk >> lv) // unit)
            units = units.view(qb.numel(), length // unit)
            heads = torch.arange(H, device=dev).repeat_interleave(qb.numel()) if shared else lh
            if shared:
                qb, units = qb.repeat(H), units.repeat(H, 1)
            rows = heads * nq + qb
            R = rows.numel()
            flat = (heads.view(-1, 1) * (T // unit) + units).flatten()
            kk = _select(k_units, flat, k_buf, (B, R, length, D))
            vv = _select(v_units, flat, v_buf, (B, R, length, D))
            qq = _select(q_rows, rows, q_buf, (B, R, bq, D))
            row_bias = None if bias_units is None else bias_units[units].view(R, length)
            if row_bias is not None and not bool(row_bias.any()):
                row_bias = None  # no padding or pooling in this chunk: the unmasked SDPA path is faster
            o, lse = _attend(qq, kk, vv, row_bias, scale, return_lse)
            if needs_grad:
                pieces.append((rows, o, lse))
                continue
            out[:, rows] = o
            if return_lse:
                lse_out[:, rows] = lse
    if pieces:
        rows = torch.cat([r for r, _, _ in pieces])
        out = out.index_copy(1, rows, torch.cat([o for _, o, _ in pieces], 1))
        if return_lse:
            lse_out = lse_out.index_copy(1, rows, torch.cat([x for _, _, x in pieces], 1))
    out = out.view(B, H, S, D)
    return (out, lse_out.view(B, H, S)) if return_lse else out
