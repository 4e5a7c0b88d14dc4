"""A layout only runs on tensors in its own token order: one for another grid or block size can have the same
padded length, and the result would be silently wrong."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fastdit import TokenGrid, attention, build_layout


def _layouts():
    same_grid = build_layout("radial", TokenGrid(2, 8, 8), block_size=16)  # 128 tokens
    other_grid = build_layout("radial", TokenGrid(1, 8, 16), block_size=16)  # 128 tokens too
    other_block = build_layout("radial", TokenGrid(2, 8, 8), block_size=32)  # and again
    return same_grid, other_grid, other_block


def test_attention_refuses_tensors_moved_into_another_layouts_order():
    layout, other_grid, other_block = _layouts()
    x = layout.to_layout_order(torch.randn(1, 2, 128, 16, generator=torch.Generator().manual_seed(0)))
    assert attention(x, x, x, layout, order=layout.order).shape == x.shape
    for other in (other_grid, other_block):
        assert other.seq_len_q == layout.seq_len_q
        with pytest.raises(ValueError, match="build the layout for the tensors' grid"):
            attention(x, x, x, other, order=layout.order)


def test_a_layout_must_agree_with_its_own_order():
    layout, _, other_block = _layouts()
    with pytest.raises(ValueError, match="can't have 32x32-token blocks"):
        dataclasses.replace(other_block, order=layout.order)


@pytest.mark.parametrize("shape", [(0, 2, 128, 16), (1, 0, 128, 16), (1, 2, 128, 0)])
def test_an_empty_batch_head_or_head_dim_is_a_value_error(shape):
    layout = _layouts()[0]
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match="q, k, v must not be empty"):
        attention(x, x, x, layout)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), True])
def test_a_scale_that_is_not_a_finite_number_is_refused(scale):
    layout = _layouts()[0]
    x = torch.randn(1, 2, 128, 16)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        attention(x, x, x, layout, scale=scale)
