"""GRAT: the official criss-cross group mask (planes), the surround and lines variants, and groups of several
kernel blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastdit
from fastdit import TokenGrid
from tests.methods.published_rules import FIXTURES, official


def _official_group_mask(grid, group) -> torch.Tensor:
    key = "crisscross_{}_g{}".format("x".join(map(str, grid)), "x".join(map(str, group)))
    with np.load(FIXTURES / "grat_masks.npz") as z:
        shape = tuple(z[key + "__shape"])
        return torch.from_numpy(np.unpackbits(z[key])[: int(np.prod(shape))].reshape(shape).astype(bool))


@pytest.mark.parametrize("record", official("grat")["records"], ids=lambda r: f"{r['grid']}-g{r['group']}")
def test_crisscross_equals_the_official_mask(record):
    grid, group = TokenGrid(*record["grid"]), tuple(record["group"])
    layout = fastdit.build_layout("grat", grid, tile=group)
    per_group = math.prod(group) // 128
    blocks = layout.to_dense_block_mask()[0]
    groups = blocks[::per_group, ::per_group]
    assert torch.equal(blocks, groups.repeat_interleave(per_group, 0).repeat_interleave(per_group, 1))
    assert torch.equal(groups, _official_group_mask(record["grid"], group))
    assert layout.density() == pytest.approx(record["group_density"], abs=1e-12)


def _brute_force(grid: TokenGrid, group, mode: str, radius) -> torch.Tensor:
    """Token-level construction from the definition, reduced to the layout's blocks."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (grid.t, grid.h, grid.w)), indexing="ij"), -1)
    cell = coords.reshape(-1, 3) // torch.tensor(group)
    gq, gk = cell[:, None, :], cell[None, :, :]
    if mode == "surround":
        keep = ((gq - gk).abs() <= torch.tensor(radius)).all(-1)
    elif mode == "crisscross":  # any one shared coordinate (an image's single frame is not one)
        axes = slice(1, 3) if grid.t == 1 else slice(0, 3)
        keep = (gq == gk)[..., axes].any(-1)
    else:
        keep = (gq == gk).sum(-1) >= 2
    layout = fastdit.build_layout("dense", grid, block_size=16, order="tiles", tile=group)
    block = layout.order.video_destination // 16
    out = torch.zeros(layout.n_q_blocks, layout.n_q_blocks, dtype=torch.bool)
    qi, ki = keep.nonzero(as_tuple=True)
    out[block[qi], block[ki]] = True
    return out


@pytest.mark.parametrize("grid,group", [(TokenGrid(4, 8, 8), (1, 4, 4)), (TokenGrid(5, 7, 9), (1, 4, 4)),
                                        (TokenGrid(6, 6, 10), (2, 4, 4)), (TokenGrid(1, 12, 20), (1, 4, 8))])
@pytest.mark.parametrize("mode,radius", [("crisscross", 1), ("lines", 1), ("surround", (1, 1, 1)),
                                         ("surround", (0, 2, 1))])
def test_every_mode_matches_a_token_level_construction(grid, group, mode, radius):
    layout = fastdit.build_layout("grat", grid, block_size=16, tile=group, mode=mode, radius=radius)
    valid = layout.order.valid.view(-1, 16).any(-1)  # blocks that are all padding hold no token
    expected = _brute_force(grid, group, mode, radius)
    mine = layout.to_dense_block_mask()[0]
    assert torch.equal(mine[valid][:, valid], expected[valid][:, valid])


def test_default_group_is_the_published_one():
    layout = fastdit.build_layout("grat", TokenGrid(8, 16, 32))
    assert layout.order.kind == "tiles" and layout.order.tile == (4, 8, 8) and layout.block_q == 128
    image = fastdit.build_layout("grat", TokenGrid(1, 64, 64))
    assert image.order.tile == (1, 16, 16)
    small_blocks = fastdit.build_layout("grat", TokenGrid(8, 16, 32), block_size=512)  # 256 is not whole blocks
    assert math.prod(small_blocks.order.tile) == 512


def test_lines_keep_a_subset_of_crisscross():
    grid = TokenGrid(8, 32, 32)
    planes = fastdit.build_layout("grat", grid).to_dense_block_mask()
    lines = fastdit.build_layout("grat", grid, mode="lines").to_dense_block_mask()
    assert bool((lines <= planes).all()) and int(lines.sum()) < int(planes.sum())


@pytest.mark.parametrize("options,match", [({"mode": "diagonal"}, "grat mode"), ({"radius": (1, 2)}, "radius"),
                                           ({"radius": -1}, "radius")])
def test_bad_options_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        fastdit.build_layout("grat", TokenGrid(2, 8, 8), **options)


def test_a_group_must_hold_whole_blocks():
    with pytest.raises(ValueError, match="multiple of the 128-token block_size"):
        fastdit.build_layout("grat", TokenGrid(4, 8, 8), tile=(1, 8, 8))


def test_a_radius_past_the_grid_keeps_every_group_and_a_float_one_is_refused():
    grid = TokenGrid(2, 8, 8)
    huge = fastdit.build_layout("grat", grid, block_size=16, mode="surround", radius=(1, 10**40, 0))
    whole = fastdit.build_layout("grat", grid, block_size=16, mode="surround", radius=(1, 8, 0))
    assert torch.equal(huge.to_dense_block_mask(), whole.to_dense_block_mask())
    with pytest.raises(ValueError, match="grat radius must be an int >= 0 or three of them"):
        fastdit.build_layout("grat", grid, block_size=16, mode="surround", radius=float("inf"))
