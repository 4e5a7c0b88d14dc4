"""SD/SDXL and DreamLite UNets: self-attention at every resolution level, each with the grid of its level."""

from __future__ import annotations

import fastdit
from fastdit.layout.grid import TokenGrid
from fastdit.patching import set_observer
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


def test_dreamlite_levels_run_on_their_grids_with_the_key_value_heads_its_processor_repeated(cases, forward):
    """DreamLite's attention has one key/value head for two query heads; its stock processor repeats them before
    it dispatches, so every self-attention call reaches the engine (none goes to the user's backend as a
    grouped-query call) on its level's grid (the family's ``call_grid``), the level without self-attention
    skipped."""
    case = cases["dreamlite"]
    model = case.build()
    attn1 = model.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn1.to_k.out_features * 2 == attn1.to_q.out_features
    calls = []
    fastdit.apply(model, method="grat", preset=None, block_size=16)
    set_observer(model, lambda call: calls.append((call.layer, call.grid, call.q.shape[1], call.k.shape[1])))
    try:
        forward(model, case.inputs((1, 28, 36), 2))
        records = sorted(fastdit.stats(model).records, key=lambda r: r.layer)
    finally:
        fastdit.remove(model)
    # execution order: down level 0, mid (level 2), up level 0 (x2); level 1 is built without self-attention
    assert [(layer, (grid.h, grid.w)) for layer, grid, _, _ in calls] == [(0, (28, 36)), (1, (7, 9)), (2, (28, 36)),
                                                                         (3, (28, 36))]
    assert all(q_heads == k_heads == 2 for _, _, q_heads, k_heads in calls)
    assert [r.tokens for r in records] == [1008, 63, 1008, 1008]
    assert [r.dense for r in records] == [False, True, False, False]
    assert records[1].reason == "full layout"  # 7x9: the tiles form one criss-cross row, nothing to drop
