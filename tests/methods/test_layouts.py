"""What every method's layout keeps: the text blocks, its own token order, a cache for static layouts, clear
errors, and memory far below one token mask at 720p."""

import subprocess
import sys
import textwrap

import pytest
import torch

import fastdit
from fastdit import TokenGrid


def _all_layouts(grid, block):
    q, k = (torch.randn(1, 2, grid.num_tokens, 16) for _ in range(2))
    return [fastdit.build_layout("dense", grid, block_size=block),
            fastdit.build_layout("radial", grid, block_size=block),
            fastdit.build_layout("grat", grid, block_size=block),
            fastdit.build_layout("grat", grid, block_size=block, mode="surround", radius=(0, 1, 2)),
            fastdit.build_layout("pyramid", grid, block_size=block, q=q, k=k),
            fastdit.build_layout("vmoba", grid, block_size=block, q=q, k=k, layer=2)]


@pytest.mark.parametrize("grid", [TokenGrid(8, 8, 12, text_tokens=20), TokenGrid(5, 7, 9, text_tokens=3),
                                  TokenGrid(1, 16, 16, text_tokens=7, text_position="before")])
def test_every_layout_keeps_all_text_blocks_and_round_trips_tokens(grid):
    x = torch.randn(1, 2, grid.num_tokens, 4)
    for layout in _all_layouts(grid, 16):
        mask = layout.to_dense_block_mask()
        nv = layout.order.video_blocks
        assert mask[:, :, nv:].all() and mask[:, nv:, :].all(), layout
        assert torch.equal(layout.from_layout_order(layout.to_layout_order(x)), x), layout


def test_each_method_runs_on_its_published_order():
    grid = TokenGrid(8, 16, 16)
    kinds = [layout.order.kind for layout in _all_layouts(grid, 32)]
    assert kinds == ["raster", "raster", "tiles", "tiles", "gilbert", "chunks"]


def test_static_layouts_are_cached():
    grid = TokenGrid(8, 16, 16)
    assert fastdit.build_layout("radial", grid, block_size=32) is fastdit.build_layout("radial", grid, block_size=32)
    assert fastdit.build_layout("radial", grid, block_size=32) is not fastdit.build_layout(
        "radial", grid, block_size=32, decay_factor=0.5)


@pytest.mark.parametrize("call,match", [
    (lambda: fastdit.build_layout("nope", TokenGrid(2, 8, 8)), "unknown method 'nope'"),
    (lambda: fastdit.build_layout("radial", TokenGrid(2, 8, 8), decay=0.3), "unknown option.*decay_factor"),
    (lambda: fastdit.build_layout("radial", TokenGrid(2, 8, 8), order="spiral"), "defined on the token order"),
    (lambda: fastdit.build_layout("dense", TokenGrid(2, 8, 8), order="spiral"), "defined on the token order"),
    (lambda: fastdit.build_layout("pyramid", TokenGrid(2, 8, 8), order="chunks", q=torch.zeros(1, 1, 128, 4),
                                  k=torch.zeros(1, 1, 128, 4)), "chunk shape"),
    (lambda: fastdit.build_layout("pyramid", TokenGrid(2, 8, 8), q=torch.zeros(1, 1, 100, 4),
                                  k=torch.zeros(1, 1, 100, 4)), "expected 128 tokens"),
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
                   [("radial", {}), ("radial", {"sink": False}), ("grat", {}), ("grat", {"mode": "surround"}),
                    ("dense", {})]]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(grid.num_tokens, (after - before) / 1024, " ".join(f"{l.density():.3f}" for l in layouts))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    tokens, peak_mib = int(out[0]), float(out[1])
    assert tokens == 33 * 45 * 80 + 256
    assert peak_mib < 64, f"layout building raised peak RSS by {peak_mib:.1f} MiB"
