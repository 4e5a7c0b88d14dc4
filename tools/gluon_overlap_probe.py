"""Compile-only probe: can Triton 3.9 overlap softmax and matrix work in a 128x128 attention loop on sm_90?

    TRITON_INTERPRET= python tools/gluon_overlap_probe.py [--configs 128,128,8 128,64,8 64,128,4] [--tma] [--sequence]

Plain Triton cannot (bench/results/kernels_overlap.md): its wgmma pipeliner waits on every GEMM whose result the
loop reads. Gluon (``triton.experimental.gluon``, shipped with Triton 3.9) issues wgmma asynchronously and waits
explicitly, so this loop is FlashAttention-3's intra-warpgroup order: issue S_j = Q·K_jᵀ, rescale O, issue
O += P_{j-1}·V_{j-1}, wait until one group is left (S_j done), softmax of S_j while P·V runs, wait for P·V.
It is compiled for sm_90 without a GPU and read with the compile report's parsers
(:mod:`fastdit.bench.triton_compile`): registers, spills, ptxas' wgmma-serialization warnings, the waits, and
per iteration of the hot loop SASS instructions, HGMMA, MUFU, barriers and MUFU ops issued while a wgmma group
is in flight. It is a probe of the loop's schedule, not a fastdit kernel: one dense row of kv tiles, never run
(no GPU). Its two forms: K and V copied to shared memory by plain loads and stores, one buffer each; or (``--tma``)
by TMA into two buffers each, completing on mbarriers, the next tiles' copies issued as soon as both warpgroups
are done with a buffer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)

from fastdit.bench.triton_compile import _hot_loops, _mufu_in_flight, _sass, _serialized

HEAD_DIM = 128


@gluon.jit
def _tile(ptr, stride, row0, ROWS: gl.constexpr, D: gl.constexpr, layout: gl.constexpr):
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, D, layout=gl.SliceLayout(0, layout))
    return gl.load(ptr + (row0 + rows)[:, None] * stride + cols[None, :])


@gluon.jit
def _rows_of(x, layout: gl.constexpr):
    """A per-row vector of the S layout in the O layout (both are the wgmma accumulator's rows)."""
    return gl.convert_layout(x, gl.SliceLayout(1, layout))[:, None]


@gluon.jit
def _first_softmax(s, qk_scale, BLOCK_M: gl.constexpr, D: gl.constexpr, s_l: gl.constexpr, o_l: gl.constexpr,
                   p_l: gl.constexpr):
    """Tile 0's softmax state once its S is done: row maxima and sums, a unit rescale, P as the next P·V's
    register operand, and an empty O."""
    m_i = gl.max(s, 1) * qk_scale
    p = gl.exp2(s * qk_scale - m_i[:, None])
    alpha = gl.full([BLOCK_M], 1.0, gl.float32, gl.SliceLayout(1, s_l))
    return m_i, gl.sum(p, 1), alpha, gl.convert_layout(p.to(gl.bfloat16), p_l), gl.zeros([BLOCK_M, D], gl.float32, o_l)


@gluon.jit
def _fa3_loop(Q, K, V, Out, stride, n_tiles, qk_scale, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              D: gl.constexpr, num_warps: gl.constexpr):
    """``Out`` = softmax(Q·Kᵀ·scale)·V for ``BLOCK_M`` queries over ``n_tiles`` tiles of ``BLOCK_N`` keys (bf16,
    rows of ``D`` elements ``stride`` apart), in base 2 with ``qk_scale`` = scale·log2(e)."""
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_N, 16])
    o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, D, 16])
    p_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)  # P from registers
    q_s = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_M, D],
                                    gl.NVMMASharedLayout.get_default_for([BLOCK_M, D], gl.bfloat16))
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, D], gl.bfloat16)
    k_s = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_N, D], kv_layout)
    v_s = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_N, D], kv_layout)
    q_s.store(_tile(Q, stride, gl.program_id(0) * BLOCK_M, BLOCK_M, D, ld))
    k_s.store(_tile(K, stride, 0, BLOCK_N, D, ld))
    fence_async_shared()  # generic-proxy stores read by wgmma (async proxy)
    gl.barrier()
    s = warpgroup_mma(q_s, k_s.permute((1, 0)), gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_l), is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    m_i, l_i, alpha, pb, o = _first_softmax(s, qk_scale, BLOCK_M, D, s_l, o_l, p_l)
    for j in range(1, n_tiles):
        gl.barrier()  # the previous iteration waited on all its wgmma: K and V buffers are free
        k_s.store(_tile(K, stride, j * BLOCK_N, BLOCK_N, D, ld))
        v_s.store(_tile(V, stride, (j - 1) * BLOCK_N, BLOCK_N, D, ld))
        fence_async_shared()
        gl.barrier()
        s = warpgroup_mma(q_s, k_s.permute((1, 0)), s, use_acc=False, is_async=True)  # S_j
        o = o * _rows_of(alpha, o_l)  # O_{j-2} rescaled to tile j-1's maximum
        o = warpgroup_mma(pb, v_s, o, is_async=True)  # O += P_{j-1}·V_{j-1}
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))  # S_j done, P·V still in flight
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        l_i = l_i * alpha + gl.sum(p, 1)
        m_i = m_new
        o, pb = warpgroup_mma_wait(num_outstanding=0, deps=(o, pb))  # P·V done: its P registers free
        pb = gl.convert_layout(p.to(gl.bfloat16), p_l)
    gl.barrier()
    v_s.store(_tile(V, stride, (n_tiles - 1) * BLOCK_N, BLOCK_N, D, ld))
    fence_async_shared()
    gl.barrier()
    o = warpgroup_mma(pb, v_s, o * _rows_of(alpha, o_l), is_async=True)
    o = warpgroup_mma_wait(num_outstanding=0, deps=(o,))
    o = o / _rows_of(l_i, o_l)
    rows = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_l)) + gl.program_id(0) * BLOCK_M
    cols = gl.arange(0, D, layout=gl.SliceLayout(0, o_l))
    gl.store(Out + rows[:, None] * stride + cols[None, :], o.to(gl.bfloat16))


@gluon.jit
def _fa3_loop_tma(q_desc, k_desc, v_desc, Out, stride, n_tiles, qk_scale, num_warps: gl.constexpr):
    """:func:`_fa3_loop` with Q, K and V copied by TMA (``n_tiles`` >= 2), K and V through two buffers each."""
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_N, 16])
    o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, D, 16])
    p_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)
    q_s = gl.allocate_shared_memory(q_desc.dtype, [BLOCK_M, D], q_desc.layout)
    k_s = gl.allocate_shared_memory(k_desc.dtype, [2, BLOCK_N, D], k_desc.layout)
    v_s = gl.allocate_shared_memory(v_desc.dtype, [2, BLOCK_N, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(2):
        mbarrier.init(k_bar.index(i), count=1)
        mbarrier.init(v_bar.index(i), count=1)
    off_m = gl.program_id(0) * BLOCK_M
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_load(q_desc, [off_m, 0], q_bar, q_s)
    for i in gl.static_range(2):  # tiles 0 and 1 (buffer i holds the tiles i, i + 2, ...)
        mbarrier.expect(k_bar.index(i), k_desc.block_type.nbytes)
        tma.async_load(k_desc, [i * BLOCK_N, 0], k_bar.index(i), k_s.index(i))
        mbarrier.expect(v_bar.index(i), v_desc.block_type.nbytes)
        tma.async_load(v_desc, [i * BLOCK_N, 0], v_bar.index(i), v_s.index(i))
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bar.index(0), 0)
    s = warpgroup_mma(q_s, k_s.index(0).permute((1, 0)), gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_l),
                      is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    m_i, l_i, alpha, pb, o = _first_softmax(s, qk_scale, BLOCK_M, D, s_l, o_l, p_l)
    for j in range(1, n_tiles):
        kb = j % 2
        vb = (j - 1) % 2
        mbarrier.wait(k_bar.index(kb), (j // 2) & 1)  # the mbarrier's phase flips with each copy it completes
        mbarrier.wait(v_bar.index(vb), ((j - 1) // 2) & 1)
        s = warpgroup_mma(q_s, k_s.index(kb).permute((1, 0)), s, use_acc=False, is_async=True)
        o = o * _rows_of(alpha, o_l)
        o = warpgroup_mma(pb, v_s.index(vb), o, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        l_i = l_i * alpha + gl.sum(p, 1)
        m_i = m_new
        o, pb = warpgroup_mma_wait(num_outstanding=0, deps=(o, pb))
        pb = gl.convert_layout(p.to(gl.bfloat16), p_l)
        gl.barrier()  # both warpgroups are done with K_j and V_{j-1}: their buffers take K_{j+2} and V_{j+1}
        if j + 2 < n_tiles:
            mbarrier.expect(k_bar.index(kb), k_desc.block_type.nbytes)
            tma.async_load(k_desc, [(j + 2) * BLOCK_N, 0], k_bar.index(kb), k_s.index(kb))
        if j + 1 < n_tiles:
            mbarrier.expect(v_bar.index(vb), v_desc.block_type.nbytes)
            tma.async_load(v_desc, [(j + 1) * BLOCK_N, 0], v_bar.index(vb), v_s.index(vb))
    vb = (n_tiles - 1) % 2
    mbarrier.wait(v_bar.index(vb), ((n_tiles - 1) // 2) & 1)
    o = warpgroup_mma(pb, v_s.index(vb), o * _rows_of(alpha, o_l), is_async=True)
    o = warpgroup_mma_wait(num_outstanding=0, deps=(o,))
    o = o / _rows_of(l_i, o_l)
    rows = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_l)) + off_m
    cols = gl.arange(0, D, layout=gl.SliceLayout(0, o_l))
    gl.store(Out + rows[:, None] * stride + cols[None, :], o.to(gl.bfloat16))


def compile_probe(block_m: int, block_n: int, warps: int, use_tma: bool = False) -> dict:
    """Compile the loop for sm_90 at ``block_m`` queries x ``block_n`` keys on ``warps`` warps, head dim 128.

    Args:
        block_m: queries per program (a multiple of 16 per warp: ``warps * 16`` or more).
        block_n: keys per kv tile.
        warps: warps per program.
        use_tma: the TMA form (:func:`_fa3_loop_tma`) instead of plain loads.

    Returns:
        ``registers``, ``spill_bytes``, ``shared_bytes``, ``serialized`` (ptxas codes), ``ptx_waits`` (each
        wgmma.wait_group's count in order) and per hot loop: ``sass``, ``hgmma``, ``mufu``, ``barriers``,
        ``waits``, ``mufu_in_flight``, ``sequence`` (the loop's matrix, wait, MUFU and barrier instructions in
        order, runs counted).
    """
    scalars = {"Out": "*bf16", "stride": "i32", "n_tiles": "i32", "qk_scale": "fp32"}
    if use_tma:
        fn = _fa3_loop_tma
        blocks = {"q_desc": block_m, "k_desc": block_n, "v_desc": block_n}
        # the type a host TensorDescriptor of that block specializes to (gluon.nvidia.hopper.TensorDescriptor)
        signature = {name: f"tensordesc<bf16[{rows}, {HEAD_DIM}],{_shared(rows)!r}>" for name, rows in blocks.items()}
        signature.update(scalars, num_warps="constexpr")
        constants = {"num_warps": warps}
        aligned = (3, 4)  # Out and the row stride
    else:
        fn = _fa3_loop
        signature = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", **scalars, "BLOCK_M": "constexpr",
                     "BLOCK_N": "constexpr", "D": "constexpr", "num_warps": "constexpr"}
        constants = {"BLOCK_M": block_m, "BLOCK_N": block_n, "D": HEAD_DIM, "num_warps": warps}
        aligned = range(5)  # the pointers and the row stride
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    log = io.StringIO()
    before = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
    knobs.nvidia.dump_ptxas_log = knobs.compilation.always_compile = True  # a cached kernel skips ptxas' log
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(GluonASTSource(fn, signature, constants, attrs),
                                    target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = before
    ptxas = log.getvalue()
    loops = []
    for body in _hot_loops(_sass(kernel.asm["cubin"]), "HGMMA"):
        loops.append({
            "sass": len(body), "hgmma": sum(" HGMMA" in x for x in body), "mufu": sum(" MUFU." in x for x in body),
            "barriers": sum(" BAR.SYNC" in x or " BAR.ARV" in x for x in body),
            "waits": [int(n, 16) for n in re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x([0-9a-f]+)", "\n".join(body))],
            "mufu_in_flight": _mufu_in_flight(body), "sequence": _sequence(body)})
    spills = re.search(r"(\d+) bytes spill stores", ptxas)
    return {"registers": int(re.search(r"Used (\d+) registers", ptxas).group(1)),
            "spill_bytes": int(spills.group(1)) if spills else 0, "shared_bytes": int(kernel.metadata.shared),
            "serialized": _serialized(ptxas),
            "ptx_waits": [int(n) for n in re.findall(r"wgmma\.wait_group\.sync\.aligned (\d+)", kernel.asm["ptx"])],
            "loops": loops}


def _shared(rows: int) -> gl.NVMMASharedLayout:
    """The swizzled shared-memory layout of a ``[rows, 128]`` bf16 tile (TMA's and wgmma's)."""
    return gl.NVMMASharedLayout.get_default_for([rows, HEAD_DIM], gl.bfloat16)


def _sequence(body: list[str]) -> str:
    """The loop's HGMMA, wgmma waits, MUFU ops, barriers and global loads / shared stores in order, runs counted."""
    runs: list[list] = []
    for text in body:
        op = re.sub(r"^@!?U?P\w+\s+", "", text.strip())
        key = next((k for k in ("HGMMA", "MUFU", "BAR.SYNC", "LDG", "STS") if op.startswith(k)), None)
        if op.startswith("WARPGROUP.DEPBAR"):
            key = "wait " + op.rsplit(",", 1)[1].strip()
        if key is None:
            continue
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    return " | ".join(f"{k} x{n}" if n > 1 else k for k, n in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["128,128,8", "128,64,8", "64,128,4"],
                        help="BLOCK_M,BLOCK_N,warps per build")
    parser.add_argument("--tma", action="store_true", help="the TMA form (two K/V buffers, mbarriers)")
    parser.add_argument("--sequence", action="store_true", help="print each hot loop's instruction sequence")
    args = parser.parse_args()
    for config in args.configs:
        block_m, block_n, warps = (int(x) for x in config.split(","))
        r = compile_probe(block_m, block_n, warps, args.tma)
        print(f"{block_m}x{block_n} w{warps}{' tma' if args.tma else ''}: registers {r['registers']}, spills "
              f"{r['spill_bytes']} B, shared {r['shared_bytes']} B, serialized {r['serialized'] or 'none'}, "
              f"PTX waits {r['ptx_waits']}")
        for loop in r["loops"]:
            print(f"  loop: {loop['sass']} SASS, {loop['hgmma']} HGMMA, {loop['mufu']} MUFU "
                  f"({loop['mufu_in_flight']} in flight), {loop['barriers']} barriers, waits {loop['waits']}")
            if args.sequence:
                print("   ", loop["sequence"])


if __name__ == "__main__":
    main()
