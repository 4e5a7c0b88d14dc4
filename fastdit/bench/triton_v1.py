"""The v1 Triton forward, kept unchanged for ``fastdit bench kernels`` to time against v2
(:mod:`fastdit.kernels.triton.forward`); nothing else calls it.

v1: a block-sparse flash-attention forward that walks the layout's CSR rows directly.

One program computes ``BLOCK_M`` queries of one (batch, head). It reads the CSR entries of its query block
(per head, or shared: the head stride of the index arrays is then 0) and streams the selected keys through
an online softmax in fp32, so no score matrix is ever stored and the work is proportional to the kept blocks.

**Decoupled block-tile.** The kv tile of ``BLOCK_N`` keys is not tied to the layout's block: slot ``j`` of
the ``t``-th tile of a row segment whose entries hold ``m = 2**log_m`` keys each is key ``g = t·BLOCK_N + j``
of the segment, i.e. key ``g mod m`` of entry ``g // m``. A 128-key block is one tile (or two of 64); eight
pyramid blocks of level 3 (16 pooled keys each) share one 128-wide tile, so coarse levels still run at full
tile width. Entries of one level must be adjacent for that, so layouts with levels are re-sorted per row
by level (``_prepare``, cached per layout).

**Pyramid levels.** Level 0 reads ``k, v`` in place; levels ``l >= 1`` read pooled K/V built in torch by
:func:`~fastdit.kernels.reference.pyramid_level` (the reference's own function, so both backends see the same
pooled values) and add their ``ln(valid tokens in the group)`` logit bias, ``-inf`` for empty groups. The
same bias (``0`` or ``-inf``) masks padded keys at level 0.

Under ``TRITON_INTERPRET=1`` (read by Triton when this module is first imported) the kernel runs in Triton's
CPU interpreter and accepts CPU tensors; that is how CI tests it.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fastdit.kernels.common import pyramid_level
from fastdit.layout.block import BlockLayout

__all__ = ["triton_block_attention", "INTERPRETED"]

# ---------------------------------------------------------------- autotune configs
# (BLOCK_M, BLOCK_N, num_warps, num_stages) per GPU generation; the autotuner times only its own generation's.
# Hopper (sm90, 227 KB shared memory per block, wgmma): 128x128 tiles over 8 warps (two warpgroups) keep the
# tensor cores fed, and 2-3 stages of K and V (64 KB per stage at D=128, bf16) hide HBM latency; 128x64 is
# for rows whose short, gathered pooled segments leave wide tiles half empty.
_HOPPER = [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3), (64, 128, 4, 3)]
# Ampere and Ada (sm80/86/89, 99-163 KB, mma.sync): FlashAttention-2's 128x64 with 4 warps, and 64x64 for
# the smaller shared memory of sm86/89. Configs that don't fit are skipped by the autotuner.
_AMPERE = [(128, 64, 4, 3), (128, 64, 4, 2), (64, 64, 4, 4), (64, 64, 4, 3), (128, 32, 4, 4)]
_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in dict.fromkeys(_HOPPER + _AMPERE)]
_HOPPER_SET, _AMPERE_SET = set(_HOPPER), set(_AMPERE)


def _prune_configs(configs, named_args, **kwargs):
    """Keep this GPU generation's configs whose query tile fits the layout's query block."""
    args = {**named_args, **kwargs}
    block_q = args["BLOCK_Q"]
    wanted = _HOPPER_SET if torch.cuda.get_device_capability(args["Q"].device)[0] >= 9 else _AMPERE_SET
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= block_q
            and (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]
    return kept or [triton.Config({"BLOCK_M": block_q, "BLOCK_N": 64}, num_warps=4, num_stages=2)]


# ---------------------------------------------------------------- the kernel
@triton.jit
def _attend_segment(
    acc, m_i, l_i, q,
    k_ptr, v_ptr, stride_kn, stride_vn, bias_ptr,
    col_ptr, seg_start, seg_end, log_m, n_store,
    qk_scale, offs_n, offs_d,
    HAS_BIAS: tl.constexpr, MASK_TAIL: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    """Online softmax of one query tile over the keys of CSR entries ``[seg_start, seg_end)``.

    Each entry holds ``2**log_m`` consecutive keys of a store of ``n_store`` keys (``k_ptr``/``v_ptr``, rows
    ``stride_*n`` apart). Scores are kept in base 2: ``s = (q·k)·scale·log2(e) + bias·log2(e)``.
    """
    n_keys = (seg_end - seg_start) << log_m
    within_mask = (1 << log_m) - 1
    for start in range(0, n_keys, BLOCK_N):
        # decoupled block-tile: slot j holds key (g mod m) of entry g // m, g = start + j
        g = start + offs_n
        entry = seg_start + (g >> log_m)
        if MASK_TAIL:
            live = g < n_keys
            col = tl.load(col_ptr + entry, mask=live, other=0)
            tok = (col << log_m) + (g & within_mask)
            live = live & (tok < n_store)  # also the missing keys of a partial last block
            k = tl.load(k_ptr + tok[:, None] * stride_kn + offs_d[None, :], mask=live[:, None], other=0.0)
            v = tl.load(v_ptr + tok[:, None] * stride_vn + offs_d[None, :], mask=live[:, None], other=0.0)
        else:
            col = tl.load(col_ptr + entry)
            tok = (col << log_m) + (g & within_mask)
            k = tl.load(k_ptr + tok[:, None] * stride_kn + offs_d[None, :])
            v = tl.load(v_ptr + tok[:, None] * stride_vn + offs_d[None, :])

        # the .to(q.dtype) casts are no-ops except under UPCAST_DOT (see the kernel)
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION) * qk_scale
        if HAS_BIAS:
            # ln(count) in base 2; -inf for padding (and for groups of padding only)
            if MASK_TAIL:
                bias = tl.load(bias_ptr + tok, mask=live, other=0.0)
            else:
                bias = tl.load(bias_ptr + tok)
            s += (bias * 1.4426950408889634)[None, :]
        if MASK_TAIL:
            s = tl.where(live[None, :], s, float("-inf"))

        # online softmax: with the running max m and sum l of exp2(s - m),
        #   m' = max(m, rowmax(s)),  alpha = exp2(m - m'),  l' = alpha·l + rowsum(exp2(s - m')),
        #   acc' = alpha·acc + exp2(s - m')·V.
        # While a row has seen only -inf scores, m' = -inf; subtracting 0 instead keeps exp2 at 0, not NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s - m_sub[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype).to(q.dtype), v.to(q.dtype), acc, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=_CONFIGS, key=["HEAD_DIM", "BLOCK_Q", "LOG_BLOCK_KV", "N_LEVELS", "HAS_PAD", "EVEN_KV"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _block_sparse_fwd(
    Q, K, V, Out, Lse,
    KP, VP, PadBias, PooledBias, LevelStart,
    SegPtr, Cols,
    qk_scale, n_heads, seq_q, seq_kv, seg_stride_h,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    stride_pb, stride_ph, stride_pn,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, LOG_BLOCK_KV: tl.constexpr,
    N_LEVELS: tl.constexpr, HAS_PAD: tl.constexpr, EVEN_KV: tl.constexpr, RETURN_LSE: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """``BLOCK_M`` queries of one (batch, head): every level segment of their query block's CSR row.

    ``SegPtr[h, r·N_LEVELS + l]`` is where level ``l`` of query block ``r`` starts in ``Cols`` (the next
    entry is where it ends); with one level it is the layout's ``row_ptr``.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    q_ptrs = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + offs_m[:, None] * stride_qm
    q = tl.load(q_ptrs + offs_d[None, :], mask=offs_m[:, None] < seq_q, other=0.0)
    if UPCAST_DOT:
        # Triton's CPU interpreter multiplies bf16 operands as raw 16-bit integers; products of bf16 values
        # are exact in fp32, so fp32 dots of the same values give what the tensor cores give.
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # every program tile lies inside one query block (BLOCK_M divides BLOCK_Q)
    seg = SegPtr + h * seg_stride_h + ((pid_m * BLOCK_M) // BLOCK_Q) * N_LEVELS
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    acc, m_i, l_i = _attend_segment(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, PadBias,
        Cols, tl.load(seg), tl.load(seg + 1), LOG_BLOCK_KV, seq_kv, qk_scale, offs_n, offs_d,
        HAS_BIAS=HAS_PAD, MASK_TAIL=not (EVEN_KV and (1 << LOG_BLOCK_KV) % BLOCK_N == 0), BLOCK_N=BLOCK_N,
        PRECISION=PRECISION)
    if N_LEVELS > 1:
        # pooled levels: level l stores seq_kv >> l keys from LevelStart[l] on, 2**(LOG_BLOCK_KV - l) per block
        kp_base = KP + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph
        vp_base = VP + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph
        for level in range(1, N_LEVELS):
            first = tl.load(LevelStart + level)
            acc, m_i, l_i = _attend_segment(
                acc, m_i, l_i, q, kp_base + first * stride_pn, vp_base + first * stride_pn, stride_pn, stride_pn,
                PooledBias + first, Cols, tl.load(seg + level), tl.load(seg + level + 1), LOG_BLOCK_KV - level,
                seq_kv >> level, qk_scale, offs_n, offs_d,
                HAS_BIAS=True, MASK_TAIL=True, BLOCK_N=BLOCK_N, PRECISION=PRECISION)

    # out = acc / l; a row that saw no valid key gets 0 and lse = -inf
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + offs_m[:, None] * stride_om
    tl.store(o_ptrs + offs_d[None, :], out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_q)
    if RETURN_LSE:
        # natural-log LSE of the logits scale·q·k + bias: sum 2^s = 2^m · l, so lse = ln(2)·(m + log2(l))
        lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(Lse + pid_bh.to(tl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)


INTERPRETED: bool = not isinstance(_block_sparse_fwd.fn, triton.runtime.JITFunction)
"""True when Triton's CPU interpreter runs the kernel (``TRITON_INTERPRET=1`` when this module was imported)."""


# ---------------------------------------------------------------- host side
class _Prepared(NamedTuple):
    """What the kernel reads of a layout, on the kernel's device (built once per layout: no host sync later)."""

    n_levels: int  # pyramid levels 0..L in use, L + 1
    seg_ptr: torch.Tensor  # int32 [Hl, nq * n_levels + 1]: where each (query block, level) starts in cols
    cols: torch.Tensor  # int32 [nnz]: kv block ids, grouped by level within each row
    level_start: torch.Tensor  # int32 [n_levels]: first key of level l >= 1 in the pooled store (entry 0 unused)
    layout: BlockLayout  # the layout with its tensors on the device (pooling reads its kv_valid)
    pad_bias: torch.Tensor | None  # fp32 [S_kv]: 0 for real keys, -inf for padding; None without padding


_PREPARED: "weakref.WeakKeyDictionary[BlockLayout, dict[torch.device, _Prepared]]" = weakref.WeakKeyDictionary()


def _prepare(layout: BlockLayout, k: torch.Tensor) -> _Prepared:
    """The kernel's view of ``layout`` on ``k``'s device, cached per layout so static layouts cost nothing.

    Without levels the segments are the rows themselves (``row_ptr``, ``col_idx``). With levels, each row's
    entries are re-sorted by level (stable, so columns stay ascending within a level) and ``seg_ptr`` marks
    where each level starts, which lets the kernel pack same-level blocks into full tiles.
    """
    per_device = _PREPARED.setdefault(layout, {})
    if k.device in per_device:
        return per_device[k.device]
    dev_layout = layout.to(k.device)
    row_ptr, col_idx = dev_layout.row_ptr, dev_layout.col_idx
    n_levels = layout.max_level + 1
    if n_levels == 1:
        seg_ptr, cols = row_ptr, col_idx
    else:
        heads, nq = layout.num_heads, layout.n_q_blocks
        counts = dev_layout.row_counts().flatten()
        row_of_entry = torch.repeat_interleave(torch.arange(counts.numel(), device=k.device), counts,
                                               output_size=layout.nnz)
        key = row_of_entry * n_levels + dev_layout.level.long()  # rows are consecutive in col_idx
        cols = col_idx[torch.sort(key, stable=True).indices]
        per_level = torch.zeros(heads * nq * n_levels, dtype=torch.int64, device=k.device)
        per_level = per_level.index_add_(0, key, torch.ones_like(key)).view(heads, nq, n_levels)
        before = torch.cumsum(per_level, -1) - per_level  # entries of lower levels in the same row
        starts = (row_ptr[:, :nq, None] + before).reshape(heads, nq * n_levels)
        seg_ptr = torch.cat([starts, row_ptr[:, nq:]], 1)
    level_start, offset = [0], 0  # level l >= 1 stores S >> l pooled keys, after those of the levels before it
    for level in range(1, n_levels):
        level_start.append(offset)
        offset += layout.seq_len_kv >> level
    pad_bias = None if layout.kv_valid is None else pyramid_level(k, k, dev_layout, 0)[2]
    prepared = _Prepared(n_levels, seg_ptr.to(torch.int32).contiguous(), cols.to(torch.int32).contiguous(),
                         torch.tensor(level_start, dtype=torch.int32, device=k.device), dev_layout, pad_bias)
    per_device[k.device] = prepared
    return prepared


def _pooled_store(k: torch.Tensor, v: torch.Tensor, prep: _Prepared):
    """Pooled K/V of levels 1..L concatenated on the token axis (``prep.level_start`` says where each begins),
    and their log-count biases."""
    levels = [pyramid_level(k, v, prep.layout, level) for level in range(1, prep.n_levels)]
    return tuple(torch.cat(parts, dim) for parts, dim in zip(zip(*levels), (2, 2, 0)))


def triton_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float,
                           return_lse: bool = False, tiles: tuple[int, int] | None = None
                           ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel (the ``"triton"`` backend; the caller, :func:`fastdit.attention`, validated the inputs).

    ``tiles = (BLOCK_M, BLOCK_N)`` fixes the tile shape instead of autotuning (benchmarks and tests use it to
    reach each code path). In the interpreter, where timing means nothing and each tile operation costs about a
    millisecond, it defaults to the widest tiles, ``(min(64, block_q), 128)``.
    """
    if tiles is None and INTERPRETED:
        tiles = (min(64, layout.block_q), 128)
    if tiles is not None and (tiles[0] < 16 or layout.block_q % tiles[0]
                              or tiles[1] < 16 or tiles[1] & (tiles[1] - 1)):
        raise ValueError(f"tiles {tiles}: BLOCK_M must be >= 16 and divide block_q={layout.block_q}, and BLOCK_N "
                         "must be a power of two >= 16")
    # the kernel reads rows of D contiguous elements
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    B, H, Sq, D = q.shape
    Skv = k.shape[2]
    dev = q.device
    prep = _prepare(layout, k)
    out = torch.empty_like(q)
    # tensors the kernel doesn't read (no lse, no padding, no levels) are passed as placeholders
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=dev) if return_lse else out
    pad_bias = out if prep.pad_bias is None else prep.pad_bias
    kp, vp, pooled_bias = _pooled_store(k, v, prep) if prep.n_levels > 1 else (k, k, k)
    log_bk = layout.block_kv.bit_length() - 1
    upcast = INTERPRETED and q.dtype == torch.bfloat16
    args = (
        q, k, v, out, lse, kp, vp, pad_bias, pooled_bias, prep.level_start, prep.seg_ptr, prep.cols,
        scale * 1.4426950408889634, H, Sq, Skv, prep.seg_ptr.stride(0) if layout.num_heads > 1 else 0,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        kp.stride(0), kp.stride(1), kp.stride(2),
    )
    meta = dict(
        HEAD_DIM=D, BLOCK_Q=layout.block_q, LOG_BLOCK_KV=log_bk, N_LEVELS=prep.n_levels,
        HAS_PAD=layout.kv_valid is not None, EVEN_KV=Skv % layout.block_kv == 0, RETURN_LSE=return_lse,
        PRECISION="ieee" if q.dtype == torch.float32 or upcast else "tf32", UPCAST_DOT=upcast,
    )
    if tiles is None:
        grid = lambda m: (triton.cdiv(Sq, m["BLOCK_M"]), B * H)  # noqa: E731
        _block_sparse_fwd[grid](*args, **meta)
    else:
        block_m, block_n = tiles
        _block_sparse_fwd.fn[(triton.cdiv(Sq, block_m), B * H)](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n)
    return (out, lse) if return_lse else out
