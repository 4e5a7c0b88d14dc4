"""Gradients through block-sparse attention: the torch reference and the Triton backward (run in Triton's CPU
interpreter here) against dense masked attention, and a patched model that trains."""

from __future__ import annotations

import math

import pytest
import torch

import fastdit
from fastdit import BlockLayout, TokenGrid
from fastdit.kernels.reference import torch_block_attention
from fastdit.layout.order import make_order

pytestmark = pytest.mark.usefixtures("one_thread")


def _layouts() -> dict[str, callable]:
    q, k = (torch.randn(1, 2, 6 * 7 * 9 + 5, 16) for _ in range(2))
    grid = TokenGrid(6, 7, 9, text_tokens=5)
    return {
        "radial-padded-text": lambda: fastdit.build_layout("radial", grid, block_size=16),
        "grat-groups-of-two-blocks": lambda: fastdit.build_layout("grat", TokenGrid(4, 8, 8), block_size=16,
                                                                  tile=(2, 4, 4)),
        "vmoba-union-per-head": lambda: fastdit.build_layout("vmoba", grid, block_size=16, q=q, k=k, layer=2,
                                                             chunk_3d=(2, 4, 4), selection="block_union"),
        "pyramid-level-0-per-head": lambda: fastdit.build_layout("pyramid", grid, block_size=16, q=q, k=k,
                                                                 levels=1, thresholds=(0.5, 0.5)),
        "random-per-head": _random_layout,
    }


def _random_layout() -> BlockLayout:
    order = make_order("tiles", TokenGrid(3, 6, 7, text_tokens=4), 16)
    mask = torch.rand(2, order.num_blocks, order.num_blocks, generator=torch.Generator().manual_seed(3)) < 0.3
    return BlockLayout.from_block_mask(mask | torch.eye(order.num_blocks, dtype=torch.bool), order)


LAYOUTS = _layouts()


def _dense_grads(q, k, v, layout: BlockLayout, grad_out: torch.Tensor):
    """fp64 gradients of softmax(q k^T scale + mask) v with the layout expanded to tokens (S x S: tests only)."""
    tokens = layout.to_dense_block_mask().repeat_interleave(layout.block_q, 1).repeat_interleave(layout.block_kv, 2)
    if layout.kv_valid is not None:
        tokens = tokens & layout.kv_valid
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    s = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~tokens.unsqueeze(0), -math.inf)
    out = s.softmax(-1).nan_to_num(0.0) @ v
    return torch.autograd.grad((out * grad_out.double()).sum(), (q, k, v))


def _check(layout: BlockLayout, backend: str, dtype=torch.float32, atol=1e-5):
    q, k, v = (torch.randn(2, 2, layout.seq_len_q, 16, dtype=dtype, requires_grad=True) for _ in range(3))
    out = fastdit.attention(q, k, v, layout, backend=backend)
    grad_out = torch.randn_like(out) * layout.order.valid.view(1, 1, -1, 1)  # padded queries are dropped
    mine = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    for name, got, want in zip("qkv", mine, _dense_grads(q, k, v, layout, grad_out)):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=atol, msg=f"d{name}")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_reference_gradients_match_dense_masked_attention(name):
    _check(LAYOUTS[name](), "torch")


@pytest.mark.parametrize("name", ["radial-padded-text", "vmoba-union-per-head", "random-per-head"])
def test_triton_backward_matches_dense_masked_attention(name):
    _check(LAYOUTS[name](), "triton")


def test_triton_backward_in_bf16():
    _check(LAYOUTS["grat-groups-of-two-blocks"](), "triton", dtype=torch.bfloat16, atol=3e-2)


def test_pooled_pyramid_levels_are_differentiable_in_the_reference():
    order = make_order("tiles", TokenGrid(2, 4, 8), 32, (1, 4, 8))  # two blocks of 32 tokens
    level = torch.tensor([[[0, 1], [2, 0]]])
    layout = BlockLayout.from_block_mask(torch.ones(1, 2, 2, dtype=torch.bool), order, level)
    q, k, v = (torch.randn(1, 1, order.seq_len, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: torch_block_attention(q, k, v, layout, 0.5), (q, k, v))


def test_triton_refuses_gradients_through_pooled_levels_with_a_clear_error():
    order = make_order("tiles", TokenGrid(2, 4, 8), 32, (1, 4, 8))
    layout = BlockLayout.from_block_mask(torch.ones(1, 2, 2, dtype=torch.bool), order, torch.tensor([[[0, 1], [1, 0]]]))
    q, k, v = (torch.randn(1, 1, 64, 16, requires_grad=True) for _ in range(3))
    with pytest.raises(ValueError, match="Triton backward runs level-0 layouts only"):
        fastdit.attention(q, k, v, layout, backend="triton")
    with torch.no_grad():  # inference through the same layout is fine
        fastdit.attention(q, k, v, layout, backend="triton")


def test_a_patched_transformer_trains_with_gradient_checkpointing():
    from fastdit.dummy.wan import dummy_wan_transformer

    model = dummy_wan_transformer(num_layers=2).train()
    model.enable_gradient_checkpointing()
    fastdit.apply(model, method="radial", preset=None, block_size=16)
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 5, 8, 16, generator=g), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 7, 32, generator=g), return_dict=False)
    target = torch.randn(1, 16, 5, 8, 16, generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    try:
        losses = []
        for _ in range(3):
            loss = torch.nn.functional.mse_loss(model(**inputs)[0], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        records = fastdit.stats(model).records
        grad = model.blocks[1].attn1.to_q.weight.grad
    finally:
        fastdit.remove(model)
    assert any(not r.dense and r.density < 1 for r in records)  # the attention really ran sparse
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert losses[-1] < losses[0]
