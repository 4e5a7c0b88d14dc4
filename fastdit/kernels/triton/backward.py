"""Triton backward of block-sparse attention (FlashAttention-2 structure), for level-0 layouts.

With ``P = softmax(S)`` recomputed from the forward's log-sum-exp and ``Δ_i = rowsum(dO_i ∘ O_i)``:

    dV = Pᵀ·dO,   dP = dO·Vᵀ,   dS = P ∘ (dP − Δ),   dQ = scale·dS·K,   dK = scale·dSᵀ·Q

Two kernels share the layout's blocks: ``_bwd_dq`` walks each query block's CSR row (as the forward does) and
accumulates ``dQ``; ``_bwd_dkdv`` walks the layout's *transpose* (for each key block, the query blocks that
read it; built once per layout and cached) and accumulates ``dK`` and ``dV`` without atomics. Padded keys
carry the forward's ``-inf`` bias, so their probabilities, and every gradient through them, are zero. Pooled
pyramid levels have no backward here: autograd then runs through the torch reference.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fastdit.kernels.triton.env import INTERPRETED
from fastdit.layout.block import BlockLayout

__all__ = ["triton_block_attention_backward"]

LOG2E = 1.4426950408889634


@triton.jit
def _scores(q, k, bias_ptr, tok, live, qk_scale, lse2, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr):
    """``P`` of a ``[BLOCK_M, BLOCK_N]`` tile from the forward's base-2 log-sum-exp (0 where masked)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if HAS_BIAS:
        s += (tl.load(bias_ptr + tok, mask=live, other=0.0) * 1.4426950408889634)[None, :]
    s = tl.where(live[None, :], s, float("-inf"))
    # a query row that saw no valid key has lse = -inf; its probabilities are 0, not NaN
    finite = lse2 != float("-inf")
    return tl.where(finite[:, None], tl.exp2(s - tl.where(finite, lse2, 0.0)[:, None]), 0.0)


@triton.jit
def _bwd_dq(
    Q, K, V, DO, Lse, Delta, DQ, PadBias, RowPtr, Cols,
    qk_scale, scale, n_heads, seq_q, seq_kv, row_stride_h,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, LOG_BLOCK_KV: tl.constexpr, HAS_PAD: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """``dQ`` of ``BLOCK_M`` queries of one (batch, head), over the key blocks of their CSR row."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rows_ok = offs_m < seq_q
    q_off = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(Q + q_off, mask=rows_ok[:, None], other=0.0)
    do = tl.load(DO + q_off, mask=rows_ok[:, None], other=0.0)
    if UPCAST_DOT:  # the CPU interpreter multiplies bf16 as raw integers; bf16 products are exact in fp32
        q, do = q.to(tl.float32), do.to(tl.float32)
    lse2 = tl.load(Lse + pid_bh.to(tl.int64) * seq_q + offs_m, mask=rows_ok, other=float("-inf")) * 1.4426950408889634
    delta = tl.load(Delta + pid_bh.to(tl.int64) * seq_q + offs_m, mask=rows_ok, other=0.0)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    row = RowPtr + h * row_stride_h + (pid_m * BLOCK_M) // BLOCK_Q
    first = tl.load(row)
    n_keys = (tl.load(row + 1) - first) << LOG_BLOCK_KV
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(0, n_keys, BLOCK_N):
        g = start + offs_n  # key g mod block of entry g // block, as in the forward
        col = tl.load(Cols + first + (g >> LOG_BLOCK_KV))
        tok = (col << LOG_BLOCK_KV) + (g & ((1 << LOG_BLOCK_KV) - 1))
        live = tok < seq_kv
        k = tl.load(k_base + tok[:, None] * stride_kn + offs_d[None, :], mask=live[:, None], other=0.0).to(q.dtype)
        v = tl.load(v_base + tok[:, None] * stride_kn + offs_d[None, :], mask=live[:, None], other=0.0).to(q.dtype)
        p = _scores(q, k, PadBias, tok, live, qk_scale, lse2, HAS_PAD, PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(q.dtype), k, dq, input_precision=PRECISION)
    tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=rows_ok[:, None])


@triton.jit
def _bwd_dkdv(
    Q, K, V, DO, Lse, Delta, DK, DV, PadBias, ColPtr, Rows,
    qk_scale, scale, n_heads, seq_q, seq_kv, col_stride_h,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    HEAD_DIM: tl.constexpr, LOG_BLOCK_Q: tl.constexpr, BLOCK_KV: tl.constexpr, HAS_PAD: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """``dK, dV`` of ``BLOCK_N`` keys of one (batch, head), over the query blocks that read their block."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    live = offs_n < seq_kv
    k_off = b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :]
    k = tl.load(K + k_off, mask=live[:, None], other=0.0)
    v = tl.load(V + k_off, mask=live[:, None], other=0.0)
    if UPCAST_DOT:
        k, v = k.to(tl.float32), v.to(tl.float32)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_base = DO + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    col = ColPtr + h * col_stride_h + (pid_n * BLOCK_N) // BLOCK_KV
    first = tl.load(col)
    n_queries = (tl.load(col + 1) - first) << LOG_BLOCK_Q
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for start in range(0, n_queries, BLOCK_M):
        g = start + offs_m  # query g mod block of the (g // block)-th query block reading this key block
        row = tl.load(Rows + first + (g >> LOG_BLOCK_Q))
        tok = (row << LOG_BLOCK_Q) + (g & ((1 << LOG_BLOCK_Q) - 1))
        rows_ok = tok < seq_q
        q = tl.load(q_base + tok[:, None] * stride_qm + offs_d[None, :], mask=rows_ok[:, None], other=0.0)
        do = tl.load(do_base + tok[:, None] * stride_qm + offs_d[None, :], mask=rows_ok[:, None], other=0.0)
        q, do = q.to(k.dtype), do.to(k.dtype)
        lse2 = tl.load(Lse + pid_bh.to(tl.int64) * seq_q + tok, mask=rows_ok, other=float("-inf")) * 1.4426950408889634
        delta = tl.load(Delta + pid_bh.to(tl.int64) * seq_q + tok, mask=rows_ok, other=0.0)
        p = _scores(q, k, PadBias, offs_n, live, qk_scale, lse2, HAS_PAD, PRECISION)  # [BLOCK_M, BLOCK_N]
        dv = tl.dot(tl.trans(p).to(k.dtype), do, dv, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk = tl.dot(tl.trans(ds).to(k.dtype), q, dk, input_precision=PRECISION)
    tl.store(DK + k_off, (dk * scale).to(DK.dtype.element_ty), mask=live[:, None])
    tl.store(DV + k_off, dv.to(DV.dtype.element_ty), mask=live[:, None])


class _Transposed(NamedTuple):
    """A layout's CSR and its transpose on one device, int32, as the backward kernels read them."""

    row_ptr: torch.Tensor  # [Hl, nq + 1]
    cols: torch.Tensor  # [nnz] key block of each entry, by (head, query block)
    col_ptr: torch.Tensor  # [Hl, nk + 1]
    rows: torch.Tensor  # [nnz] query block of each entry, by (head, key block)
    pad_bias: torch.Tensor | None  # fp32 [S_kv]: 0 for real keys, -inf for padding


_TRANSPOSED: "weakref.WeakKeyDictionary[BlockLayout, dict[torch.device, _Transposed]]" = weakref.WeakKeyDictionary()


def _transposed(layout: BlockLayout, device: torch.device) -> _Transposed:
    """The layout's transpose (for each key block, the query blocks reading it), built once per layout."""
    per_device = _TRANSPOSED.setdefault(layout, {})
    if device in per_device:
        return per_device[device]
    heads, nq, nk = layout.num_heads, layout.n_q_blocks, layout.n_kv_blocks
    counts = layout.row_counts().flatten()
    entry_row = torch.repeat_interleave(torch.arange(heads * nq), counts, output_size=layout.nnz)  # h·nq + r
    key = (entry_row // nq) * nk + layout.col_idx  # h·nk + c
    order = torch.sort(key, stable=True).indices  # query blocks stay ascending within a key block
    flat = torch.zeros(heads * nk + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(key, minlength=heads * nk), 0, out=flat[1:])
    col_ptr = flat[torch.arange(heads).unsqueeze(1) * nk + torch.arange(nk + 1)]
    pad_bias = None if layout.kv_valid is None else torch.log(layout.kv_valid.to(device).float())  # 0 / -inf
    prepared = _Transposed(*(x.to(device, torch.int32).contiguous() for x in
                             (layout.row_ptr, layout.col_idx, col_ptr, (entry_row % nq)[order])), pad_bias)
    per_device[device] = prepared
    return prepared


def triton_block_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                                    lse: torch.Tensor, dout: torch.Tensor, layout: BlockLayout, scale: float,
                                    tiles: tuple[int, int] = (64, 64)
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`~fastdit.kernels.triton.forward.triton_block_attention` on a level-0 layout,
    from its output and natural-log ``lse`` and the output gradient ``dout`` (all ``[B, H, S, D]``)."""
    if layout.max_level > 0:
        raise ValueError("the Triton backward runs level-0 layouts only (pyramid levels: use the torch backend)")
    q, k, v, dout = (x.contiguous() for x in (q, k, v, dout))
    B, H, Sq, D = q.shape
    Skv = k.shape[2]
    block_m = min(tiles[0], layout.block_q)
    block_n = min(tiles[1], layout.block_kv)
    prep = _transposed(layout, q.device)
    delta = (out.float() * dout.float()).sum(-1).contiguous()  # Δ = rowsum(dO ∘ O)
    lse = lse.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    pad_bias = prep.pad_bias if prep.pad_bias is not None else lse
    upcast = INTERPRETED and q.dtype == torch.bfloat16
    common = dict(HEAD_DIM=D, HAS_PAD=prep.pad_bias is not None,
                  PRECISION="ieee" if q.dtype == torch.float32 or upcast else "tf32", UPCAST_DOT=upcast,
                  BLOCK_M=block_m, BLOCK_N=block_n)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    shared = layout.num_heads == 1
    _bwd_dq[(triton.cdiv(Sq, block_m), B * H)](
        q, k, v, dout, lse, delta, dq, pad_bias, prep.row_ptr, prep.cols,
        scale * LOG2E, scale, H, Sq, Skv, 0 if shared else prep.row_ptr.stride(0), *strides,
        BLOCK_Q=layout.block_q, LOG_BLOCK_KV=layout.block_kv.bit_length() - 1, **common)
    _bwd_dkdv[(triton.cdiv(Skv, block_n), B * H)](
        q, k, v, dout, lse, delta, dk, dv, pad_bias, prep.col_ptr, prep.rows,
        scale * LOG2E, scale, H, Sq, Skv, 0 if shared else prep.col_ptr.stride(0), *strides,
        LOG_BLOCK_Q=layout.block_q.bit_length() - 1, BLOCK_KV=layout.block_kv, **common)
    return dq, dk, dv
