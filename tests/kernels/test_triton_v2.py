"""Kernel v2: kv tiles of one scalar index, padding skipped by tile, density on real tokens, fused pooling.

The interpreter cases stay tiny (CI has two cores); tests/kernels/test_triton.py holds the method layouts and
the compile-level check.
"""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit import BlockLayout, TokenGrid
from fastdit.kernels.common import pyramid_level
from fastdit.layout.order import make_order
from fastdit.layout.padding import kernel_padding, least_padded_tile, real_density
from fastdit.patching.presets import preset_padding

pytest.importorskip("triton")
from fastdit.kernels.triton.forward import (  # noqa: E402
    _prepare,
    _row_order,
    _tile_list,
    choose_kv_tile,
    triton_block_attention,
)
from fastdit.kernels.triton.pooling import pooled_store  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _half_padded_layout(heads: int = 2, max_level: int = 0, seed: int = 0) -> BlockLayout:
    """3 frames in 2-frame tiles (2x4x4 = one 32-token block): the last tile row's second frame is padding,
    the last 16 keys of its blocks, so 16-key tiles of it are padding only."""
    order = make_order("tiles", TokenGrid(3, 4, 8, text_tokens=3), 32, (2, 4, 4))
    g = torch.Generator().manual_seed(seed)
    n = order.num_blocks
    mask = (torch.rand(heads, n, n, generator=g) < 0.6) | torch.eye(n, dtype=torch.bool)
    level = torch.randint(0, max_level + 1, (heads, n, n), generator=g) if max_level else None
    return BlockLayout.from_block_mask(mask, order, level)


def _check(layout, tiles, dtype=torch.float32, scale=None, D=16):
    q, k, v = (torch.randn(1, 2, layout.seq_len_q, D, dtype=dtype, device=DEVICE) for _ in range(3))
    scale = D ** -0.5 if scale is None else scale
    out, lse = triton_block_attention(q, k, v, layout, scale, return_lse=True, tiles=tiles)
    ref, ref_lse = fastdit.attention(q, k, v, layout, scale=scale, backend="torch", return_lse=True)
    rows = layout.order.valid.to(q.device)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out[:, :, rows].float(), ref[:, :, rows].float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse[:, :, rows], ref_lse[:, :, rows], atol=tol, rtol=tol)


def _assert_full_tiles_first(layout: BlockLayout, prep, kv_tile: int) -> None:
    """Each row lists the live tiles of its level-0 blocks, its full tiles first, then those holding padding."""
    tile_ptr, tiles = _tile_list(layout, prep, kv_tile)
    valid = prep.kv_valid.view(-1, kv_tile)
    level0 = layout.to_level_map() == 0
    partial_seen = 0
    for h in range(layout.num_heads):
        for r in range(layout.n_q_blocks):
            start, full, end = (int(x) for x in tile_ptr[h, 2 * r:2 * r + 3])
            ids = (tiles[start:end] // kv_tile).tolist()
            assert all(bool(valid[t].all()) for t in ids[:full - start])
            assert not any(bool(valid[t].all()) for t in ids[full - start:])
            kept = level0[h, r]
            per_block = layout.block_kv // kv_tile
            expected = {c * per_block + j for c in kept.nonzero().flatten().tolist() for j in range(per_block)
                        if bool(valid[c * per_block + j].any())}
            assert sorted(ids) == sorted(expected) and len(ids) == len(expected)
            partial_seen += end - full
    assert partial_seen  # the case has partial tiles (the text block, padded rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tiles_of_padding_only_are_skipped_and_the_result_is_unchanged(dtype):
    layout = _half_padded_layout()
    prep = _prepare(layout, torch.device(DEVICE))
    tile_ptr, tiles = _tile_list(layout, prep, 16)
    assert tiles.numel() < 2 * layout.nnz  # the dead halves are not in the list
    _assert_full_tiles_first(layout, prep, 16)
    assert prep.skip_q
    _check(layout, (16, 16), dtype)  # 16-query tiles of padding only visit nothing either
    _check(layout, (32, 32), dtype)


def test_programs_start_with_the_heaviest_rows_and_cover_each_once():
    """The launch order lists every (head, query block) once, by decreasing kv tiles (pooled keys in tiles too);
    a shared layout is ordered over the call's heads; the results don't depend on it (the kernel runs it)."""
    for layout, heads in ((_half_padded_layout(heads=2, seed=11), 2), (_half_padded_layout(heads=1, seed=12), 3),
                          (_half_padded_layout(heads=2, max_level=2, seed=13), 2)):
        prep = _prepare(layout, torch.device(DEVICE))
        order = _row_order(layout, prep, 16, heads).long().cpu()
        nq = layout.n_q_blocks
        assert sorted(order.tolist()) == list(range(heads * nq))
        tile_ptr = _tile_list(layout, prep, 16)[0].long().cpu()
        tiles = (tile_ptr[:, 2::2] - tile_ptr[:, :-1:2]).expand(heads, nq).flatten().float()
        if layout.max_level:  # pooled keys of each row, in 16-key tiles
            level = layout.to_level_map()
            for lv in range(1, layout.max_level + 1):
                tiles += ((level == lv).sum(-1) * (layout.block_kv >> lv) / 16).expand(heads, nq).flatten()
        live = prep.kv_valid.cpu().view(nq, -1).any(1).repeat(heads)
        work = (tiles * live)[order]
        assert bool((work[:-1] >= work[1:]).all()) and work[0] > work[-1]
        _check(layout, (16, 16))


def test_pyramid_levels_with_skipped_tiles_and_a_negative_scale():
    layout = _half_padded_layout(max_level=2, seed=3)
    _assert_full_tiles_first(layout, _prepare(layout, torch.device(DEVICE)), 16)
    _check(layout, (16, 16), scale=-0.3)


def test_the_fused_pooling_pass_equals_the_reference_levels():
    layout = _half_padded_layout(heads=1, max_level=3)
    k, v = (torch.randn(2, 2, layout.seq_len_kv, 32, device=DEVICE) for _ in range(2))
    kp, vp, bias = pooled_store(k, v, layout, 4, fused=True)
    start = 0
    for level in range(1, 4):
        rk, rv, log_count = pyramid_level(k, v, layout, level)
        n = rk.shape[2]
        torch.testing.assert_close(kp[:, :, start:start + n], rk, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vp[:, :, start:start + n], rv, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bias[start:start + n], log_count.to(bias.device) * 1.4426950408889634)
        start += n


def test_kv_tile_choice_and_padding_at_real_shapes():
    """Wan 480p in 2x16x4 tiles: 64-key tiles skip the missing 22nd frame; 720p's 1x8x16 tiles leave none."""
    wan480 = fastdit.build_layout("dense", TokenGrid(21, 30, 52), block_size=128, order="tiles")
    assert wan480.order.tile == (2, 16, 4)
    assert choose_kv_tile(wan480) == 64 and choose_kv_tile(wan480, hopper=False) == 64
    wan720 = fastdit.build_layout("dense", TokenGrid(21, 45, 80), block_size=128, order="tiles")
    assert choose_kv_tile(wan720) == 128
    radial = fastdit.build_layout("radial", TokenGrid(21, 30, 52), block_size=128, decay_factor=0.2)
    assert choose_kv_tile(radial) == 128
    assert choose_kv_tile(radial, head_dim=64) == 64  # two CTAs per SM at D=64 (compile level)

    # a dense layout attends every real pair; the kernel computes the padded square, less the skipped tiles
    assert real_density(wan480) == pytest.approx(1.0)
    assert wan480.density() == 1.0
    padded = wan480.seq_len_q / 32760
    assert kernel_padding(wan480, 128, 128) == pytest.approx(padded ** 2 - 1)
    assert kernel_padding(wan480, 64, 64) == pytest.approx((21 * 32 * 52 / 32760) ** 2 - 1)
    assert least_padded_tile(TokenGrid(21, 30, 52), 128) == (1, 32, 4)
    rows = {r["model"]: r for r in preset_padding()}
    assert rows["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]["tile_padding"] == pytest.approx(36608 / 32760 - 1)


def test_the_opt_in_tma_path_gives_the_same_results(monkeypatch):
    """K/V through tensor descriptors (FASTDIT_TRITON_TMA=1): rows past a partial last block come back as zeros."""
    import torch.nn.functional as F

    from fastdit.kernels.triton import forward as triton_attention

    monkeypatch.setattr(triton_attention, "USE_TMA", True)
    _check(_half_padded_layout(max_level=1, seed=5), (16, 16))
    n, block, S = 3, 16, 40
    mask = torch.ones(1, n, n, dtype=torch.bool)
    full = BlockLayout.from_block_mask(mask, make_order("tiles", TokenGrid(1, 1, n * block), block, (1, 1, block)))
    partial = BlockLayout(full.row_ptr, full.col_idx, block, block, S, S)
    q, k, v = (torch.randn(1, 1, S, 16, device=DEVICE) for _ in range(3))
    assert triton_attention._use_tma((q, k, v), k.device)
    out = triton_block_attention(q, k, v, partial, 0.25, tiles=(16, 16))
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.25)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # host-side descriptors over [B, H, S, D] as the model gives it (a [B, S, H, D] view): the batch and head
    # coordinates of each program, any strides
    q, k, v = (torch.randn(2, S, 3, 16, device=DEVICE).transpose(1, 2) for _ in range(3))
    q_desc, k_desc, _, bias_desc = triton_attention._descriptors(q, k, v, None, 16, 32)
    assert (list(q_desc.shape), list(q_desc.strides), q_desc.block_shape) == ([2, 3, S, 16], list(q.stride()),
                                                                           [1, 1, 32, 16])
    assert k_desc.block_shape == [1, 1, 16, 16] and bias_desc is None
    out = triton_block_attention(q, k, v, partial, 0.25, tiles=(16, 16))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.25), atol=1e-4, rtol=1e-4)


def test_the_opt_in_warp_specialized_path_gives_the_same_results(monkeypatch):
    """The warp-specialized level-0 loop (FASTDIT_TRITON_WS=1): Q through a descriptor and each tile's entry
    read in its own iteration (the interpreter runs this code; the producer/consumer split is the compiler's,
    checked at compile level in test_triton.py). Layouts with pooled levels keep the pipelined loop."""
    from fastdit.kernels.triton import forward as triton_attention

    monkeypatch.setattr(triton_attention, "USE_WS", True)
    padded, levels = _half_padded_layout(seed=7), _half_padded_layout(max_level=2, seed=8)
    device = torch.device(DEVICE)
    assert triton_attention._use_ws(_prepare(padded, device), True, device)
    assert not triton_attention._use_ws(_prepare(levels, device), True, device)
    for dtype in (torch.float32, torch.bfloat16):
        _check(padded, (16, 16), dtype)
        _check(padded, (32, 32), dtype)
    _check(levels, (16, 16))
