"""VMoBA: layer-wise 1D/2D/3D key cells, global threshold selection per head, option checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fastdit
from fastdit import TokenGrid, Tiling
from fastdit.methods.vmoba import VmobaOptions, partition_cells

BLOCK = 16


def _qk(grid: TokenGrid, heads: int = 2, dim: int = 16, batch: int = 1, dtype=torch.float32, tile=None):
    tiling = Tiling.create(grid, BLOCK, tile)
    q, k, v = (tiling.to_tile_order(torch.randn(batch, heads, grid.num_tokens, dim, dtype=dtype)) for _ in range(3))
    return tiling, q, k, v


def _same_cell(cells: torch.Tensor) -> torch.Tensor:
    return cells.view(-1, 1) == cells.view(1, -1)


def test_partitions_on_a_4x8x8_grid():
    """1D: pairs of tile-frames; 2D: one tile column through all frames; 3D: 2-tile-frame cubes."""
    tiling = Tiling.create(TokenGrid(4, 8, 8), BLOCK, tile=(1, 4, 4))  # 4 x 2 x 2 tiles
    options = VmobaOptions(chunk_1d=2, chunk_2d=(1, 1), chunk_3d=(2, 1, 1))
    t, y, x = tiling.block_coords().unbind(-1)
    expected = {"1d": (t // 2, 2), "2d": (y * 2 + x, 4), "3d": ((t // 2) * 4 + y * 2 + x, 8)}
    for kind, (cells, count) in expected.items():
        got, n = partition_cells(tiling, kind, options)
        assert n == count and torch.equal(_same_cell(got), _same_cell(cells)), kind
    # cells of 8 tiles (1d), 4 (2d) and 2 (3d)
    for kind, size in (("1d", 8), ("2d", 4), ("3d", 2)):
        assert torch.bincount(partition_cells(tiling, kind, options)[0]).tolist() == [size] * (16 // size)


def test_layer_picks_the_partition_and_rows_are_whole_cells():
    grid = TokenGrid(4, 8, 8)
    tiling, q, k, _ = _qk(grid, heads=2)
    options = VmobaOptions()
    for layer, kind in enumerate(("1d", "2d", "3d", "1d")):
        assert options.partition(layer) == kind
        cells, _ = partition_cells(tiling, kind, options)
        mask = fastdit.build_layout("vmoba", grid, block_size=BLOCK, q=q, k=k, layer=layer,
                                    threshold=0.3).to_dense_block_mask()
        same = _same_cell(cells)
        eye = torch.eye(tiling.num_blocks, dtype=torch.bool)
        for h in range(2):
            for i in range(tiling.num_blocks):
                others = mask[h, i] & ~eye[i]
                # every kept block (besides the diagonal) brings its whole cell along
                for j in others.nonzero().flatten().tolist():
                    assert bool(mask[h, i][same[j]].all()), (kind, h, i, j)
        assert bool(mask[:, eye].all())


def test_order_option_cycles_over_layers():
    options = VmobaOptions(order=("3d", "1d"))
    assert [options.partition(layer) for layer in range(4)] == ["3d", "1d", "3d", "1d"]
    assert VmobaOptions(order="2d").partition(5) == "2d"


def _brute_force_mask(tiling: Tiling, q, k, options: VmobaOptions, layer: int) -> torch.Tensor:
    """Global selection as the module docstring defines it, pair by pair in plain Python."""
    nv, bs, D = tiling.video_blocks, tiling.block_size, q.shape[-1]
    valid = tiling.valid[: nv * bs].view(nv, bs)
    cells, n_cells = partition_cells(tiling, options.partition(layer), options)
    H = q.shape[1]
    mask = torch.zeros(H, nv, nv, dtype=torch.bool)
    for h in range(H):
        def tokens(x, blocks):
            rows = [x[:, h, b * bs:(b + 1) * bs][:, valid[b]] for b in blocks]
            return torch.cat(rows, dim=1)  # [B, tokens, D]

        q_means = [tokens(q, [i]).mean(dim=(0, 1)) for i in range(nv)]
        members = [[b for b in range(nv) if cells[b] == c] for c in range(n_cells)]
        k_keys = [tokens(k, members[c]) for c in range(n_cells)]
        logits = {(i, c): float(q_means[i] @ k_keys[c].mean(dim=(0, 1))) / math.sqrt(D) + math.log(k_keys[c].shape[1])
                  for i in range(nv) for c in range(n_cells)}
        if options.normalize == "head":  # one softmax over every pair of the head
            top = max(logits.values())
            total = sum(math.exp(a - top) for a in logits.values())
            weight = {pair: math.exp(a - top) / total for pair, a in logits.items()}
        else:  # a softmax per query block, each block weighing 1 / nv
            row_total = {i: sum(math.exp(logits[(i, c)]) for c in range(n_cells)) for i in range(nv)}
            weight = {(i, c): math.exp(a) / row_total[i] / nv for (i, c), a in logits.items()}
        above = 0.0
        for (i, c) in sorted(weight, key=lambda pair: -weight[pair]):
            if not above < options.threshold:
                break
            for b in members[c]:
                mask[h, i, b] = True
            above += weight[(i, c)]
        for i in range(nv):
            mask[h, i, i] = True
    return mask


@pytest.mark.parametrize("normalize", ["head", "query"])
@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.1, 0.4, 0.8])
def test_global_selection_matches_brute_force(layer, threshold, normalize):
    grid = TokenGrid(3, 6, 10)  # 3 x 2 x 3 tiles of 1x4x4: padded tiles and ragged edge cells
    tiling, q, k, _ = _qk(grid, heads=2, batch=2, dtype=torch.float64, tile=(1, 4, 4))
    knobs = {"threshold": threshold, "chunk_1d": 1, "chunk_2d": (1, 2), "chunk_3d": (2, 1, 2), "normalize": normalize}
    options = VmobaOptions(**knobs)
    layout = fastdit.build_layout("vmoba", grid, block_size=BLOCK, tile=(1, 4, 4), q=q, k=k, layer=layer, **knobs)
    assert torch.equal(layout.to_dense_block_mask(), _brute_force_mask(tiling, q, k, options, layer))


def test_threshold_one_equals_dense():
    grid = TokenGrid(3, 6, 10)
    tiling, q, k, v = _qk(grid)
    layout = fastdit.build_layout("vmoba", grid, block_size=BLOCK, q=q, k=k, threshold=1.0)
    assert layout.density() == 1.0
    out = tiling.from_tile_order(fastdit.attention(q, k, v, layout, backend="torch"))
    dense = F.scaled_dot_product_attention(*(tiling.from_tile_order(x) for x in (q, k, v)))
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalize", ["head", "query"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_lower_thresholds_select_fewer_blocks(layer, normalize):
    grid = TokenGrid(4, 8, 12)
    tiling, q, k, _ = _qk(grid, heads=2)
    masks = [fastdit.build_layout("vmoba", grid, block_size=BLOCK, q=q, k=k, layer=layer, threshold=threshold,
                                  normalize=normalize).to_dense_block_mask()
             for threshold in (1.0, 0.9, 0.6, 0.3, 0.1, 0.02)]
    for looser, tighter in zip(masks, masks[1:]):
        assert bool((tighter <= looser).all())  # a lower threshold only ever drops blocks
    assert int(masks[-1].sum()) < int(masks[0].sum()) == 2 * tiling.num_blocks**2


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"chunk_1d": 0}, "chunk_1d"),
    ({"chunk_1d": 1.5}, "chunk_1d"),
    ({"chunk_2d": (1,)}, "chunk_2d"),
    ({"chunk_2d": (1, 0)}, "chunk_2d"),
    ({"chunk_3d": (2, 1, 0.5)}, "whole tiles"),
    ({"order": ("1d", "4d")}, "order"),
    ({"order": ()}, "order"),
    ({"normalize": "row"}, "normalize"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        VmobaOptions(**options)
