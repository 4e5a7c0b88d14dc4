import pytest
import torch

from fastdit import Tiling, TokenGrid
from fastdit.grid import choose_tile


@pytest.mark.parametrize("text_position", ["after", "before"])
@pytest.mark.parametrize("grid_shape,text,block", [((5, 7, 9), 0, 16), ((5, 7, 9), 5, 16), ((1, 13, 11), 7, 32),
                                                   ((3, 4, 4), 0, 16), ((21, 30, 52), 0, 128)])
def test_tile_permutation_round_trips_exactly(grid_shape, text, block, text_position):
    grid = TokenGrid(*grid_shape, text_tokens=text, text_position=text_position)
    tiling = Tiling.create(grid, block)
    x = torch.randn(2, 3, grid.num_tokens, 4)
    tiled = tiling.to_tile_order(x)
    assert tiled.shape[2] == tiling.seq_len and tiling.seq_len % block == 0
    assert torch.equal(tiling.from_tile_order(tiled), x)
    # padding is zero and marked invalid; every real token lands on a valid slot exactly once
    assert int(tiling.valid.sum()) == grid.num_tokens
    assert torch.all(tiled[:, :, ~tiling.valid] == 0)
    assert torch.unique(tiling.destination).numel() == grid.num_tokens


def test_a_tile_holds_spatio_temporal_neighbours():
    grid = TokenGrid(4, 8, 8)
    tiling = Tiling.create(grid, 16, tile=(1, 4, 4))
    coords = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(8), torch.arange(8), indexing="ij"), -1)
    tiled = tiling.to_tile_order(coords.reshape(-1, 3).float(), dim=0)
    first_block = tiled[:16]
    assert set(first_block[:, 0].tolist()) == {0.0}
    assert first_block[:, 1].max() == 3 and first_block[:, 2].max() == 3


def test_text_blocks_follow_video_blocks():
    grid = TokenGrid(2, 4, 4, text_tokens=20, text_position="before")
    tiling = Tiling.create(grid, 16)
    assert tiling.video_blocks == 2 and tiling.text_blocks == 2
    # the model puts text first; tile order puts it after the video blocks
    assert tiling.destination[:20].min() == tiling.video_blocks * 16


def test_choose_tile_minimises_padding_with_compact_tiles():
    assert choose_tile(TokenGrid(4, 8, 8), 16) == (1, 4, 4)
    tile = choose_tile(TokenGrid(21, 30, 52), 128)
    tiling = Tiling.create(TokenGrid(21, 30, 52), 128, tile)
    assert tiling.padding_fraction < 0.15
    th, tw = tile[1:]
    assert max(th, tw) // min(th, tw) <= 4


@pytest.mark.parametrize("bad", [dict(t=0, h=4, w=4), dict(t=2, h=-1, w=4), dict(t=1, h=2.5, w=4),
                                 dict(t=1, h=2, w=2, text_tokens=-1), dict(t=1, h=2, w=2, text_position="middle")])
def test_bad_grid_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="TokenGrid"):
        TokenGrid(**bad)


def test_tile_must_match_block_size():
    with pytest.raises(ValueError, match="block_size"):
        Tiling.create(TokenGrid(2, 8, 8), 16, tile=(1, 8, 8))
    with pytest.raises(ValueError, match="power of two"):
        Tiling.create(TokenGrid(2, 8, 8), 24)
