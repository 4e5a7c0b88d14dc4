import torch

from fastdit import BlockLayout, TokenGrid
from fastdit.layout.order import make_order


def _random_layout(heads=3, seed=0):
    tiling = make_order("tiles", TokenGrid(3, 5, 6, text_tokens=3), 16)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(heads, tiling.num_blocks, tiling.num_blocks, generator=g) < 0.4
    mask |= torch.eye(tiling.num_blocks, dtype=torch.bool)
    return BlockLayout.from_block_mask(mask, tiling), mask


def test_csr_round_trips_the_block_mask():
    layout, mask = _random_layout()
    assert torch.equal(layout.to_dense_block_mask(), mask)
    assert layout.num_heads == 3 and layout.nnz == int(mask.sum())
    assert torch.equal(layout.row_counts(), mask.sum(-1))
    assert abs(layout.density() - mask.double().mean().item()) < 1e-12
    counts, idx = layout.padded_indices()
    for h in range(3):
        for i in range(layout.n_q_blocks):
            assert idx[h, i, : counts[h, i]].tolist() == mask[h, i].nonzero().flatten().tolist()


def test_padding_is_marked_invalid_for_keys():
    layout, _ = _random_layout()
    tiling = layout.order
    assert layout.kv_valid is not None and int(layout.kv_valid.sum()) == tiling.grid.num_tokens


def test_levels_count_as_fractional_work():
    tiling = make_order("tiles", TokenGrid(1, 4, 8), 16)
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    level = torch.tensor([[[0, 1], [2, 0]]])
    layout = BlockLayout.from_block_mask(mask, tiling, level)
    assert abs(layout.density() - (1 + 0.5 + 0.25 + 1) / 4) < 1e-9
    assert layout.max_level == 2
    assert torch.equal(layout.to_level_map(), level.to(torch.int8))


def test_layout_moves_model_order_tensors_to_tile_order_and_back():
    layout, _ = _random_layout()
    x = torch.randn(1, 2, layout.order.grid.num_tokens, 8)
    assert torch.equal(layout.from_layout_order(layout.to_layout_order(x)), x)
