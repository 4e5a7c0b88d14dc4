"""Pyramid (PSA): level allocation by cumulative block importance, exactness of pooled levels, option checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fastdit
from fastdit import TokenGrid, Tiling
from fastdit.methods.pyramid import PyramidOptions

GRID = TokenGrid(3, 6, 10)  # 16-token tiles (4, 2, 2) pad it: exercises partial blocks
BLOCK = 16


def _qkv(grid: TokenGrid, heads: int = 2, dim: int = 16, batch: int = 1, dtype=torch.float32):
    tiling = Tiling.create(grid, BLOCK)
    q, k, v = (tiling.to_tile_order(torch.randn(batch, heads, grid.num_tokens, dim, dtype=dtype)) for _ in range(3))
    return tiling, q, k, v


def _dense(tiling: Tiling, q, k, v) -> torch.Tensor:
    raster = [tiling.from_tile_order(x) for x in (q, k, v)]
    return F.scaled_dot_product_attention(*raster)


def test_identical_keys_per_block_equal_dense_at_every_level():
    """A pooled key standing for m identical keys (ln m bias) gives exactly the full-resolution result."""
    tiling, q, k, v = _qkv(GRID, batch=2)
    nv, bs = tiling.video_blocks, tiling.block_size
    per_block = torch.randn(2, 2, nv, 1, 16)
    k = k.clone()
    k[:, :, : nv * bs] = per_block.expand(-1, -1, -1, bs, -1).reshape(2, 2, nv * bs, 16)
    k = k * tiling.valid.view(1, 1, -1, 1)  # padding stays zero, as in tile order
    layout = fastdit.build_layout("pyramid", GRID, block_size=BLOCK, q=q, k=k, prune=False,
                                  thresholds=(0.2, 0.3, 0.4, 1.0))
    assert layout.max_level == 3 and int((layout.level == 1).sum()) > 0  # pooled levels really used
    out = fastdit.attention(q, k, v, layout, backend="torch")
    torch.testing.assert_close(tiling.from_tile_order(out), _dense(tiling, q, k, v), atol=1e-5, rtol=1e-5)


def test_thresholds_of_one_keep_everything_at_full_resolution():
    tiling, q, k, v = _qkv(GRID)
    layout = fastdit.build_layout("pyramid", GRID, block_size=BLOCK, q=q, k=k, thresholds=(1, 1, 1, 1))
    assert layout.density() == 1.0 and layout.max_level == 0
    out = fastdit.attention(q, k, v, layout, backend="torch")
    torch.testing.assert_close(tiling.from_tile_order(out), _dense(tiling, q, k, v), atol=1e-5, rtol=1e-5)


def _brute_force_levels(tiling: Tiling, q, k, options: PyramidOptions) -> torch.Tensor:
    """The allocation rule of the module docstring, one query block at a time, in plain Python."""
    nv, bs, D = tiling.video_blocks, tiling.block_size, q.shape[-1]
    valid = tiling.valid[: nv * bs].view(nv, bs)

    def means(x):
        blocks = x[:, :, : nv * bs].reshape(x.shape[0], x.shape[1], nv, bs, D)
        return [[blocks[:, h, j][:, valid[j]].mean(dim=(0, 1)) for j in range(nv)] for h in range(x.shape[1])]

    qm, km = means(q), means(k)
    levels = torch.full((q.shape[1], nv, nv), -1, dtype=torch.int64)
    for h in range(q.shape[1]):
        for i in range(nv):
            logits = [float(qm[h][i] @ km[h][j]) / math.sqrt(D) + math.log(int(valid[j].sum())) for j in range(nv)]
            top = max(logits)
            weights = [math.exp(a - top) for a in logits]
            probs = [w / sum(weights) for w in weights]
            above = 0.0
            for j in sorted(range(nv), key=lambda j: -probs[j]):
                band = next((l for l, tau in enumerate(options.thresholds) if above < tau or tau >= 1), None)
                if band is None:
                    band = None if options.prune else options.levels
                levels[h, i, j] = -1 if band is None else band
                above += probs[j]
            levels[h, i, i] = 0
    return levels


@pytest.mark.parametrize("prune", [True, False])
def test_allocation_matches_brute_force(prune):
    tiling, q, k, _ = _qkv(GRID, heads=2, batch=2, dtype=torch.float64)
    options = PyramidOptions(thresholds=(0.3, 0.5, 0.6, 0.8), prune=prune)
    layout = fastdit.build_layout("pyramid", tiling.grid, block_size=BLOCK, q=q, k=k, thresholds=options.thresholds,
                                  prune=prune)
    assert layout.num_heads == 2
    assert torch.equal(layout.to_level_map().long(), _brute_force_levels(tiling, q, k, options))


def test_lower_thresholds_read_fewer_blocks_and_keep_the_diagonal():
    tiling, q, k, _ = _qkv(GRID, heads=3)
    previous = None
    for scale in (1.0, 0.8, 0.5, 0.25):
        taus = tuple(scale * t for t in (0.4, 0.5, 0.6, 0.8))
        levels = fastdit.build_layout("pyramid", GRID, block_size=BLOCK, q=q, k=k, thresholds=taus).to_level_map()
        kept = levels >= 0
        diagonal = torch.arange(tiling.num_blocks)
        assert bool((levels[:, diagonal, diagonal] == 0).all())
        if previous is not None:
            assert bool((kept <= previous).all()) and int(kept.sum()) < int(previous.sum())
        previous = kept


def test_heads_get_their_own_layout():
    tiling, q, k, _ = _qkv(GRID, heads=2)
    q[:, 1] = q[:, 0].flip(-2)  # a second head with different queries
    levels = fastdit.build_layout("pyramid", GRID, block_size=BLOCK, q=q, k=k).to_level_map()
    assert levels.shape[0] == 2 and not torch.equal(levels[0], levels[1])


@pytest.mark.parametrize("options, message", [
    ({"thresholds": (0.5, 0.4, 0.6, 0.8)}, "non-decreasing"),
    ({"thresholds": (0.4, 0.5, 0.6, 1.2)}, r"\(0, 1\]"),
    ({"thresholds": (0.0, 0.5, 0.6, 0.8)}, r"\(0, 1\]"),
    ({"thresholds": (0.4, 0.5, 0.8)}, "levels \\+ 1"),
    ({"levels": 0, "thresholds": (0.5,)}, "levels must be an int >= 1"),
    ({"prune": "yes"}, "prune"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        PyramidOptions(**options)


def test_levels_too_coarse_for_the_block_raise():
    tiling, q, k, _ = _qkv(GRID)
    with pytest.raises(ValueError, match="more than the 16-token kernel block"):
        fastdit.build_layout("pyramid", GRID, block_size=BLOCK, q=q, k=k, levels=5,
                             thresholds=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9))


def test_needs_q_and_k():
    with pytest.raises(ValueError, match="pass q= and k="):
        fastdit.build_layout("pyramid", GRID, block_size=BLOCK)
