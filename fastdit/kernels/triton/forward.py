"""Triton backend: a block-sparse flash-attention forward that walks the layout's CSR rows directly.

One program computes ``BLOCK_M`` queries of one (batch, head). It streams the keys its query block attends
through an online softmax in fp32, so no score matrix is ever stored and the work is proportional to the kept
blocks.

**Level 0: one scalar per kv tile.** Full-resolution keys are read in tiles of ``KV_TILE`` contiguous keys
(``KV_TILE`` divides the layout's block). Before the first call on a layout, the host expands each query
block's CSR row into the list of its kv tiles (``_tile_list``, cached per layout and tile width), one int32
per tile: the tile's first key. The kernel loads that one scalar per iteration, so K/V addresses are a scalar
plus a constant pattern and Triton's pipeliner keeps as many K/V buffers in flight as ``num_stages`` allows
(the per-key index loads of v1 cost a pipeline stage). Tiles that hold padding only are left out of the list,
and query tiles of padding only skip their loops, so a half-padded temporal tile row costs half.

**Full tiles unmasked.** Each row lists its full tiles first and its partial ones (some keys padding, such as
the last tile of a sequence padded to whole blocks: every row that reaches it at Wan 480p's 32 760 tokens)
last, with the count of full ones. The kernel runs the full tiles through a loop with no mask at all, the
same code as a layout without padding, and only the partial ones through a second loop that reads one
validity bit per key (``KvBits``).

**Heavy rows first.** Programs map to (head, query block) through a per-layout order by decreasing tile count
(``_row_order``, cached with the layout), so the rows with most tiles start in the first wave and the tail
is made of short rows.

**Pyramid levels.** Levels ``l >= 1`` read pooled K/V (:func:`~fastdit.kernels.triton.pooling.pooled_store`: one
Triton pass under the kernel, the reference's :func:`~fastdit.kernels.reference.pyramid_level` in the
interpreter) and add their ``ln(valid tokens in the group)`` logit bias, ``-inf`` for empty groups. A pooled
block of level ``l`` holds ``block_kv >> l`` keys, so a ``BLOCK_N`` tile of a level segment gathers several
blocks (decoupled block-tile: slot ``j`` of the ``t``-th tile of a segment of ``m``-key entries is key
``g mod m`` of entry ``g // m``, ``g = t·BLOCK_N + j``). Entries of one level are adjacent for that: layouts
with levels are re-sorted per row by level (``_prepare``). The pooled loop is a ``tl.range`` with the config's
stage count: given explicitly, Triton's pipeliner stages the gathered block indices through shared memory with
the keys instead of carrying them in registers (sm_80: no spill, was 8 bytes; sm_90: 221 registers, was 255).

**Opt-in Hopper paths** (until timed on a GPU): ``FASTDIT_TRITON_TMA=1`` reads Q/K/V through TMA tensor
descriptors, made on the host (``_descriptors``: Triton's ``TensorDescriptor`` over ``[B, H, S, D]``, passed as
kernel parameters), so the kernel doesn't write and fence its own; ``FASTDIT_TRITON_WS=1`` also marks the
level-0 loop ``warp_specialize``, which Triton's Hopper partitioner splits into a TMA producer warp and two
consumer warpgroups of 64 query rows each (``_HOPPER_WS`` configs). That loop runs all of a row's level-0 tiles,
partial ones masked by a 0/−inf key bias the producer copies with the tile (Triton 3.9's partitioner fails on a
second loop beside it and on the bit mask's load), and makes its Q descriptor itself (the partitioner splits Q's
load into the consumers' halves, which it cannot do to a host descriptor's fixed block).

Under ``TRITON_INTERPRET=1`` (read by Triton when this module is first imported) the kernel runs in Triton's
CPU interpreter and accepts CPU tensors; that is how CI tests it.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from fastdit.kernels.triton.env import INTERPRETED, USE_TMA, USE_WS
from fastdit.kernels.triton.pooling import pooled_store
from fastdit.layout.block import BlockLayout

__all__ = ["triton_block_attention", "INTERPRETED", "choose_kv_tile", "USE_TMA", "USE_WS"]

LOG2E = 1.4426950408889634
NARROW_TILE_SAVING = 0.04  # share of level-0 keys that 64-key tiles must skip before they replace 128-key ones

# ---------------------------------------------------------------- autotune configs
# (BLOCK_M, BLOCK_N, num_warps, num_stages) per GPU generation; the autotuner times only its own generation's,
# only those whose BLOCK_N is the host's kv tile (``choose_kv_tile``) and that fit the device's shared memory.
# Each was compiled at head dim 128, bf16, for its target with no GPU (``fastdit bench kernels --compile-only``,
# bench/results/kernels_compile.md): no spills, within shared memory,
# >= 3 K/V buffers in the level-0 loop, no serialized wgmma. With the tile index prefetched a tile ahead,
# num_stages = s keeps s K/V buffers on sm90 and s - 1 on sm80.
# Hopper (sm90, 227 KB, wgmma): 128x128 over 8 warps (two warpgroups), 3 buffers = 224 KB; 128x64 with 3-5
# buffers for narrow tiles and pooled levels; 64x64 over one warpgroup for short query blocks.
_HOPPER = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 64, 8, 5), (64, 64, 4, 4)]
# Ampere (sm80, 163 KB, mma.sync): FlashAttention-2's 128x64 (8 warps: 4 spill at D=128) and 64x64, 3-4 buffers.
_AMPERE = [(128, 64, 8, 4), (128, 64, 8, 5), (64, 64, 4, 4), (64, 64, 4, 5)]
# level-0 layouts only. sm90: with pooled levels these spilled or serialized wgmma while the pooled loop kept its
# gathered indices in registers; since it stages them in shared memory they compile green (221 and 235
# registers), left out until a GPU says whether they are worth the longer autotuning. sm80: 1104-byte spills.
_LEVEL0_ONLY = {(128, 64, 8, 5), (64, 64, 4, 4)}  # sm90
_LEVEL0_ONLY_AMPERE = {(128, 64, 8, 4), (128, 64, 8, 5)}
# sm86/89 (99 KB) fit none of the above: 64x64 with 2 buffers (90 KB)
_SMALL_SHARED = (64, 64, 4, 3)
# Hopper, warp-specialized level-0 loop (FASTDIT_TRITON_WS=1; partial tiles in it through the key bias):
# num_warps is per consumer warpgroup; Triton adds a producer warp for the TMA copies and splits BLOCK_M
# over two consumers (FlashAttention-3's ping-pong), so BLOCK_M = 128: at 64 both consumers got the same 64 rows
# and computed them twice (the compile report's partition row ranges show it).
_HOPPER_WS = [(128, 128, 4, 2), (128, 64, 4, 3), (128, 64, 4, 4)]


def _q_block(nargs: dict) -> None:
    """Autotune pre-hook: the Q descriptor's block is the config's query tile (no-op off the TMA path)."""
    if isinstance(nargs["QDesc"], TensorDescriptor):
        nargs["QDesc"].block_shape = [1, 1, nargs["BLOCK_M"], nargs["HEAD_DIM"]]


_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "NUM_STAGES": s}, num_warps=w, num_stages=s,
                          pre_hook=_q_block)
            for m, n, w, s in dict.fromkeys(_HOPPER + _AMPERE + [_SMALL_SHARED] + _HOPPER_WS)]


def config_used(config: tuple[int, int, int, int], hopper: bool, n_levels: int, ws: bool = False) -> bool:
    """Whether the autotuner tries ``config`` on this generation for layouts of ``n_levels`` levels (layouts
    with levels get 64-key tiles: ``choose_kv_tile``), warp-specialized (``ws``) or not."""
    if ws:
        return hopper and n_levels == 1 and config in _HOPPER_WS
    if n_levels > 1 and config[1] != 64:
        return False
    if not hopper:
        return config in _AMPERE and (n_levels == 1 or config not in _LEVEL0_ONLY_AMPERE)
    return config in _HOPPER and (n_levels == 1 or config not in _LEVEL0_ONLY)


def _shared_estimate(block_m: int, block_n: int, stages: int, head_dim: int, elem: int, hopper: bool) -> int:
    """Shared memory of a config as compiled (bench/results/kernels_compile.md): Q and the K/V buffers
    (``stages`` on sm90, ``stages - 1`` on sm80) and 2 KB (sm80's 64-query tiles add 8 KB of scratch, under
    the cap either way)."""
    buffers = stages if hopper else stages - 1
    return (block_m + 2 * block_n * buffers) * head_dim * elem + 2048


def _prune_configs(configs, named_args, **kwargs):
    """Keep this GPU generation's configs whose query tile fits the layout's query block, whose BLOCK_N is the
    kv tile the host chose (``KV_TILE``; 64 under 64-key blocks) and that fit the device's shared memory."""
    args = {**named_args, **kwargs}
    q, block_q, kv_tile = args["Q"], args["BLOCK_Q"], max(args["KV_TILE"], 64)
    hopper = torch.cuda.get_device_capability(q.device)[0] >= 9
    limit = triton.runtime.driver.active.utils.get_device_properties(q.device.index)["max_shared_mem"]
    key = lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)  # noqa: E731
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= block_q and c.kwargs["BLOCK_N"] == kv_tile
            and config_used(key(c), hopper, args["N_LEVELS"], args["WARP_SPEC"])
            and _shared_estimate(*key(c)[:2], key(c)[3], args["HEAD_DIM"], q.element_size(), hopper) <= limit]
    m, n, w, s = _SMALL_SHARED
    return kept or [triton.Config({"BLOCK_M": min(block_q, m), "BLOCK_N": n, "NUM_STAGES": s}, num_warps=w,
                                  num_stages=s, pre_hook=_q_block)]


# ---------------------------------------------------------------- the kernel
@triton.jit
def _attend_level0(
    acc, m_i, l_i, q, k_base, v_base, k_desc, v_desc, bias_desc, b, h, stride_kn, stride_vn, Tiles, t_start, t_end,
    KvBits, seq_kv, qk_scale, offs_d, MASKED: tl.constexpr, EVEN_KV: tl.constexpr, KV_TILE: tl.constexpr,
    HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr, WARP_SPEC: tl.constexpr, PRECISION: tl.constexpr,
):
    """Online softmax of one query tile over the full-resolution kv tiles ``Tiles[t_start:t_end]``.

    Each entry is the first key of ``KV_TILE`` contiguous keys. ``MASKED`` tiles (those holding padding, a row's
    last ones) read one validity bit per key from ``KvBits``; the others are all real keys and read nothing, so
    the loop over a row's full tiles is the same code with and without padding elsewhere. The warp-specialized
    loop (``WARP_SPEC``) runs all of a row's tiles: with ``MASKED`` each adds its row of the ``[tiles, KV_TILE]``
    0/−inf key bias, read through ``bias_desc`` (Triton 3.9's partitioner fails on a second loop beside it, and
    on the bit mask's gathered load inside it). Scores stay raw (``q·k``) until the exponent:
    ``p = exp2(s·scale·log2e − m)``, one FMA per score.
    """
    offs_n = tl.arange(0, KV_TILE)
    # Pipelined: each tile's entry is loaded a tile ahead, so the entry load doesn't take a pipeline stage.
    # Warp-specialized: the partitioner gives the entry load and the K/V copies to a producer warp, and the
    # prefetch's loop-carried scalar is what it can't split, so the entry is read in its own iteration.
    entry_next = 0 if WARP_SPEC else tl.load(Tiles + t_start, mask=t_start < t_end, other=0)
    for t in tl.range(t_start, t_end, warp_specialize=WARP_SPEC):
        if WARP_SPEC:
            entry = tl.load(Tiles + t)
        else:
            entry = entry_next
            entry_next = tl.load(Tiles + t + 1, mask=t + 1 < t_end, other=0)
        tok = entry + offs_n
        if USE_TMA:  # the copy engine zero-fills rows past seq_kv
            k = k_desc.load([b, h, entry, 0]).reshape(KV_TILE, HEAD_DIM)
            v = v_desc.load([b, h, entry, 0]).reshape(KV_TILE, HEAD_DIM)
        else:
            k_ptrs = k_base + tok[:, None] * stride_kn + offs_d[None, :]
            v_ptrs = v_base + tok[:, None] * stride_vn + offs_d[None, :]
            if EVEN_KV or not MASKED:  # keys past seq_kv are padding: only masked tiles hold them
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
            else:  # the missing keys of a partial last block
                k = tl.load(k_ptrs, mask=(tok < seq_kv)[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=(tok < seq_kv)[:, None], other=0.0)
        # the .to(q.dtype) casts are no-ops except under UPCAST_DOT (see the kernel)
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION)
        if MASKED:
            if WARP_SPEC:  # the producer warp copies the tile's 0/-inf key bias too (a mask load it can't split)
                s = s + bias_desc.load([entry // KV_TILE, 0])
            else:
                bits = tl.load(KvBits + (tok >> 5))
                s = tl.where((((bits >> (tok & 31)) & 1) != 0)[None, :], s, float("-inf"))
        # online softmax in base 2 on raw scores: m' = max(m, scale·rowmax(s)), alpha = exp2(m − m'),
        # p = exp2(fma(s, scale, −m')), l' = alpha·l + rowsum(p), acc' = alpha·acc + p·V. While a row has seen
        # only -inf scores, m' = -inf; subtracting 0 instead keeps exp2 at 0, not NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s * qk_scale - m_sub[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype).to(q.dtype), v.to(q.dtype), acc, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _pooled_tile(t, seg, Cols, LevelStart, seq_kv, offs_n, N_LEVELS: tl.constexpr, LOG_BLOCK_KV: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """Store rows and validity of the ``t``-th pooled tile of a row: its level is where ``t`` falls among the
    levels' tile counts (levels are few: unrolled; the segment bounds are loop invariants)."""
    level = 0
    seg_start = 0
    seg_end = 0
    before = 0  # tiles of the levels before this tile's
    counted = 0
    for lv in tl.static_range(1, N_LEVELS):
        lo = tl.load(seg + lv)
        hi = tl.load(seg + lv + 1)
        n_lv = tl.cdiv((hi - lo) << (LOG_BLOCK_KV - lv), BLOCK_N)
        here = (t >= counted) & (t < counted + n_lv)
        level = tl.where(here, lv, level)
        seg_start = tl.where(here, lo, seg_start)
        seg_end = tl.where(here, hi, seg_end)
        before = tl.where(here, counted, before)
        counted += n_lv
    log_m = LOG_BLOCK_KV - level
    g = (t - before) * BLOCK_N + offs_n
    live = g < ((seg_end - seg_start) << log_m)  # false everywhere past the last tile
    col = tl.load(Cols + seg_start + (g >> log_m), mask=live, other=0)
    tok = (col << log_m) + (g & ((1 << log_m) - 1))
    live = live & (tok < (seq_kv >> level))  # also the missing keys of a partial last block
    return tok + tl.load(LevelStart + level), live


@triton.jit
def _attend_pooled(
    acc, m_i, l_i, q, kp_base, vp_base, stride_pn, PooledBias, LevelStart, Cols, seg, dead, seq_kv,
    qk_scale, offs_n, offs_d, N_LEVELS: tl.constexpr, LOG_BLOCK_KV: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr,
):
    """Online softmax over the pooled levels ``1..N_LEVELS-1`` of one row, in one loop over their tiles.

    Level ``l``'s entries are ``Cols[seg[l]:seg[l+1]]``, each ``2**(LOG_BLOCK_KV - l)`` consecutive keys of the
    level's store (from ``LevelStart[l]`` in ``kp_base``); a tile of ``BLOCK_N`` keys gathers several entries,
    whose indices are loaded a tile ahead (as level 0's); the loop's ``NUM_STAGES`` (the config's) is given
    explicitly, which has the pipeliner stage those index loads through shared memory too. Scores carry the
    level's log-count bias, so they are scaled before the max: ``s = fma(q·k, scale, bias)``.
    """
    n_tiles = 0
    for lv in tl.static_range(1, N_LEVELS):
        n_tiles += tl.cdiv((tl.load(seg + lv + 1) - tl.load(seg + lv)) << (LOG_BLOCK_KV - lv), BLOCK_N)
    n_tiles = tl.where(dead, 0, n_tiles)
    tok_next, live_next = _pooled_tile(0, seg, Cols, LevelStart, seq_kv, offs_n, N_LEVELS, LOG_BLOCK_KV, BLOCK_N)
    for t in tl.range(0, n_tiles, num_stages=NUM_STAGES):
        tok = tok_next
        live = live_next
        tok_next, live_next = _pooled_tile(t + 1, seg, Cols, LevelStart, seq_kv, offs_n, N_LEVELS, LOG_BLOCK_KV,
                                           BLOCK_N)
        k = tl.load(kp_base + tok[:, None] * stride_pn + offs_d[None, :], mask=live[:, None], other=0.0)
        v = tl.load(vp_base + tok[:, None] * stride_pn + offs_d[None, :], mask=live[:, None], other=0.0)
        bias = tl.load(PooledBias + tok, mask=live, other=float("-inf"))  # log2(count), -inf: empty group
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION) * qk_scale + bias[None, :]
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s - m_sub[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype).to(q.dtype), v.to(q.dtype), acc, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _slot(RowOrder, j, n_batch, n_q_blocks):
    """Head and query block of the ``j``-th (head, query block, batch) in launch order, read again: a volatile
    load, which the compiler doesn't merge with the first, so the two need not stay live through the loops."""
    slot = tl.load(RowOrder + j // n_batch, volatile=True)
    return slot // n_q_blocks, slot % n_q_blocks


@triton.autotune(configs=_CONFIGS, key=["HEAD_DIM", "BLOCK_Q", "LOG_BLOCK_KV", "N_LEVELS", "HAS_MASK", "EVEN_KV",
                                        "KV_TILE", "SKIP_Q", "USE_TMA", "WARP_SPEC"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _block_sparse_fwd(
    Q, K, V, Out, Lse, QDesc, KDesc, VDesc, BiasDesc,
    KP, VP, PooledBias, LevelStart,
    TilePtr, Tiles, KvBits, SegPtr, Cols, RowOrder,
    qk_scale, n_batch, n_heads, n_q_blocks, seq_q, seq_kv, tile_stride_h, seg_stride_h,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    stride_pb, stride_ph, stride_pn,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, LOG_BLOCK_KV: tl.constexpr, N_LEVELS: tl.constexpr,
    HAS_MASK: tl.constexpr, EVEN_KV: tl.constexpr, KV_TILE: tl.constexpr, SKIP_Q: tl.constexpr,
    RETURN_LSE: tl.constexpr, PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, USE_TMA: tl.constexpr,
    WARP_SPEC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """``BLOCK_M`` queries of one (batch, head): the level-0 tiles of their query block, then its pooled levels.

    Programs run heavy rows first: program ``p`` takes sub-tile ``p mod (BLOCK_Q / BLOCK_M)`` of the (head, query
    block) ``RowOrder[j // n_batch]`` of batch ``j mod n_batch``, ``j = p // (BLOCK_Q / BLOCK_M)``; ``RowOrder``
    lists ``h·n_q_blocks + r`` by decreasing tile count, so the rows with most tiles start first and the last
    wave holds short ones. ``TilePtr[h, 2r]``, ``[h, 2r + 1]`` and ``[h, 2r + 2]`` bound query block ``r``'s
    level-0 tiles in ``Tiles``: its full tiles first (no mask), then its partial ones (masked, with ``HAS_MASK``).
    ``SegPtr[h, r·N_LEVELS + l]`` is where its level-``l`` entries start in ``Cols`` (read for ``l >= 1`` only).
    With ``SKIP_Q`` a query tile whose tokens are all padding (``KvBits``, the same positions on the query side)
    visits nothing.
    """
    SUB: tl.constexpr = BLOCK_Q // BLOCK_M
    LOG_BLOCK_M: tl.constexpr = BLOCK_M.bit_length() - 1
    pid = tl.program_id(0)
    j = pid // SUB
    b = j % n_batch
    slot = tl.load(RowOrder + j // n_batch)
    h = slot // n_q_blocks
    row = slot % n_q_blocks
    pid_m = row * SUB + pid % SUB
    # A shift, not the product the Q descriptor's coordinate uses: Triton 3.9's partitioner moves the second
    # consumer's coordinate 64 rows on, and when offs_m shares that scalar it moves offs_m too, on top of the
    # rows 64..127 it already gives that consumer (whose stores then land 64 rows late; the compile report's
    # partition row ranges show it).
    offs_m = (pid_m << LOG_BLOCK_M) + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    if WARP_SPEC:
        # the warp-specialized loop needs Q from a descriptor, and one made here: the partitioner splits Q's
        # load into the two consumers' 64-row halves, which it cannot do to a host descriptor's fixed block
        q_desc = tl.make_tensor_descriptor(q_base, shape=[seq_q, HEAD_DIM], strides=[stride_qm, 1],
                                           block_shape=[BLOCK_M, HEAD_DIM])
        q = q_desc.load([pid_m * BLOCK_M, 0])
    elif USE_TMA:  # rows past seq_q zero-filled
        q = QDesc.load([b, h, pid_m * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
    else:
        q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], mask=offs_m[:, None] < seq_q,
                    other=0.0)
    if UPCAST_DOT:
        # Triton's CPU interpreter multiplies bf16 operands as raw 16-bit integers; products of bf16 values
        # are exact in fp32, so fp32 dots of the same values give what the tensor cores give.
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # every program tile lies inside one query block (BLOCK_M divides BLOCK_Q)
    tile_row = TilePtr + h * tile_stride_h + 2 * row
    t_start = tl.load(tile_row)
    t_full = tl.load(tile_row + 1)
    t_end = tl.load(tile_row + 2)
    # the last query block's sub-tiles past seq_q visit nothing; with SKIP_Q neither does a query tile of
    # padding only (its rows get 0 and lse = -inf; rows past seq_q read as padding)
    if SKIP_Q:
        q_bits = tl.load(KvBits + (offs_m >> 5), mask=offs_m < seq_q, other=0)
        dead = tl.max((q_bits >> (offs_m & 31)) & 1, 0) == 0
    else:
        dead = pid_m * BLOCK_M >= seq_q
    t_full = tl.where(dead, t_start, t_full)
    t_end = tl.where(dead, t_start, t_end)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    if WARP_SPEC:  # one loop over all of the row's tiles, the masked ones (after t_full) biased
        acc, m_i, l_i = _attend_level0(
            acc, m_i, l_i, q, k_base, v_base, KDesc, VDesc, BiasDesc, b, h, stride_kn, stride_vn, Tiles, t_start,
            t_end, KvBits, seq_kv, qk_scale, offs_d, MASKED=HAS_MASK, EVEN_KV=EVEN_KV, KV_TILE=KV_TILE,
            HEAD_DIM=HEAD_DIM, USE_TMA=USE_TMA, WARP_SPEC=True, PRECISION=PRECISION)
    else:  # the row's full tiles unmasked, then those holding padding masked
        acc, m_i, l_i = _attend_level0(
            acc, m_i, l_i, q, k_base, v_base, KDesc, VDesc, BiasDesc, b, h, stride_kn, stride_vn, Tiles, t_start,
            t_full, KvBits, seq_kv, qk_scale, offs_d, MASKED=False, EVEN_KV=EVEN_KV, KV_TILE=KV_TILE,
            HEAD_DIM=HEAD_DIM, USE_TMA=USE_TMA, WARP_SPEC=False, PRECISION=PRECISION)
        if HAS_MASK:
            acc, m_i, l_i = _attend_level0(
                acc, m_i, l_i, q, k_base, v_base, KDesc, VDesc, BiasDesc, b, h, stride_kn, stride_vn, Tiles, t_full,
                t_end, KvBits, seq_kv, qk_scale, offs_d, MASKED=True, EVEN_KV=EVEN_KV, KV_TILE=KV_TILE,
                HEAD_DIM=HEAD_DIM, USE_TMA=USE_TMA, WARP_SPEC=False, PRECISION=PRECISION)
    if N_LEVELS > 1:
        # the row's (head, query block) loaded again (volatile: not merged with the first load) rather than kept
        # live through the loops: sm80's pyramid build spills otherwise (it sits at 255 registers)
        h, row = _slot(RowOrder, j, n_batch, n_q_blocks)
        kp_base = KP + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph
        vp_base = VP + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph
        seg = SegPtr + h * seg_stride_h + row * N_LEVELS
        acc, m_i, l_i = _attend_pooled(
            acc, m_i, l_i, q, kp_base, vp_base, stride_pn, PooledBias, LevelStart, Cols, seg, dead, seq_kv,
            qk_scale, offs_n, offs_d, N_LEVELS=N_LEVELS, LOG_BLOCK_KV=LOG_BLOCK_KV, BLOCK_N=BLOCK_N,
            NUM_STAGES=NUM_STAGES, PRECISION=PRECISION)
        # and once more for the stores, so the rows' indices are not live through the loops either
        h, row = _slot(RowOrder, j, n_batch, n_q_blocks)
        offs_m = ((row * SUB + pid % SUB) << LOG_BLOCK_M) + tl.arange(0, BLOCK_M)

    # out = acc / l; a row that saw no valid key gets 0 and lse = -inf
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + offs_m[:, None] * stride_om
    tl.store(o_ptrs + offs_d[None, :], out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_q)
    if RETURN_LSE:
        # natural-log LSE of the logits scale·q·k + bias: sum 2^s = 2^m · l, so lse = ln(2)·(m + log2(l))
        lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(Lse + (b * n_heads + h).to(tl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)


# ---------------------------------------------------------------- host side
class _Prepared(NamedTuple):
    """What the kernel reads of a layout, on the kernel's device (built once per layout: no host sync later)."""

    n_levels: int  # pyramid levels 0..L in use, L + 1
    seg_ptr: torch.Tensor  # int32 [Hl, nq * n_levels + 1]: where each (query block, level) starts in cols
    cols: torch.Tensor  # int32 [nnz]: kv block ids, grouped by level within each row
    level_start: torch.Tensor  # int32 [n_levels]: first key of level l >= 1 in the pooled store (entry 0 unused)
    layout: BlockLayout  # the layout with its tensors on the device (pooling reads its kv_valid)
    kv_valid: torch.Tensor  # bool [n_kv_blocks * block_kv]: real keys (False for padding and past seq_len_kv)
    kv_bits: torch.Tensor  # int32 [ceil(n_kv_blocks * block_kv / 32)]: kv_valid, 32 keys a word
    has_mask: bool  # some key of some block is not valid
    skip_q: bool  # queries have the keys' validity (a layout over a token order) and some are padding
    tiles: dict  # kv tile width -> (tile_ptr int32 [Hl, 2 nq + 1], tiles int32 [n]): the level-0 tile lists;
    # ("kv_tile", hopper, head dim) -> the width chosen; ("order", kv tile, heads) -> the launch order (_row_order);
    # "bias" -> the warp-specialized loop's key bias (_kv_bias)


_PREPARED: "weakref.WeakKeyDictionary[BlockLayout, dict[torch.device, _Prepared]]" = weakref.WeakKeyDictionary()


def _prepare(layout: BlockLayout, device: torch.device) -> _Prepared:
    """The kernel's view of ``layout`` on ``device``, cached per layout so static layouts cost nothing.

    Without levels the segments are the rows themselves (``row_ptr``, ``col_idx``). With levels, each row's
    entries are re-sorted by level (stable, so columns stay ascending within a level) and ``seg_ptr`` marks
    where each level starts, which lets the kernel pack same-level blocks into full tiles.
    """
    per_device = _PREPARED.setdefault(layout, {})
    if device in per_device:
        return per_device[device]
    dev_layout = layout.to(device)
    row_ptr, col_idx = dev_layout.row_ptr, dev_layout.col_idx
    n_levels = layout.max_level + 1
    if n_levels == 1:
        seg_ptr, cols = row_ptr, col_idx
    else:
        heads, nq = layout.num_heads, layout.n_q_blocks
        counts = dev_layout.row_counts().flatten()
        row_of_entry = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts,
                                               output_size=layout.nnz)
        key = row_of_entry * n_levels + dev_layout.level.long()  # rows are consecutive in col_idx
        cols = col_idx[torch.sort(key, stable=True).indices]
        per_level = torch.zeros(heads * nq * n_levels, dtype=torch.int64, device=device)
        per_level = per_level.index_add_(0, key, torch.ones_like(key)).view(heads, nq, n_levels)
        before = torch.cumsum(per_level, -1) - per_level  # entries of lower levels in the same row
        starts = (row_ptr[:, :nq, None] + before).reshape(heads, nq * n_levels)
        seg_ptr = torch.cat([starts, row_ptr[:, nq:]], 1)
    level_start, offset = [0], 0  # level l >= 1 stores S >> l pooled keys, after those of the levels before it
    for level in range(1, n_levels):
        level_start.append(offset)
        offset += layout.seq_len_kv >> level
    padded_len = layout.n_kv_blocks * layout.block_kv
    kv_valid = torch.arange(padded_len, device=device) < layout.seq_len_kv
    if dev_layout.kv_valid is not None:
        kv_valid[:layout.seq_len_kv] &= dev_layout.kv_valid.bool()
    skip_q = (layout.order is not None and dev_layout.kv_valid is not None and layout.seq_len_q == layout.seq_len_kv
              and layout.block_q == layout.block_kv)
    prepared = _Prepared(n_levels, seg_ptr.to(torch.int32).contiguous(), cols.to(torch.int32).contiguous(),
                         torch.tensor(level_start, dtype=torch.int32, device=device), dev_layout, kv_valid,
                         _pack_bits(kv_valid), not bool(kv_valid.all()), skip_q, {})
    per_device[device] = prepared
    return prepared


def _pack_bits(valid: torch.Tensor) -> torch.Tensor:
    """``valid`` as int32 words, bit ``j`` of word ``w`` standing for position ``32·w + j``."""
    padded = torch.zeros(-(-valid.numel() // 32) * 32, dtype=torch.int64, device=valid.device)
    padded[:valid.numel()] = valid.long()
    words = (padded.view(-1, 32) << torch.arange(32, device=valid.device)).sum(1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).contiguous()


def _tile_list(layout: BlockLayout, prep: _Prepared, kv_tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Level-0 kv tiles of every (head, query block): ``(tile_ptr [Hl, 2·nq + 1], tiles [n])`` int32.

    Each of a row's level-0 blocks gives ``block_kv / kv_tile`` tiles of contiguous keys, each entry its first
    key; a tile of padding only is left out. A row's full tiles come first, then those with some padding:
    ``tile_ptr[h, 2r]``, ``[h, 2r + 1]`` and ``[h, 2r + 2]`` are where query block ``r``'s full tiles start,
    where its partial ones start, and where they end.
    """
    if kv_tile in prep.tiles:
        return prep.tiles[kv_tile]
    dev_layout, device = prep.layout, prep.kv_valid.device
    heads, nq, per_block = layout.num_heads, layout.n_q_blocks, layout.block_kv // kv_tile
    counts = dev_layout.row_counts().flatten()
    rows = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts, output_size=layout.nnz)
    cols = dev_layout.col_idx.long()
    if dev_layout.level is not None:  # pooled entries are read through seg_ptr, not here
        level0 = dev_layout.level == 0
        rows, cols = rows[level0], cols[level0]
    per_tile = prep.kv_valid.view(-1, kv_tile)
    live, partial = per_tile.any(1), ~per_tile.all(1)
    tile = (cols[:, None] * per_block + torch.arange(per_block, device=device)).flatten()  # kv tile ids
    keep = live[tile]
    tile = tile[keep]
    # (row, partial) as one key: a stable sort keeps the rows in order and each row's full tiles first
    group = rows.repeat_interleave(per_block)[keep] * 2 + partial[tile].long()
    group, by_group = torch.sort(group, stable=True)
    tiles = (tile[by_group] * kv_tile).to(torch.int32).contiguous()
    per_group = torch.zeros(heads * nq * 2, dtype=torch.int64, device=device)
    per_group.index_add_(0, group, torch.ones_like(group))
    flat = torch.zeros(heads * nq * 2 + 1, dtype=torch.int64, device=device)
    torch.cumsum(per_group, 0, out=flat[1:])
    bounds = torch.arange(heads, device=device).unsqueeze(1) * 2 * nq + torch.arange(2 * nq + 1, device=device)
    prep.tiles[kv_tile] = flat[bounds].to(torch.int32).contiguous(), tiles
    return prep.tiles[kv_tile]


def _row_order(layout: BlockLayout, prep: _Prepared, kv_tile: int, heads: int) -> torch.Tensor:
    """The (head, query block) pairs of a call with ``heads`` heads, heaviest first: int32 ``[heads · nq]`` of
    ``h·nq + r`` by decreasing count of kv tiles, pooled keys counted in tiles of ``kv_tile`` too (ties in row
    order), cached with the layout. Query blocks of padding only (``skip_q``) count nothing: they visit no tile."""
    key = ("order", kv_tile, heads)
    if key in prep.tiles:
        return prep.tiles[key]
    tile_ptr, _ = _tile_list(layout, prep, kv_tile)
    nq = layout.n_q_blocks
    work = (tile_ptr[:, 2::2] - tile_ptr[:, :-1:2]).long()  # [Hl, nq]
    levels = prep.n_levels
    for level in range(1, levels):  # pooled keys, in tiles of kv_tile keys
        entries = (prep.seg_ptr[:, level + 1::levels] - prep.seg_ptr[:, level:-1:levels]).long()
        work = work + entries * (layout.block_kv >> level) / kv_tile
    if prep.skip_q:
        work = work * prep.kv_valid[:nq * layout.block_q].view(nq, layout.block_q).any(1)
    work = work.expand(heads, nq).flatten()
    prep.tiles[key] = torch.sort(-work, stable=True).indices.to(torch.int32).contiguous()
    return prep.tiles[key]


def choose_kv_tile(layout: BlockLayout, hopper: bool = True, kv_valid: torch.Tensor | None = None,
                   head_dim: int = 128) -> int:
    """The level-0 kv tile width, at most the layout's block: 128 keys on Hopper for level-0 layouts at head
    dim > 64, 64 otherwise (Ampere, where 128-wide tiles at D=128 spill or lose a K/V buffer; layouts with
    pooled levels, whose gathered 128-wide tiles push the kernel past 255 registers; D <= 64, where 128x64
    tiles take 128 registers and two CTAs fit an SM, against 168 registers and one CTA for 128x128 at D=64 on
    sm_90, compile-level, to time on a GPU); on Hopper also 64 when 64-key tiles of padding only (the missing
    frames of a half-padded temporal tile row) would save at least 4% of the 128-key tiles' keys
    (``NARROW_TILE_SAVING``: a guess at the speed 64-key tiles give up, to calibrate on a GPU)."""
    wide = min(128 if hopper and layout.max_level == 0 and head_dim > 64 else 64, layout.block_kv)
    if wide <= 64 or layout.kv_valid is None:
        return wide
    valid = layout.kv_valid if kv_valid is None else kv_valid
    keys = torch.zeros(layout.n_kv_blocks * layout.block_kv, dtype=torch.bool, device=valid.device)
    keys[:valid.numel()] = valid.bool()[:keys.numel()]
    dead = ~keys.view(-1, 64).any(1)  # 64-key tiles of padding only
    wide_live = keys.view(-1, wide).any(1)
    saved = int((dead.view(-1, wide // 64) & wide_live[:, None]).sum()) * 64
    return 64 if saved >= NARROW_TILE_SAVING * int(wide_live.sum()) * wide else wide


def _use_tma(tensors: tuple[torch.Tensor, ...], device: torch.device) -> bool:
    """TMA where it is asked for (``FASTDIT_TRITON_TMA`` or ``_WS``) and the layout allows: Hopper or newer (or
    the interpreter), 16-byte aligned bases and row strides."""
    if not (USE_TMA or USE_WS):
        return False
    if not INTERPRETED and (device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9):
        return False
    return all(x.data_ptr() % 16 == 0 and all((s * x.element_size()) % 16 == 0 for s in x.stride()[:-1])
               for x in tensors)


def _use_ws(prep: _Prepared, tma: bool, device: torch.device) -> bool:
    """The warp-specialized level-0 loop where it is asked for, on Hopper (or the interpreter; Blackwell has
    its own partitioner, not compiled here), with TMA on and no pooled levels (their gathered keys can't come
    through TMA); when it is, Triton's allocator is set for the Q descriptor that loop makes on the device."""
    hopper = INTERPRETED or (device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9)
    ws = USE_WS and tma and hopper and prep.n_levels == 1
    if ws and not INTERPRETED:
        # its Q descriptor is made on the device, in global scratch memory; the allocator is a context
        # variable, so it is set on every call (threads of an app start without it)
        triton.set_allocator(_scratch)
    return ws


def _kv_bias(prep: _Prepared) -> torch.Tensor:
    """float32 ``[padded keys]``: 0 for real keys, -inf for padding (the warp-specialized loop's mask), cached."""
    if "bias" not in prep.tiles:
        prep.tiles["bias"] = torch.where(prep.kv_valid, 0.0, float("-inf")).contiguous()
    return prep.tiles["bias"]


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, kv_tile: int,
                 block_m: int) -> tuple[TensorDescriptor, TensorDescriptor, TensorDescriptor, TensorDescriptor | None]:
    """Host-side TMA descriptors of ``q``, ``k``, ``v`` ``[B, H, S, D]`` (any 16-byte aligned strides; the copy
    engine zero-fills rows past ``S``): blocks of one (batch, head)'s ``block_m`` queries (the autotuner's
    ``_q_block`` sets it per config) and ``kv_tile`` keys; and of the warp-specialized loop's key ``bias``
    ``[padded keys]`` as ``[tiles, kv_tile]`` rows (``None`` without it).

    Built here, they reach the kernel as ``__grid_constant__`` parameters: the kernel no longer writes
    descriptors to global scratch memory, fences them and keeps their addresses in registers.
    """
    D = q.shape[-1]
    q_desc = TensorDescriptor.from_tensor(q, [1, 1, block_m, D])
    k_desc, v_desc = (TensorDescriptor.from_tensor(x, [1, 1, kv_tile, D]) for x in (k, v))
    bias_desc = None if bias is None else TensorDescriptor(bias, [bias.numel() // kv_tile, kv_tile], [kv_tile, 1],
                                                            [1, kv_tile])
    return q_desc, k_desc, v_desc, bias_desc


def triton_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float,
                           return_lse: bool = False, tiles: tuple[int, int] | None = None
                           ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel (the ``"triton"`` backend; the caller, :func:`fastdit.attention`, validated the inputs).

    ``tiles = (BLOCK_M, BLOCK_N)`` fixes the tile shape instead of autotuning (benchmarks and tests use it to
    reach each code path); level-0 tiles are then ``min(BLOCK_N, block_kv)`` keys wide. In the interpreter,
    where timing means nothing and each tile operation costs about a millisecond, it defaults to the widest
    tiles, ``(min(64, block_q), 128)``.
    """
    if tiles is None and INTERPRETED:
        tiles = (min(64, layout.block_q), 128)
    if tiles is not None and (tiles[0] < 16 or layout.block_q % tiles[0]
                              or tiles[1] < 16 or tiles[1] & (tiles[1] - 1)):
        raise ValueError(f"tiles {tiles}: BLOCK_M must be >= 16 and divide block_q={layout.block_q}, and BLOCK_N "
                         "must be a power of two >= 16")
    # the kernel reads rows of D contiguous elements
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if scale <= 0:  # the max is taken on raw scores: a positive factor keeps it the max of the scaled ones
        q, scale = -q, max(-scale, 1e-30)
    B, H, Sq, D = q.shape
    Skv = k.shape[2]
    dev = q.device
    prep = _prepare(layout, dev)
    if tiles is None:  # chosen once per layout and generation (reading the padding syncs with the device)
        hopper = torch.cuda.get_device_capability(dev)[0] >= 9
        if ("kv_tile", hopper, D) not in prep.tiles:
            prep.tiles["kv_tile", hopper, D] = choose_kv_tile(layout, hopper, prep.kv_valid, D)
        kv_tile = prep.tiles["kv_tile", hopper, D]
    else:
        kv_tile = min(tiles[1], layout.block_kv)
    tma = _use_tma((q, k, v), dev)
    ws = _use_ws(prep, tma, dev)
    tile_ptr, tile_list = _tile_list(layout, prep, kv_tile)
    row_order = _row_order(layout, prep, kv_tile, H)
    out = torch.empty_like(q)
    # tensors the kernel doesn't read (no lse, no levels) are passed as placeholders
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=dev) if return_lse else out
    kp, vp, pooled_bias = pooled_store(k, v, prep.layout, prep.n_levels) if prep.n_levels > 1 else (k, k, k)
    upcast = INTERPRETED and q.dtype == torch.bfloat16
    shared = layout.num_heads == 1
    # without TMA the descriptors' places take placeholders, as do tensors the kernel doesn't read
    descs = _descriptors(q, k, v, _kv_bias(prep) if ws and prep.has_mask else None, kv_tile,
                         tiles[0] if tiles else min(128, layout.block_q)) if tma else (q, k, v, None)
    args = (
        q, k, v, out, lse, *descs[:3], prep.kv_bits if descs[3] is None else descs[3], kp, vp, pooled_bias,
        prep.level_start, tile_ptr, tile_list, prep.kv_bits, prep.seg_ptr, prep.cols, row_order, scale * LOG2E,
        B, H, layout.n_q_blocks, Sq, Skv,
        0 if shared else tile_ptr.stride(0), 0 if shared else prep.seg_ptr.stride(0),
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        kp.stride(0), kp.stride(1), kp.stride(2),
    )
    meta = dict(
        HEAD_DIM=D, BLOCK_Q=layout.block_q, LOG_BLOCK_KV=layout.block_kv.bit_length() - 1, N_LEVELS=prep.n_levels,
        HAS_MASK=prep.has_mask, EVEN_KV=Skv % layout.block_kv == 0, KV_TILE=kv_tile, SKIP_Q=prep.skip_q,
        RETURN_LSE=return_lse, PRECISION="ieee" if q.dtype == torch.float32 or upcast else "tf32",
        UPCAST_DOT=upcast, USE_TMA=tma, WARP_SPEC=ws,
    )
    programs = B * H * layout.n_q_blocks * layout.block_q  # / BLOCK_M: one program per query tile
    if tiles is None:
        _block_sparse_fwd[lambda m: (programs // m["BLOCK_M"],)](*args, **meta)
    else:
        block_m, block_n = tiles
        stages = 3  # fixed tiles: Triton's default stage count
        _block_sparse_fwd.fn[(programs // block_m,)](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n,
                                                     NUM_STAGES=stages, num_stages=stages)
    return (out, lse) if return_lse else out
