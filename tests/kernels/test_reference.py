"""The torch reference and flex backends against attention computed straight from the definition."""

import math

import pytest
import torch
import torch.nn.functional as F

import fastdit
from fastdit import BlockLayout, TokenGrid
from fastdit.kernels import select_backend
from fastdit.layout.order import make_order


def masked_attention(q, k, v, layout, scale=None):
    """softmax(q k^T * scale + mask) v with the layout expanded to tokens (tests only: S x S)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    blocks = layout.to_dense_block_mask()  # [Hl, nq, nk]
    tokens = blocks.repeat_interleave(layout.block_q, 1).repeat_interleave(layout.block_kv, 2)
    if layout.kv_valid is not None:
        tokens = tokens & layout.kv_valid
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~tokens.unsqueeze(0), -math.inf)
    return (s.softmax(-1) @ v.double()), torch.logsumexp(s, -1)


def _qkv(layout, B=2, H=3, D=16, dtype=torch.float32):
    return [torch.randn(B, H, layout.seq_len_q, D, dtype=dtype) for _ in range(3)]


LAYOUTS = {
    "radial-padded-text": lambda: fastdit.build_layout("radial", TokenGrid(6, 7, 9, text_tokens=5), block_size=16),
    "grat-crisscross": lambda: fastdit.build_layout("grat", TokenGrid(4, 8, 8), block_size=16),
    "grat-surround-image": lambda: fastdit.build_layout("grat", TokenGrid(1, 20, 12, text_tokens=9), block_size=16,
                                                        mode="surround"),
    "per-head-random": lambda: _per_head_layout(),
}


def _per_head_layout(heads=3):
    tiling = make_order("tiles", TokenGrid(3, 6, 7, text_tokens=4), 16)
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(heads, tiling.num_blocks, tiling.num_blocks, generator=g) < 0.3)
    mask |= torch.eye(tiling.num_blocks, dtype=torch.bool)
    return BlockLayout.from_block_mask(mask, tiling)


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("backend", ["torch", "flex"])
def test_backends_match_the_definition(name, backend):
    layout = LAYOUTS[name]()
    q, k, v = _qkv(layout)
    out = fastdit.attention(q, k, v, layout, backend=backend)
    ref, _ = masked_attention(q, k, v, layout)
    valid = layout.order.valid
    torch.testing.assert_close(out[:, :, valid].double(), ref[:, :, valid], atol=1e-5, rtol=1e-5)


def test_log_sum_exp_and_custom_scale():
    layout = LAYOUTS["radial-padded-text"]()
    q, k, v = _qkv(layout)
    out, lse = fastdit.attention(q, k, v, layout, scale=0.3, backend="torch", return_lse=True)
    ref, ref_lse = masked_attention(q, k, v, layout, scale=0.3)
    valid = layout.order.valid
    torch.testing.assert_close(out[:, :, valid].double(), ref[:, :, valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse[:, :, valid].double(), ref_lse[:, :, valid], atol=1e-4, rtol=1e-5)


def test_full_layout_equals_dense_sdpa_in_model_order():
    grid = TokenGrid(3, 5, 6, text_tokens=4)
    layout = fastdit.build_layout("dense", grid, block_size=16)
    q, k, v = (torch.randn(1, 2, grid.num_tokens, 32) for _ in range(3))
    out = fastdit.attention(*(layout.to_layout_order(x) for x in (q, k, v)), layout)
    torch.testing.assert_close(layout.from_layout_order(out), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_pyramid_levels_in_the_reference_stand_for_the_tokens_they_pool():
    """A block of identical keys and values pooled at any level gives exactly the full-resolution result."""
    tiling = make_order("tiles", TokenGrid(2, 4, 8), 16, (1, 4, 4))
    full = BlockLayout.from_block_mask(torch.ones(1, 4, 4, dtype=torch.bool), tiling)
    level = torch.tensor([[[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [4, 2, 1, 0]]])
    pooled = BlockLayout.from_block_mask(torch.ones(1, 4, 4, dtype=torch.bool), tiling, level)
    q = torch.randn(1, 2, 64, 8)
    k = torch.randn(1, 2, 4, 1, 8).expand(1, 2, 4, 16, 8).reshape(1, 2, 64, 8)
    v = torch.randn(1, 2, 4, 1, 8).expand(1, 2, 4, 16, 8).reshape(1, 2, 64, 8)
    torch.testing.assert_close(fastdit.attention(q, k, v, pooled), fastdit.attention(q, k, v, full),
                               atol=1e-5, rtol=1e-5)


def test_bf16_is_close_to_fp32():
    layout = LAYOUTS["grat-crisscross"]()
    q, k, v = _qkv(layout)
    out = fastdit.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), fastdit.attention(q, k, v, layout), atol=2e-2, rtol=2e-2)


def test_auto_picks_the_reference_on_cpu():
    layout = LAYOUTS["grat-crisscross"]()
    q, k, v = _qkv(layout)
    assert select_backend(q, k, v, layout).name == "torch"


@pytest.mark.parametrize("mutate,error,match", [
    (lambda q, k, v: (q[0], k, v), ValueError, r"q must be \[B, H, S, D\]"),
    (lambda q, k, v: (q, k.double(), v), ValueError, "share a dtype"),
    (lambda q, k, v: (q, k, v.to("meta")), ValueError, "one device"),
    (lambda q, k, v: (q, k[..., :8], v[..., :8]), ValueError, "shape mismatch"),
    (lambda q, k, v: (q[:, :, :-16], k[:, :, :-16], v[:, :, :-16]), ValueError, "to_layout_order"),
    (lambda q, k, v: (q.tolist(), k, v), TypeError, "torch.Tensor"),
])
def test_bad_inputs_name_the_problem(mutate, error, match):
    layout = LAYOUTS["grat-crisscross"]()
    q, k, v = _qkv(layout)
    with pytest.raises(error, match=match):
        fastdit.attention(*mutate(q, k, v), layout)


def test_unknown_backend_and_unsupported_inputs_are_named():
    layout = LAYOUTS["grat-crisscross"]()
    q, k, v = _qkv(layout)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        fastdit.attention(q, k, v, layout, backend="cuda")
    with pytest.raises(ValueError, match="layout has 3 heads but q has 2"):
        per_head = BlockLayout.from_block_mask(torch.ones(3, layout.n_q_blocks, layout.n_kv_blocks,
                                                          dtype=torch.bool), layout.order)
        fastdit.attention(q[:, :2], k[:, :2], v[:, :2], per_head)
    levels = BlockLayout.from_block_mask(torch.ones(1, 16, 16, dtype=torch.bool), layout.order,
                                         torch.ones(1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend 'flex' can't run these inputs: pyramid levels"):
        fastdit.attention(q, k, v, levels, backend="flex")
