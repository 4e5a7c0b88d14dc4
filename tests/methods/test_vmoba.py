"""VMoBA: the official per-query threshold selection on the official chunk orders, the token pairs a layout
keeps against the official choices (padded layouts too), the layer cycle, the ``block_union`` variant, option
checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdit
from fastdit import TokenGrid
from fastdit.layout.order import make_order
from fastdit.methods.vmoba import VmobaOptions, chunk_shape, select_chunks
from tests.methods.published_rules import FIXTURES, official

SETUPS = official("vmoba")["setups"]


def _official_inputs(grid: tuple[int, int, int], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The q, k (raster order) the official selection was run on (recipe in tests/fixtures/official/vmoba.json)."""
    T, H, W = grid
    S = T * H * W
    g = torch.Generator().manual_seed(seed)
    q, k, _ = (torch.randn(1, 2, S, 64, generator=g) for _ in range(3))
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([t, h, w], -1).reshape(S, 3).float()
    qs, ks = [], []
    for _ in range(2):
        phase = pos @ (torch.randn(32, 3, generator=g) / 2.5).T
        feat = torch.cat([torch.cos(phase), torch.sin(phase)], -1) * 1.6
        qs.append(feat + 0.3 * torch.randn(S, 64, generator=g))
        ks.append(feat + 0.3 * torch.randn(S, 64, generator=g))
    return {"random": (q, k), "structured": (torch.stack(qs)[None], torch.stack(ks)[None])}


def _chunk(part: str, size, grid) -> tuple[int, int, int]:
    T, H, W = grid
    return (size, H, W) if part.startswith("1d") else ((T, *size) if part.startswith("2d") else tuple(size))


def _cases():
    with np.load(FIXTURES / "vmoba_masks.npz") as z:
        for key in z.files:
            if not key.endswith("__shape"):
                shape = tuple(z[key + "__shape"])
                yield key, torch.from_numpy(np.unpackbits(z[key])[: int(np.prod(shape))].reshape(shape).astype(bool))


@pytest.mark.parametrize("key,expected", list(_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_selection_equals_the_official_code(key, expected):
    setup, part, case, thr = key.split("/")
    spec = SETUPS[setup]
    grid = tuple(spec["grid"])
    q, k = _official_inputs(grid, spec["seed"])[case]
    order = make_order("chunks", TokenGrid(*grid), 128, _chunk(part, spec["partitions"][part]["chunk_size"], grid))
    chunk_ids = torch.full((order.video_len,), -1, dtype=torch.int64)
    chunk_ids[order.video_destination] = order.chunk_of_token
    picked = select_chunks(order.to_order(q), order.to_order(k), chunk_ids, spec["partitions"][part]["num_chunks"],
                           float(thr[3:]))[0]
    picked = picked[:, order.video_destination]  # back to raster queries, as the fixture
    assert torch.equal(picked, expected)


def _layout_for(key: str, block_size: int, **options):
    """The fixture case ``key``'s layout built by ``fastdit.build_layout`` on the official q, k, the official
    choices as token pairs ``[H, S, S]`` (raster order), and the layout's order."""
    setup, part, case, thr = key.split("/")
    spec = SETUPS[setup]
    grid = tuple(spec["grid"])
    q, k = _official_inputs(grid, spec["seed"])[case]
    layer = ("1d", "2d", "3d").index(part[:2])
    size = spec["partitions"][part]["chunk_size"]
    chunk = {f"chunk_{part[:2]}": size if layer == 0 else tuple(size)}
    layout = fastdit.build_layout("vmoba", TokenGrid(*grid), block_size=block_size, q=q, k=k, layer=layer,
                                  threshold=float(thr[3:]), **chunk, **options)
    return layout, layout.order


def _pairs(selected: torch.Tensor, order) -> torch.Tensor:
    """``[H, S, C]`` chunk choices of raster queries as ``[H, S, S]`` token pairs (raster keys)."""
    return selected[:, :, order.chunk_of_token]


@pytest.mark.parametrize("block_size", [128, 1024], ids=["whole-blocks", "padded"])
@pytest.mark.parametrize("key,expected", list(_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_kept_pairs_equal_the_official_choice(key, expected, block_size):
    """The layout's per-query selection keeps the official token pairs (coverage >= 0.99, extra <= 0.02; the
    1024-token blocks pad every fixture grid but the 4x16x16 one), and its density is the official one."""
    layout, order = _layout_for(key, block_size)
    assert block_size == 128 or order.padding_fraction > 0 or order.grid.num_tokens == 1024
    sel, dest = layout.selection, order.video_destination
    ours = sel.select[0][:, dest][:, :, sel.key_group[dest]]
    official_pairs = _pairs(expected, order)
    kept = official_pairs.sum()
    assert (ours & official_pairs).sum() / kept >= 0.99 and (ours & ~official_pairs).sum() / kept <= 0.02
    real_density = float(sel.kept_pairs().sum()) / (2 * order.grid.num_tokens ** 2)
    assert abs(real_density - official_pairs.float().mean()) <= 0.02


def test_attention_runs_the_official_pairs():
    """End to end on a padded published-setting case: the torch backend's output is attention on exactly the
    official code's token pairs."""
    key = "published480_grid8x12x16/3d_st/structured/thr0.25"
    expected = dict(_cases())[key]
    layout, order = _layout_for(key, 1024)
    spec = SETUPS["published480_grid8x12x16"]
    q, k = _official_inputs(tuple(spec["grid"]), spec["seed"])["structured"]
    v = torch.randn_like(q)
    out = order.from_order(fastdit.attention(*(order.to_order(x) for x in (q, k, v)), layout, backend="torch"))
    scores = (q @ k.transpose(-1, -2) / 8).masked_fill(~_pairs(expected, order), float("-inf"))
    torch.testing.assert_close(out, torch.softmax(scores, -1) @ v, atol=3e-6, rtol=1e-5)


def test_every_query_attends_its_own_chunk_and_one_more():
    grid = TokenGrid(4, 8, 8)
    q, k = (torch.randn(1, 2, grid.num_tokens, 16) for _ in range(2))
    chunks = torch.arange(grid.num_tokens) // 64  # four chunks of one frame
    picked = select_chunks(q, k, chunks, 4, threshold=0.01)[0]
    own = torch.nn.functional.one_hot(chunks, 4).bool()
    assert bool(picked[:, own].all()) and bool((picked.sum(-1) >= 2).all())
    assert bool(select_chunks(q, k, chunks, 4, threshold=1.0).all())  # the whole share: every chunk


def test_layers_cycle_the_partitions_and_chunks_are_the_published_ones():
    grid = TokenGrid(21, 30, 52)
    options = VmobaOptions()
    assert [options.partition(i) for i in range(4)] == ["1d", "2d", "3d", "1d"]
    assert [chunk_shape(grid, 128, options, i) for i in range(3)] == [(2, 30, 52), (21, 3, 4), (4, 6, 4)]
    layout_order = fastdit.methods.layout_order(fastdit.methods.get_method("vmoba"), grid, 128, options, layer=1)
    assert layout_order.kind == "chunks" and layout_order.chunk == (21, 3, 4)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_block_union_is_the_union_of_each_query_blocks_chunks(layer):
    """The fastdit variant: a block row holds every pair its real queries chose, and padded positions (the
    4x8x11 grid's 352 tokens leave half of the last 64-token block padding) add nothing."""
    grid = TokenGrid(4, 8, 11)
    options = {"chunk_1d": 1, "chunk_2d": (4, 4), "chunk_3d": (2, 4, 6), "threshold": 0.3}
    # every query looks along one direction, which only the first chunk's keys share: each real query picks
    # its own chunk and the first, while a padded one would pick every chunk
    spec = fastdit.methods.get_method("vmoba")
    first = fastdit.methods.layout_order(spec, grid, 64, VmobaOptions(**options), layer=layer).chunk_of_token == 0
    direction = torch.randn(16)
    q = direction + 0.1 * torch.randn(2, 2, grid.num_tokens, 16)
    k = 0.1 * torch.randn(2, 2, grid.num_tokens, 16) + 3 * direction * first.view(-1, 1)
    layout = fastdit.build_layout("vmoba", grid, block_size=64, q=q, k=k, layer=layer, selection="block_union",
                                  **options)
    assert layout.selection is None and layout.order.padding_fraction > 0
    order = layout.order
    chunk_ids = torch.full((order.video_len,), -1, dtype=torch.int64)
    chunk_ids[order.video_destination] = order.chunk_of_token
    picked = select_chunks(order.to_order(q), order.to_order(k), chunk_ids, int(order.chunk_of_token.max()) + 1,
                           0.3).any(0)  # [H, S, C], union over the batch
    picked[:, chunk_ids < 0] = False
    expected = torch.zeros_like(layout.to_dense_block_mask())
    for h in range(2):
        for pos, c in picked[h].nonzero().tolist():  # each real query's chosen chunks, in its block's row
            keys = order.video_destination[order.chunk_of_token == c] // 64
            expected[h, pos // 64, keys] = True
    assert torch.equal(layout.to_dense_block_mask(), expected)


def test_padded_positions_never_select():
    """105 tokens in 16-token blocks: the last block holds 7 padded positions, which must add no key block."""
    grid = TokenGrid(3, 5, 7)
    q, k = (torch.randn(1, 2, grid.num_tokens, 16) for _ in range(2))
    layout = fastdit.build_layout("vmoba", grid, block_size=16, q=q, k=k, layer=2, chunk_3d=(1, 5, 7),
                                  threshold=0.3)
    order = layout.order
    assert order.video_len > grid.num_tokens
    chunk_ids = torch.full((order.video_len,), -1, dtype=torch.int64)
    chunk_ids[order.video_destination] = order.chunk_of_token
    picked = select_chunks(order.to_order(q), order.to_order(k), chunk_ids, 3, 0.3)[0]  # [H, S, C]
    assert not bool(picked[:, chunk_ids < 0].any())
    touches = torch.zeros(3, order.video_blocks, dtype=torch.bool)
    touches[order.chunk_of_token, order.video_destination // 16] = True
    per_block = picked.view(2, -1, 16, 3).any(2).float()  # the union over each block's real queries
    assert torch.equal(layout.to_dense_block_mask(), torch.matmul(per_block, touches.float()) > 0)


def test_lower_thresholds_keep_fewer_pairs():
    grid = TokenGrid(8, 12, 16)
    q, k = (torch.randn(1, 2, grid.num_tokens, 32) for _ in range(2))
    kept = [fastdit.build_layout("vmoba", grid, block_size=32, q=q, k=k, layer=1, threshold=t).density()
            for t in (0.9, 0.5, 0.25)]
    assert kept[0] >= kept[1] >= kept[2] and kept[0] > kept[2]


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"chunk_1d": 0}, "chunk_1d"),
    ({"chunk_2d": (2,)}, "chunk_2d"),
    ({"chunk_3d": (1, 1, 1.5)}, "chunk_3d"),
    ({"partitions": ("1d", "4d")}, "partitions"),
    ({"selection": "blocks"}, "selection"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        VmobaOptions(**options)


def test_take_until_equals_a_full_stable_sort():
    """The cut-off from top-k values sized on sampled rows equals a full stable descending sort's, for rows
    that need more entries than any sampled row (redone at a larger k), rows that never reach their share
    (all taken) and ties (lower index first)."""
    from fastdit.methods.vmoba import _take_until

    g = torch.Generator().manual_seed(0)
    others = (torch.rand(2, 300, 40, generator=g) * 6).floor() / 6  # values in sixths: many ties
    total = others.sum(-1, keepdim=True) + 1e-6
    remain = torch.rand(2, 300, 1, generator=g) * 0.2
    probe = set(torch.linspace(0, 599, 64).long().tolist())
    far = [r for r in range(600) if r not in probe][::9]
    remain.view(-1)[far] = 0.97  # unsampled rows needing nearly every entry
    remain.view(-1)[far[:3]] = 2.0  # never reached
    order = torch.sort(others, dim=-1, descending=True, stable=True).indices
    reached = others.gather(-1, order).cumsum(-1) / total >= remain
    cutoff = torch.where(reached.any(-1), reached.float().argmax(-1), others.shape[-1] - 1)
    expected = torch.zeros_like(others, dtype=torch.bool).scatter_(
        -1, order, torch.arange(others.shape[-1]) <= cutoff.unsqueeze(-1))
    got = _take_until(others, remain, total)
    assert torch.equal(got, expected)
    assert bool(got.view(-1, 40)[far[:3]].all()) and int(got.view(-1, 40)[far[3:]].sum(-1).min()) > 20
