"""The Triton kernel against the torch reference, the definition of correct results.

Without a GPU the kernel runs in Triton's CPU interpreter (tests/conftest.py sets ``TRITON_INTERPRET=1`` before
anything imports triton). With a GPU the same cases run compiled, and the ``gpu`` tests add real model shapes.
Shapes stay tiny: the interpreter costs about a millisecond per tile operation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastdit
from fastdit import BlockLayout, TokenGrid
from fastdit.kernels import backends, select_backend
from fastdit.layout.order import make_order

pytest.importorskip("triton")
from fastdit.kernels.triton.forward import triton_block_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}


def _random_layout(grid: TokenGrid, block: int, heads: int = 1, density: float = 0.4, max_level: int = 0,
                   seed: int = 0) -> BlockLayout:
    """Random kept blocks (diagonal always kept) with uniformly drawn pyramid levels ``0..max_level``."""
    tiling = make_order("tiles", grid, block)
    g = torch.Generator().manual_seed(seed)
    n = tiling.num_blocks
    mask = (torch.rand(heads, n, n, generator=g) < density) | torch.eye(n, dtype=torch.bool)
    level = torch.randint(0, max_level + 1, (heads, n, n), generator=g) if max_level else None
    return BlockLayout.from_block_mask(mask, tiling, level)


def _qkv(layout: BlockLayout, B: int = 1, H: int = 2, D: int = 32, dtype: torch.dtype = torch.float32):
    return [torch.randn(B, H, layout.seq_len_q, D, dtype=dtype, device=DEVICE) for _ in range(3)]


def _assert_matches_reference(layout: BlockLayout, q, k, v, *, tiles=None, scale=None):
    """Output and log-sum-exp of the kernel equal the reference's on every real (non-padding) query."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if tiles is None:
        out, lse = fastdit.attention(q, k, v, layout, scale=scale, backend="triton", return_lse=True)
    else:
        out, lse = triton_block_attention(q, k, v, layout, scale, return_lse=True, tiles=tiles)
    ref, ref_lse = fastdit.attention(q, k, v, layout, scale=scale, backend="torch", return_lse=True)
    rows = layout.order.valid.to(q.device) if layout.order is not None else slice(None)
    tol = TOL[q.dtype]
    assert out.dtype == q.dtype and out.shape == q.shape and lse.shape == q.shape[:3]
    torch.testing.assert_close(out[:, :, rows].float(), ref[:, :, rows].float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse[:, :, rows], ref_lse[:, :, rows], atol=tol, rtol=tol)


# ---------------------------------------------------------------- layouts from the methods, several grids
METHOD_LAYOUTS = {
    # padded grid (7 x 9 frames don't fill 16-token tiles) plus a partial text block
    "grat-padded-text": lambda: fastdit.build_layout("grat", TokenGrid(5, 7, 9, text_tokens=5), block_size=16),
    "radial-video": lambda: fastdit.build_layout("radial", TokenGrid(6, 8, 8), block_size=32, decay_factor=0.5),
    "grat-image-text-before": lambda: fastdit.build_layout(
        "grat", TokenGrid(1, 12, 12, text_tokens=7, text_position="before"), block_size=64, mode="surround"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(METHOD_LAYOUTS))
def test_shared_layouts_of_the_methods_match_the_reference(name, dtype):
    layout = METHOD_LAYOUTS[name]()
    assert layout.num_heads == 1
    _assert_matches_reference(layout, *_qkv(layout, H=1 if layout.block_q == 16 else 2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_per_head_layout_matches_the_reference(dtype):
    layout = _random_layout(TokenGrid(3, 6, 7, text_tokens=4), 16, heads=3, density=0.3)
    _assert_matches_reference(layout, *_qkv(layout, H=3, D=16, dtype=dtype))


# ---------------------------------------------------------------- pyramid levels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads,grid,block,max_level", [
    (2, TokenGrid(2, 5, 6, text_tokens=3), 16, 4),  # per head, padded; level 4 pools 16 tokens into 1 key
    (1, TokenGrid(3, 8, 8), 32, 3),                 # shared, no padding
], ids=["per-head-padded-L4", "shared-L3"])
def test_every_pyramid_level_matches_the_reference(heads, grid, block, max_level, dtype):
    layout = _random_layout(grid, block, heads=heads, density=0.6, max_level=max_level, seed=1)
    assert set(layout.level.unique().tolist()) == set(range(max_level + 1))
    _assert_matches_reference(layout, *_qkv(layout, H=2, D=32, dtype=dtype))


def test_layouts_of_the_pyramid_method_match_the_reference():
    if "pyramid" not in fastdit.available_methods():
        pytest.skip("this install has no pyramid method")
    grid = TokenGrid(3, 6, 8, text_tokens=3)
    q, k, v = (torch.randn(1, 2, grid.num_tokens, 16, device=DEVICE) for _ in range(3))
    layout = fastdit.build_layout("pyramid", grid, block_size=16, q=q, k=k)
    assert layout.num_heads == 2 and layout.max_level > 0
    _assert_matches_reference(layout, *(layout.to_layout_order(x) for x in (q, k, v)))


@pytest.mark.parametrize("tiles", [(16, 16), (32, 128), (16, 64)],
                         ids=["tile-narrower-than-block", "many-pooled-blocks-per-tile", "short-query-tiles"])
def test_tile_shapes_decoupled_from_the_block_size(tiles):
    """A kv tile may hold part of a block, one block, or several (pooled) blocks; query tiles may split a block."""
    layout = _random_layout(TokenGrid(2, 6, 8, text_tokens=2), 32, heads=2, density=0.5, max_level=2, seed=2)
    _assert_matches_reference(layout, *_qkv(layout, H=2, D=16), tiles=tiles)


def test_pooled_blocks_of_identical_keys_give_the_full_resolution_result():
    tiling = make_order("tiles", TokenGrid(2, 4, 8), 16, (1, 4, 4))
    keep = torch.ones(1, 4, 4, dtype=torch.bool)
    full = BlockLayout.from_block_mask(keep, tiling)
    pooled = BlockLayout.from_block_mask(keep, tiling, torch.tensor([[[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1],
                                                                       [4, 2, 1, 0]]]))
    q = torch.randn(1, 2, 64, 16, device=DEVICE)
    k, v = (torch.randn(1, 2, 4, 1, 16, device=DEVICE).expand(1, 2, 4, 16, 16).reshape(1, 2, 64, 16)
            for _ in range(2))
    torch.testing.assert_close(fastdit.attention(q, k, v, pooled, backend="triton"),
                               fastdit.attention(q, k, v, full, backend="triton"), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- edges of the layout
def test_partial_last_block_equals_padding_the_keys():
    """75 tokens in 16-token blocks: the missing keys of the last block are masked, its missing queries dropped."""
    n, block, S = 5, 16, 75
    g = torch.Generator().manual_seed(4)
    mask = (torch.rand(2, n, n, generator=g) < 0.5) | torch.eye(n, dtype=torch.bool)
    full = BlockLayout.from_block_mask(mask, make_order("tiles", TokenGrid(1, 1, n * block), block, (1, 1, block)))
    row_ptr, col_idx = full.row_ptr, full.col_idx
    partial = BlockLayout(row_ptr, col_idx, block, block, S, S)
    padded = BlockLayout(row_ptr, col_idx, block, block, n * block, n * block,
                         kv_valid=torch.arange(n * block) < S)
    q, k, v = (torch.randn(1, 2, S, 32, device=DEVICE) for _ in range(3))
    out, lse = fastdit.attention(q, k, v, partial, backend="triton", return_lse=True)
    pad = lambda x: F.pad(x, (0, 0, 0, n * block - S))  # noqa: E731
    ref, ref_lse = fastdit.attention(pad(q), pad(k), pad(v), padded, backend="torch", return_lse=True)
    torch.testing.assert_close(out, ref[:, :, :S], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse[:, :, :S], atol=1e-4, rtol=1e-4)


def test_query_blocks_without_keys_give_zero_and_minus_infinite_lse():
    tiling = make_order("tiles", TokenGrid(1, 4, 16), 16)
    mask = torch.eye(4, dtype=torch.bool)
    mask[2] = False  # query block 2 attends nothing
    layout = BlockLayout.from_block_mask(mask, tiling)
    q, k, v = _qkv(layout, H=1, D=16)
    out, lse = fastdit.attention(q, k, v, layout, backend="triton", return_lse=True)
    assert torch.all(out[:, :, 32:48] == 0) and torch.all(lse[:, :, 32:48] == float("-inf"))
    _assert_matches_reference(layout, q, k, v)


def test_strided_batched_inputs_and_custom_scale():
    """Strides are honoured (q, k as views of a [B, S, H, D] projection, v strided along D), and so are batch
    and scale."""
    layout = _random_layout(TokenGrid(2, 4, 8), 16, heads=1, density=0.5, max_level=1, seed=5)
    q, k = (torch.randn(2, layout.seq_len_q, 2, 16, device=DEVICE).transpose(1, 2) for _ in range(2))
    v = torch.randn(2, 2, layout.seq_len_q, 32, device=DEVICE)[..., ::2]
    assert not q.is_contiguous() and v.stride(-1) == 2
    _assert_matches_reference(layout, q, k, v, scale=0.7)


# ---------------------------------------------------------------- backend selection
def _small_inputs(D: int = 16, device: str = "cpu"):
    layout = fastdit.build_layout("grat", TokenGrid(2, 4, 8), block_size=16)
    return (*(torch.randn(1, 2, layout.seq_len_q, D, device=device) for _ in range(3)), layout)


def test_auto_leaves_cpu_inputs_to_the_reference_even_with_the_interpreter():
    q, k, v, layout = _small_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning off CUDA
        assert select_backend(q, k, v, layout).name == "torch"
    assert backends()["triton"].why_not(q, k, v, layout, auto=True) == "inputs are on cpu, not CUDA"


def test_unsupported_inputs_name_the_failed_requirement(monkeypatch):
    q, k, v, layout = _small_inputs(D=24, device=DEVICE)
    with pytest.raises(ValueError, match="backend 'triton' can't run these inputs: head dim 24"):
        fastdit.attention(q, k, v, layout, backend="triton")
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        q, k, v, layout = _small_inputs()
        with pytest.raises(ValueError, match="needs CUDA tensors, or TRITON_INTERPRET=1"):
            fastdit.attention(q, k, v, layout, backend="triton")


def test_bad_tile_shapes_are_refused():
    q, k, v, layout = _small_inputs(device=DEVICE)
    with pytest.raises(ValueError, match="BLOCK_M must be >= 16 and divide block_q=16"):
        triton_block_attention(q, k, v, layout, 0.25, tiles=(32, 32))


_COMPILE_CHECK = """
import json
from fastdit.bench.triton_compile import ARCHS, VARIANTS, WS_VARIANTS, check, compile_pooling
for arch in ARCHS:
    runs = [(variant, False) for variant in VARIANTS] + [(v, True) for v in WS_VARIANTS if arch >= 90]
    for variant, ws in runs:
        row = check(arch, variant, ws=ws).row()
        print(json.dumps({k: row[k] for k in ("arch", "variant", "config", "registers", "spill_bytes", "stack_bytes",
                                               "shared_bytes", "kv_buffers", "pooled_buffers", "mma", "serialized",
                                               "ws", "partitions", "tma_ops", "device_descriptors",
                                               "loop_instructions", "partition_rows", "failures")}))
    print(json.dumps({"arch": arch, "variant": "pooling", **compile_pooling(arch)}))
from fastdit.bench.triton_compile import compile_kernel, default_config
for config in ((128, 128, 8, 3), (128, 64, 8, 3)):  # head dim 64: the kv tile choose_kv_tile takes there
    row = compile_kernel(90, "level0", config, head_dim=64).row()
    print(json.dumps({"arch": 90, "variant": "d64", **{k: row[k] for k in ("config", "ctas_per_sm", "failures")}}))
for variant in ("level0-padded", "levels"):  # the TMA path: descriptors from the host
    row = compile_kernel(90, variant, default_config(90, variant), tma=True).row()
    print(json.dumps({"arch": 90, "variant": "tma", **{k: row[k] for k in ("config", "tma_ops", "device_descriptors",
                                                                          "registers", "failures")}}))
"""


def test_consumer_partition_rows_catch_duplicate_and_misplaced_work():
    """Excerpts of the warp-specialized TTGIR (tests/fixtures/ttgir): v2's 64-row configs gave both consumers the
    same rows, and its 128-row ones moved the second consumer's rows twice; v3's consumers split the tile."""
    from pathlib import Path

    from fastdit.bench.triton_compile import CompileResult, _partition_rows

    fixtures = Path(__file__).parent.parent / "fixtures" / "ttgir"
    cases = {"v2_ws_64x128.mlir": (64, [(0, 64), (0, 64)]), "v2_ws_128x64.mlir": (128, [(0, 64), (128, 192)]),
             "v3_ws_128x128.mlir": (128, [(0, 64), (64, 128)])}
    for name, (block_m, rows) in cases.items():
        assert _partition_rows((fixtures / name).read_text()) == rows, name
        build = CompileResult(
            arch=90, variant="level0", block_m=block_m, block_n=128, kv_tile=128, num_warps=4, num_stages=2,
            registers=168, spill_bytes=0, stack_bytes=0, shared_bytes=180608, kv_buffers=2, pooled_buffers=None,
            mma="wgmma", mma_count=32, serialized=[], tma_ops=4, bar_sync=44, seconds=0.0, tma=True, ws=True,
            partitions=1, loop_instructions=[474, 475], partition_rows=rows)
        duplicate = [f for f in build.failures() if "consumer partitions" in f]
        assert bool(duplicate) == name.startswith("v2"), (name, build.failures())


def test_tma_descriptors_made_on_the_device_fail_a_build():
    """Host-side descriptors where TMA is used: a build whose PTX makes its own fails, but for the
    warp-specialized loop's Q (one)."""
    from fastdit.bench.triton_compile import CompileResult

    def build(ws: bool, made: int) -> CompileResult:
        return CompileResult(
            arch=90, variant="level0", block_m=128, block_n=128, kv_tile=128, num_warps=8, num_stages=3,
            registers=190, spill_bytes=0, stack_bytes=0, shared_bytes=229400, kv_buffers=3, pooled_buffers=None,
            mma="wgmma", mma_count=16, serialized=[], tma_ops=7, bar_sync=17, seconds=0.0, tma=True, ws=ws,
            device_descriptors=made, partitions=int(ws), loop_instructions=[528] * (1 + ws),
            partition_rows=[(0, 64), (64, 128)] if ws else [])

    assert build(False, 0).failures() == [] and build(True, 1).failures() == []
    assert build(False, 3).failures() == ["3 TMA descriptors made on the device (host-side expected)"]
    assert build(True, 3).failures() == ["3 TMA descriptors made on the device (host-side expected, but Q's)"]


def test_serialized_wgmma_and_softmax_overlap_are_read_from_ptxas_and_sass():
    """ptxas' C7514 (an S tile carried a kv tile ahead, copied at the back edge while its wgmma was in flight,
    sm_90, Triton 3.9) fails a build as C7515 does; MUFU ops count as overlapping matrix work only while a wgmma
    group is in flight: between a group's first HGMMA and the wait that retires it, across the loop's back edge.
    The SASS lines are spelled as cuobjdump prints them (128x64 level-0 loop, sm_90)."""
    from fastdit.bench.triton_compile import CompileResult, _mufu_in_flight, _serialized

    log = ("ptxas info    : Used 224 registers, used 1 barriers\nptxas info    : (C7514) Potential Performance "
           "Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions reading accumulator "
           "registers of  a wgmma between start and end of the pipeline stage in the function '_block_sparse_fwd'")
    assert _serialized(log) == ["C7514"] and _serialized("ptxas info    : Used 164 registers") == []
    build = CompileResult(
        arch=90, variant="level0", block_m=128, block_n=64, kv_tile=64, num_warps=8, num_stages=3, registers=224,
        spill_bytes=0, stack_bytes=0, shared_bytes=147456, kv_buffers=3, pooled_buffers=None, mma="wgmma",
        mma_count=28, serialized=_serialized(log), tma_ops=0, bar_sync=9, seconds=0.0, loop_instructions=[422])
    assert build.failures() == ["C7514: wgmma serialized by ptxas"]

    arrive, wait = "WARPGROUP.ARRIVE", "WARPGROUP.DEPBAR.LE gsb0, 0x0"
    s_gemm = [arrive] + ["HGMMA.64x64x16.F32.BF16 R88, gdesc[UR8], R88"] * 7 + [
        "HGMMA.64x64x16.F32.BF16 R88, gdesc[UR32], R88, gsb0"]
    pv_gemm = [arrive] + ["HGMMA.64x128x16.F32.BF16 R24, R88, gdesc[UR8].tnspB, R24"] * 3 + [
        "HGMMA.64x128x16.F32.BF16 R24, R100, gdesc[UR8].tnspB, R24, gsb0"]
    exp2 = ["MUFU.EX2 R24, R24"] * 32
    # the default loop: S, wait, softmax, P·V left in flight and waited on with the next S: no overlap
    assert _mufu_in_flight(["BAR.SYNC.DEFER_BLOCKING 0x0"] + s_gemm + [wait] + exp2 + pv_gemm + ["LDGSTS.E.128"]) == 0
    # softmax issued among P·V's HGMMAs (its group open) and before its wait: all of it overlaps
    assert _mufu_in_flight(pv_gemm[:2] + exp2[:10] + pv_gemm[2:] + exp2[10:] + [wait] + s_gemm + [wait]) == 32
    # a group committed at the end of an iteration is still in flight at the top of the next one
    assert _mufu_in_flight(exp2[:4] + [wait] + pv_gemm) == 4
    # a wait that leaves one group outstanding (depth 1) keeps the later group's overlap
    assert _mufu_in_flight(s_gemm + pv_gemm + ["WARPGROUP.DEPBAR.LE gsb0, 0x1"] + exp2[:6] + [wait]) == 6


@pytest.mark.slow
def test_kernel_compiles_green_for_hopper_and_ampere_without_a_gpu():
    """Triton's real compiler (PTX, then ptxas to a cubin) for sm_90 and sm_80, level 0 without and with
    padding and pyramid levels, at the config each variant starts from: wgmma on sm_90 (mma.sync on sm_80), no
    spills, within shared memory, >= 3 K/V buffers in the pipelined level-0 loop, no wgmma serialized by ptxas
    (C7514, C7515); the padded build's full tiles run the unpadded build's loop (SASS instructions per tile
    within 5%); on sm_90 the opt-in warp-specialized level-0 loop is split into a TMA producer and two consumers
    on disjoint halves of the tile; the TMA path takes its descriptors from the host (the warp-specialized loop
    makes Q's itself); and the fused pooling pass compiles."""
    import json

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_CHECK], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    kernels = [r for r in rows if r["variant"] not in ("pooling", "d64", "tma")]
    # at head dim 64, 64-key tiles fit two CTAs per SM where 128-key ones fit one
    assert {r["config"]: r["ctas_per_sm"] for r in rows if r["variant"] == "d64" and not r["failures"]} == {
        "128x128 w8 s3": 1, "128x64 w8 s3": 2}
    assert {(r["arch"], r["variant"], r["ws"]) for r in kernels} == (
        {(a, v, False) for a in (90, 80) for v in ("level0", "level0-padded", "levels", "64-padded")}
        | {(90, v, True) for v in ("level0", "level0-padded")})
    assert all(r["partitions"] >= 1 and r["tma_ops"] > 0 for r in kernels if r["ws"])
    # host-side TMA descriptors: none made on the device, but the warp-specialized loop's Q (its partitioner
    # splits Q's load in two, which a host descriptor's fixed block doesn't allow)
    tma = [r for r in rows if r["variant"] == "tma"]
    assert len(tma) == 2 and all(r["tma_ops"] > 0 and r["device_descriptors"] == 0 and not r["failures"] for r in tma)
    assert all(r["device_descriptors"] == 1 for r in kernels if r["ws"])
    assert not any(r["partitions"] for r in kernels if not r["ws"])
    # two consumers of 64 rows each, no row computed twice
    assert all(sorted(map(tuple, r["partition_rows"])) == [(0, 64), (64, 128)] for r in kernels if r["ws"])
    # full tiles unmasked: the padded build's full-tile loop is the unpadded build's code (within 5%), and its
    # partial tiles have a loop of their own
    by = {(r["arch"], r["variant"], r["ws"]): r for r in kernels}
    for arch in (90, 80):
        full, padded = by[arch, "level0", False], by[arch, "level0-padded", False]
        assert len(full["loop_instructions"]) == 1 and len(padded["loop_instructions"]) == 2
        assert abs(padded["loop_instructions"][0] / full["loop_instructions"][0] - 1) <= 0.05, (full, padded)
        assert len(by[arch, "levels", False]["loop_instructions"]) == 3  # full, partial, pooled: sm_80 too
    for r in kernels:
        where = f"sm_{r['arch']} {r['variant']} {r['config']}"
        assert r["mma"] == ("wgmma" if r["arch"] == 90 else "mma.sync"), where
        assert r["kv_buffers"] >= (2 if r["ws"] else 3), where
        assert not r["serialized"], where
        assert r["spill_bytes"] == 0 and r["stack_bytes"] == 0, where
        assert r["failures"] == "", where
    assert all(r["ok"] for r in rows if r["variant"] == "pooling")


# ---------------------------------------------------------------- GPU: real model shapes
@pytest.mark.gpu
@pytest.mark.parametrize("method,options", [("radial", {"decay_factor": 0.2}), ("grat", {"mode": "surround"})])
def test_wan_1_3b_480p_layouts_match_the_reference_on_gpu(method, options):
    layout = fastdit.build_layout(method, TokenGrid(21, 30, 52), block_size=128, **options)
    _assert_matches_reference(layout, *_qkv(layout, H=12, D=128, dtype=torch.bfloat16))


@pytest.mark.gpu
def test_per_head_pyramid_levels_at_a_real_shape_on_gpu():
    layout = _random_layout(TokenGrid(13, 30, 45, text_tokens=226), 128, heads=4, density=0.3, max_level=3)
    _assert_matches_reference(layout, *_qkv(layout, B=2, H=4, D=64, dtype=torch.float16))


@pytest.mark.gpu
def test_dense_layout_equals_sdpa_in_model_order_on_gpu():
    grid = TokenGrid(21, 30, 52)
    layout = fastdit.build_layout("dense", grid, block_size=128)
    q, k, v = (torch.randn(1, 12, grid.num_tokens, 128, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    out = fastdit.attention(*(layout.to_layout_order(x) for x in (q, k, v)), layout, backend="triton")
    torch.testing.assert_close(layout.from_layout_order(out), F.scaled_dot_product_attention(q, k, v),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_auto_picks_triton_on_gpu_and_warns_once_when_it_cannot():
    q, k, v, layout = _small_inputs(D=64, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_backend(q, k, v, layout).name == "triton"
    q, k, v, layout = _small_inputs(D=80, device="cuda")
    with pytest.warns(UserWarning, match="falling back to the 'torch' backend .*triton: head dim 80"):
        fastdit.attention(q, k, v, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastdit.attention(q, k, v, layout)  # once per reason
