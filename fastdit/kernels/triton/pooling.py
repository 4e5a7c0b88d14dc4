"""Pooled K/V of pyramid levels ``1..L`` for the Triton kernel, in one store.

Level ``l`` averages groups of ``2**l`` consecutive tokens of a kv block over their *valid* tokens (the
definition is the reference's, :func:`~fastdit.kernels.reference.pyramid_level`); the store concatenates the
levels on the token axis, level ``l`` from ``level_start[l]`` on (``S >> 1`` keys of level 1, then ``S >> 2``
of level 2, ...), and the bias is ``log2`` of each pooled key's valid-token count (``-inf`` for a group of
padding only), the kernel's base-2 logit bias.

On a GPU one Triton pass per tensor reads each kv block of K (then V) once and writes every level from it
(each level is the pairwise sum of the one below, so levels cost no extra reads: about 1.9× the bytes of K
and V in all, where the torch path of v1 read K and V once per level and materialised masked copies). In
Triton's CPU interpreter the reference's own function builds the levels, so both backends see the same pooled
values there (the tests run the Triton pass in the interpreter against it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastdit.kernels.common import pyramid_level
from fastdit.kernels.triton.env import INTERPRETED
from fastdit.layout.block import BlockLayout

__all__ = ["pooled_store", "level_starts"]

LOG2E = 1.4426950408889634


def level_starts(seq_len_kv: int, n_levels: int) -> list[int]:
    """Where level ``l >= 1`` starts in the store (entry 0 unused), and the store's length last."""
    starts, offset = [0], 0
    for level in range(1, n_levels):
        starts.append(offset)
        offset += seq_len_kv >> level
    return starts + [offset]


@triton.jit
def _pool_levels(
    X, Valid, XP, seq_kv, n_heads,
    stride_xb, stride_xh, stride_xn, stride_pb, stride_ph, stride_pn,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_KV: tl.constexpr, N_LEVELS: tl.constexpr,
    HAS_PAD: tl.constexpr,
):
    """One kv block of one (batch, head), ``BLOCK_D`` features of it: its pooled rows at every level
    ``1..N_LEVELS-1`` (each level the pairwise sums of the one below, divided by the valid count)."""
    blk = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    offs_n = blk * BLOCK_KV + tl.arange(0, BLOCK_KV)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    live = offs_n < seq_kv
    x = tl.load(X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh + offs_n[:, None] * stride_xn
                + offs_d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
    count = live.to(tl.float32)
    if HAS_PAD:  # padding drops out of the sums and the counts
        count = tl.load(Valid + offs_n, mask=live, other=0).to(tl.float32)
        x = x * count[:, None]
    xp_base = XP + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph
    start = 0
    for level in tl.static_range(1, N_LEVELS):
        x = tl.sum(tl.reshape(x, [BLOCK_KV >> level, 2, BLOCK_D]), 1)  # pairwise sums of the level below
        count = tl.sum(tl.reshape(count, [BLOCK_KV >> level, 2]), 1)
        rows = start + blk * (BLOCK_KV >> level) + tl.arange(0, BLOCK_KV >> level)
        stored = rows < start + (seq_kv >> level)
        tl.store(xp_base + rows[:, None] * stride_pn + offs_d[None, :],
                 (x / tl.maximum(count, 1.0)[:, None]).to(XP.dtype.element_ty), mask=stored[:, None])
        start += seq_kv >> level


def _torch_store(k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, n_levels: int):
    levels = [pyramid_level(k, v, layout, level) for level in range(1, n_levels)]
    kp, vp, bias = (torch.cat(parts, dim) for parts, dim in zip(zip(*levels), (2, 2, 0)))
    return kp, vp, bias * LOG2E



def _log2_counts(layout: BlockLayout, n_levels: int, device: torch.device) -> torch.Tensor:
    """``log2`` of the valid tokens behind each pooled key of levels ``1..L``, concatenated (cached per layout
    validity: it does not depend on K or V)."""
    S, nk, bk = layout.seq_len_kv, layout.n_kv_blocks, layout.block_kv
    valid = torch.ones(S, device=device) if layout.kv_valid is None else layout.kv_valid.to(device).float()
    parts = [torch.log2(valid.view(nk, bk // (1 << lv), 1 << lv).sum(-1).flatten()) for lv in range(1, n_levels)]
    return torch.cat(parts)


def pooled_store(k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, n_levels: int, fused: bool | None = None):
    """``(kp, vp, bias)``: pooled K/V ``[B, H, T, D]`` of levels ``1..n_levels-1`` and their base-2 biases ``[T]``.

    ``fused`` picks the Triton pass (default: on CUDA tensors, not in the interpreter) or the reference's
    per-level torch path."""
    B, H, S, D = k.shape
    if fused is None:
        fused = k.is_cuda and not INTERPRETED
    if not fused or S % layout.block_kv or D % 16:
        return _torch_store(k, v, layout, n_levels)
    starts = level_starts(S, n_levels)
    valid = layout.kv_valid
    has_pad = valid is not None
    block_d = 32 if D % 32 == 0 else 16
    stores = []
    for x in (k, v):
        xp = torch.empty(B, H, starts[-1], D, dtype=x.dtype, device=x.device)
        _pool_levels[(layout.n_kv_blocks, B * H, D // block_d)](
            x, valid.to(x.device, torch.int8) if has_pad else xp, xp, S, H,
            x.stride(0), x.stride(1), x.stride(2), xp.stride(0), xp.stride(1), xp.stride(2),
            HEAD_DIM=D, BLOCK_D=block_d, BLOCK_KV=layout.block_kv, N_LEVELS=n_levels, HAS_PAD=has_pad,
            num_warps=4)
        stores.append(xp)
    return stores[0], stores[1], _log2_counts(layout, n_levels, k.device)
