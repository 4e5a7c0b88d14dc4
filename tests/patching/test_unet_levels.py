"""SD/SDXL UNets: self-attention at every resolution level, each with the grid of its level."""

from __future__ import annotations

import fastdit
from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.unet import level_grid


def test_level_grids_halve_rounding_up_like_the_down_samplers():
    grid = TokenGrid(1, 14, 18)
    assert level_grid(grid, 14 * 18) == TokenGrid(1, 14, 18)
    assert level_grid(grid, 7 * 9) == TokenGrid(1, 7, 9)
    assert level_grid(grid, 4 * 5) == TokenGrid(1, 4, 5)
    assert level_grid(grid, 50) is None


def test_every_level_runs_sparse_on_its_own_grid(cases, forward):
    case = cases["unet"]
    model = case.build()
    fastdit.apply(model, method="grat", preset=None, block_size=16)
    try:
        forward(model, case.inputs((1, 28, 36), 2))
        records = sorted(fastdit.stats(model).records, key=lambda r: r.layer)
    finally:
        fastdit.remove(model)
    # execution order: down level 0, down level 1, mid (level 2), up level 1 (x2), up level 0 (x2)
    assert [r.tokens for r in records] == [1008, 252, 63, 252, 252, 1008, 1008]
    assert [r.dense for r in records] == [False, False, True, False, False, False, False]
    assert records[2].reason == "full layout"  # 7x9: the tiles form one criss-cross row, nothing to drop
