"""Token orders: exact round trips, padding only where each order puts it, and what a block holds."""

import pytest
import torch

from fastdit import TokenGrid, build_layout
from fastdit.layout.order import ORDERS, RasterOrder, choose_tile, make_order

SHAPES = {"tiles": None, "chunks": (2, 3, 4)}


@pytest.mark.parametrize("kind", list(ORDERS))
@pytest.mark.parametrize("text_position", ["after", "before", "around"])
@pytest.mark.parametrize("grid_shape,text,block", [((5, 7, 9), 0, 16), ((5, 7, 9), 5, 16), ((1, 13, 11), 7, 32),
                                                   ((3, 4, 4), 0, 16), ((21, 30, 52), 0, 128)])
def test_every_order_round_trips_exactly(kind, grid_shape, text, block, text_position):
    grid = TokenGrid(*grid_shape, text_tokens=text, text_position=text_position,
                     text_before=text // 2 if text_position == "around" else 0)
    order = make_order(kind, grid, block, SHAPES.get(kind))
    x = torch.randn(2, 3, grid.num_tokens, 4)
    ordered = order.to_order(x)
    assert ordered.shape[2] == order.seq_len and order.seq_len % block == 0
    assert torch.equal(order.from_order(ordered), x)
    # padding is zero and marked invalid; every real token lands on a valid slot exactly once
    assert int(order.valid.sum()) == grid.num_tokens
    assert torch.all(ordered[:, :, ~order.valid] == 0)
    assert torch.unique(order.destination).numel() == grid.num_tokens
    # text comes after the video, in whole blocks of its own
    video = grid.video_slice
    text_slots = torch.cat((order.destination[:video.start], order.destination[video.stop:]))
    assert text_slots.numel() == text and grid.leading_text_tokens == {"after": 0, "before": text,
                                                                        "around": text // 2}[text_position]
    assert bool((text_slots >= order.video_len).all()) and order.seq_len - order.video_len == -(-text // block) * block


@pytest.mark.parametrize("kind", ["raster", "gilbert", "chunks"])
def test_end_padded_orders_pad_only_after_the_last_video_token(kind):
    order = make_order(kind, TokenGrid(5, 7, 9), 16, SHAPES.get(kind))
    assert bool(order.valid[:315].all()) and not bool(order.valid[315:].any())


def test_raster_is_the_identity_and_chunks_are_contiguous():
    grid = TokenGrid(4, 6, 8)
    assert torch.equal(make_order("raster", grid, 16).destination, torch.arange(grid.num_tokens))
    chunks = make_order("chunks", grid, 16, (2, 3, 4))
    ranked = chunks.chunk_of_token[torch.argsort(chunks.video_destination)]  # chunk of each position
    assert torch.equal(ranked, torch.sort(ranked).values) and chunks.chunks == (2, 2, 2)


def test_a_tile_holds_spatio_temporal_neighbours_and_whole_blocks():
    order = make_order("tiles", TokenGrid(4, 8, 8), 16, (2, 4, 4))
    first_tile = order.token_coords[:32]
    assert set(first_tile[:, 0].tolist()) == {0, 1}
    assert first_tile[:, 1].max() == 3 and first_tile[:, 2].max() == 3
    assert set(order.token_coords[:16, 0].tolist()) == {0}  # its first block: the tile's first frame


def test_choose_tile_minimises_padding_with_compact_tiles():
    assert choose_tile(TokenGrid(4, 8, 8), 16) == (1, 4, 4)
    tile = choose_tile(TokenGrid(21, 30, 52), 128)
    assert make_order("tiles", TokenGrid(21, 30, 52), 128, tile).padding_fraction < 0.15
    th, tw = tile[1:]
    assert max(th, tw) // min(th, tw) <= 4


@pytest.mark.parametrize("bad", [dict(t=0, h=4, w=4), dict(t=2, h=-1, w=4), dict(t=1, h=2.5, w=4),
                                 dict(t=1, h=2, w=2, text_tokens=-1), dict(t=1, h=2, w=2, text_position="middle"),
                                 dict(t=1, h=2, w=2, text_tokens=4, text_before=2),
                                 dict(t=1, h=2, w=2, text_tokens=4, text_position="around", text_before=5)])
def test_bad_grid_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="TokenGrid"):
        TokenGrid(**bad)


@pytest.mark.parametrize("call,match", [
    (lambda: make_order("tiles", TokenGrid(2, 8, 8), 128, (1, 8, 8)), "multiple of the 128-token block_size"),
    (lambda: make_order("tiles", TokenGrid(2, 8, 8), 16, (1, 2.5, 8)), "tile must be three positive ints"),
    (lambda: make_order("chunks", TokenGrid(2, 8, 8), 16), "needs a chunk shape"),
    (lambda: make_order("raster", TokenGrid(2, 8, 8), 16, (1, 4, 4)), "takes no tile"),
    (lambda: make_order("spiral", TokenGrid(2, 8, 8), 16), "unknown token order"),
    (lambda: choose_tile(TokenGrid(2, 8, 8), 24), "power of two"),
    # issue 39: a grid whose block mask no machine holds, and token-level blocks, before any tensor is built
    (lambda: make_order("raster", TokenGrid(10**6, 10**6, 10**6), 1024), "is 976562500000000 blocks of 1024 tokens"),
    (lambda: make_order("tiles", TokenGrid(10**6, 10**6, 10**6), 128), "more than the 46340 a layout holds"),
    (lambda: build_layout("radial", TokenGrid(10**6, 10**6, 10**6)), "use larger blocks or a smaller grid"),
    (lambda: build_layout("radial", TokenGrid(2, 8, 8), block_size=1), "power of two from 16 to 1024, got 1"),
    (lambda: build_layout("radial", TokenGrid(2, 8, 8), block_size=True), "from 16 to 1024, got True"),
    (lambda: RasterOrder(TokenGrid(2, 8, 8), 8), "from 16 to 1024, got 8"),
])
def test_bad_orders_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
