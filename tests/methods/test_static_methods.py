"""Radial, grat and dense layouts: their definitions, the invariants every layout keeps, and their cost."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

import fastdit
from fastdit import Tiling, TokenGrid
from fastdit.methods.radial import RadialOptions, frame_window


def _all_layouts(grid, block):
    return [fastdit.build_layout("dense", grid, block_size=block),
            fastdit.build_layout("radial", grid, block_size=block),
            fastdit.build_layout("radial", grid, block_size=block, spatial="2d", adjacent="full"),
            fastdit.build_layout("grat", grid, block_size=block),
            fastdit.build_layout("grat", grid, block_size=block, mode="surround", radius=(0, 1, 2))]


@pytest.mark.parametrize("grid", [TokenGrid(8, 8, 12, text_tokens=20), TokenGrid(5, 7, 9, text_tokens=3),
                                  TokenGrid(1, 16, 16, text_tokens=7, text_position="before")])
def test_every_layout_keeps_the_diagonal_and_all_text_blocks(grid):
    for layout in _all_layouts(grid, 16):
        mask = layout.to_dense_block_mask()[0]
        nv = layout.tiling.video_blocks
        assert mask.diagonal().all(), layout
        assert mask[:, nv:].all() and mask[nv:, :].all(), layout


def test_defaults_are_the_published_wan_setting():
    layout = fastdit.build_layout("radial", TokenGrid(21, 30, 52))
    assert layout.block_q == 128
    assert RadialOptions() == RadialOptions(decay_factor=0.2, adjacent="half", spatial="1d", sink=True)


def test_radial_density_falls_and_blocks_grow_n_log_n():
    frames = [8, 16, 32, 64, 128]
    densities, per_frame = [], []
    for n in frames:
        layout = fastdit.build_layout("radial", TokenGrid(n, 16, 32), block_size=64, tile=(1, 8, 8))
        densities.append(layout.density())
        per_frame.append(layout.nnz / n)  # kept blocks per query frame
    assert all(a > b for a, b in zip(densities, densities[1:])), densities
    # O(n log n) total = O(log n) per query frame: each doubling of the frames adds about the same number of
    # blocks per frame (an O(n^2) mask would add twice as many as the previous doubling did)
    added = [b - a for a, b in zip(per_frame, per_frame[1:])]
    assert all(x > 0 for x in added)
    assert added[-1] / added[-2] < 1.2 and added[-2] / added[-3] < 1.2, added


def test_radial_frame_rule_matches_the_published_rule():
    opts = RadialOptions(decay_factor=0.5)
    P, B = 1560, 128  # Wan 480p: 30 x 52 tokens per frame
    assert frame_window(0, P, B, opts) == math.inf
    assert frame_window(1, P, B, opts) == P // 2
    assert frame_window(1, P, B, RadialOptions(adjacent="full")) == math.inf
    # d = 2, 3 share bit_length 2: 2048 / 4 * 0.5 = 256
    assert frame_window(2, P, B, opts) == frame_window(3, P, B, opts) == 256
    # window never below one block
    assert frame_window(7, P, B, RadialOptions(decay_factor=0.01)) == B
    # far frames: reach = 2048 / 2**bit_length(d) < B -> keep only d % (B // reach) == 0
    assert frame_window(16, P, B, opts) == B  # reach 64, keep every 2nd
    assert frame_window(17, P, B, opts) == 0.0
    assert frame_window(32, P, B, opts) == B  # reach 32: every 4th
    assert frame_window(34, P, B, opts) == 0.0


def test_radial_sink_and_temporal_subsampling_show_in_the_layout():
    grid = TokenGrid(40, 8, 8)
    tiling = Tiling.create(grid, 16, (1, 4, 4))
    mask = fastdit.build_layout("radial", grid, block_size=16, tile=(1, 4, 4)).to_dense_block_mask()[0]
    per_frame = mask.view(40, 4, 40, 4).any(-1).any(1)  # [query frame, key frame]
    assert per_frame[:, 0].all()  # frame 0 is an attention sink
    P, B, opts = grid.tokens_per_frame, tiling.block_size, RadialOptions()
    for i in range(1, 40):
        for j in range(1, 40):
            assert bool(per_frame[i, j]) == (frame_window(abs(i - j), P, B, opts) > 0), (i, j)
    no_sink = fastdit.build_layout("radial", grid, block_size=16, tile=(1, 4, 4), sink=False)
    assert no_sink.nnz < fastdit.build_layout("radial", grid, block_size=16, tile=(1, 4, 4)).nnz


def _grat_brute_force(grid, tile, mode, radius):
    """Token-level construction straight from the definition, reduced to blocks."""
    tiling = Tiling.create(grid, math.prod(tile), tile)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (grid.t, grid.h, grid.w)), indexing="ij"), -1)
    coords = coords.reshape(-1, 3)
    group = coords // torch.tensor(tile)  # each token's group (= tile) coordinates
    block = tiling.destination[: grid.video_tokens] // tiling.block_size
    gq, gk = group[:, None, :], group[None, :, :]
    if mode == "surround":
        keep = ((gq - gk).abs() <= torch.tensor(radius)).all(-1)
    else:
        keep = ((gq == gk).sum(-1) >= 2)
    nv = tiling.video_blocks
    out = torch.zeros(nv, nv, dtype=torch.bool)
    qi, ki = keep.nonzero(as_tuple=True)
    out[block[qi], block[ki]] = True
    return out


@pytest.mark.parametrize("grid,tile", [(TokenGrid(4, 8, 8), (1, 4, 4)), (TokenGrid(5, 7, 9), (1, 4, 4)),
                                       (TokenGrid(6, 6, 10), (2, 2, 4)), (TokenGrid(1, 12, 20), (1, 4, 4))])
@pytest.mark.parametrize("mode,radius", [("crisscross", (1, 1, 1)), ("surround", (1, 1, 1)), ("surround", (0, 2, 1))])
def test_grat_matches_a_brute_force_token_level_construction(grid, tile, mode, radius):
    layout = fastdit.build_layout("grat", grid, block_size=math.prod(tile), tile=tile, mode=mode, radius=radius)
    assert torch.equal(layout.to_dense_block_mask()[0], _grat_brute_force(grid, tile, mode, radius))


def test_static_layouts_are_cached():
    grid = TokenGrid(8, 16, 16)
    assert fastdit.build_layout("radial", grid, block_size=32) is fastdit.build_layout("radial", grid, block_size=32)
    assert fastdit.build_layout("radial", grid, block_size=32) is not fastdit.build_layout(
        "radial", grid, block_size=32, decay_factor=0.5)


@pytest.mark.parametrize("call,match", [
    (lambda: fastdit.build_layout("nope", TokenGrid(2, 8, 8)), "unknown method 'nope'"),
    (lambda: fastdit.build_layout("radial", TokenGrid(2, 8, 8), decay=0.3), "unknown option.*decay_factor"),
    (lambda: fastdit.build_layout("radial", TokenGrid(2, 8, 8), decay_factor=-1), "decay_factor"),
    (lambda: fastdit.build_layout("grat", TokenGrid(2, 8, 8), mode="diagonal"), "grat mode"),
    (lambda: fastdit.build_layout("grat", TokenGrid(2, 8, 8), radius=(1, 2)), "radius"),
    (lambda: fastdit.build_layout("radial", TokenGrid(2, 8, 8), block_size=48), "power of two"),
])
def test_bad_options_raise_clear_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_layout_building_for_720p_129_frames_stays_far_below_one_token_mask():
    """~119k tokens: one S x S bool would be 13 GiB; layout building must stay under 64 MiB of peak memory."""
    script = textwrap.dedent("""
        import resource, fastdit
        grid = fastdit.TokenGrid(33, 45, 80, text_tokens=256)
        fastdit.build_layout("dense", fastdit.TokenGrid(2, 8, 8))  # warm imports and caches
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        layouts = [fastdit.build_layout(m, grid, **o) for m, o in
                   [("radial", {}), ("radial", {"spatial": "2d"}), ("grat", {}), ("grat", {"mode": "surround"}),
                    ("dense", {})]]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(grid.num_tokens, (after - before) / 1024, " ".join(f"{l.density():.3f}" for l in layouts))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    tokens, peak_mib = int(out[0]), float(out[1])
    assert tokens == 33 * 45 * 80 + 256
    assert peak_mib < 64, f"layout building raised peak RSS by {peak_mib:.1f} MiB"
