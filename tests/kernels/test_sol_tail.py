"""Sol-Attn's pooled tail in the backends: the Triton kernel (CPU interpreter) plus the merge equals the torch
reference, the torch backend trains through it, the Triton backward refuses it, and a dense restatement of the
official formula agrees (the official outputs themselves are checked in tests/methods/test_sol.py)."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit import TokenGrid

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(tau: float = 0.5, text: int = 0, seed: int = 0, grad: bool = False):
    grid = TokenGrid(2, 8, 14, text_tokens=text)  # 224 video tokens: a partly padded last 64-token block
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(grid.num_tokens).float().view(1, 1, -1, 1)
    smooth = torch.sin(pos / 9 * torch.arange(1, 17))  # nearby tokens alike, so routing is not trivial
    q, k = (smooth + 0.5 * torch.randn(1, 2, grid.num_tokens, 16, generator=g) for _ in range(2))
    v = torch.randn(1, 2, grid.num_tokens, 16, generator=g)
    layout = fastdit.build_layout("sol", grid, q=q, k=k, tau=tau)
    ordered = [layout.to_layout_order(x).to(DEVICE).requires_grad_(grad) for x in (q, k, v)]
    return layout, ordered


def _dense_sol(q, k, v, layout, scale):
    """The official formula at token level: exact scores on centred keys where the block is listed, one pooled
    term per unlisted block (centroid score, log of its token count), one softmax over both."""
    block, valid = layout.block_q, layout.order.valid.to(q.device)
    n = layout.n_q_blocks
    live = valid.float().view(1, 1, -1, 1)
    count = valid.view(n, block).sum(-1).float()
    mean = lambda x: (x * live).view(*x.shape[:2], n, block, -1).sum(3) / count.view(-1, 1)  # noqa: E731
    kc, qc, vc = mean(k), mean(q), mean(v)
    k_mean = kc.mean(2, keepdim=True)
    listed = layout.to_dense_block_mask().to(q.device)  # [1, n, n]
    listed_tok = listed.repeat_interleave(block, 1).repeat_interleave(block, 2)
    exact = (q @ (k - k_mean).transpose(-1, -2)) * scale
    exact = exact.masked_fill(~(listed_tok & valid.view(1, 1, -1)), float("-inf"))
    pooled = (qc @ (kc - k_mean).transpose(-1, -2)) * scale + count.log()
    pooled = pooled.masked_fill(listed, float("-inf")).repeat_interleave(block, 2)
    p = torch.softmax(torch.cat([exact, pooled], -1), -1)
    return p[..., :exact.shape[-1]] @ v + p[..., exact.shape[-1]:] @ vc


@pytest.mark.parametrize("text", [0, 21])
def test_torch_backend_is_the_official_formula(text):
    layout, (q, k, v) = _case(text=text)
    assert 0 < layout.density() < 1
    out = fastdit.attention(q, k, v, layout, backend="torch")
    ref = _dense_sol(q, k, v, layout, 16 ** -0.5)
    rows = layout.order.valid.to(DEVICE)
    assert float((out - ref)[:, :, rows].norm() / ref[:, :, rows].norm()) < 1e-5


def test_torch_backend_trains_through_the_tail():
    layout, (q, k, v) = _case(grad=True)
    rows = layout.order.valid.to(DEVICE)
    fastdit.attention(q, k, v, layout, backend="torch")[:, :, rows].square().sum().backward()
    mine = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    _dense_sol(q, k, v, layout, 16 ** -0.5)[:, :, rows].square().sum().backward()
    for got, want in zip(mine, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("text", [0, 21])
def test_triton_matches_torch_with_the_tail(text):
    pytest.importorskip("triton")
    layout, (q, k, v) = _case(text=text, seed=1)
    out, lse = fastdit.attention(q, k, v, layout, backend="triton", return_lse=True)
    ref, ref_lse = fastdit.attention(q, k, v, layout, backend="torch", return_lse=True)
    rows = layout.order.valid.to(DEVICE)
    torch.testing.assert_close(out[:, :, rows], ref[:, :, rows], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse[:, :, rows], ref_lse[:, :, rows], atol=1e-4, rtol=1e-4)


def test_triton_backward_refuses_the_tail():
    pytest.importorskip("triton")
    layout, (q, k, v) = _case(grad=True)
    with pytest.raises(ValueError, match="log-sum-exp's gradient"):
        fastdit.attention(q, k, v, layout, backend="triton")


def test_ring_chunks_are_refused():
    layout, _ = _case()
    with pytest.raises(ValueError, match="ring attention"):
        layout.block_slice(range(0, layout.n_q_blocks), range(0, 2))
