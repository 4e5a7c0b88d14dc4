"""Layouts with a per-query selection (vmoba): the torch backend and flex compute exactly the selected token
pairs (outputs, log-sum-exp, gradients), by key slices merged as ring attention merges them; Triton refuses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import fastdit
from fastdit import TokenGrid
from fastdit.kernels.dispatch import attention
from fastdit.kernels.registry import backends
from fastdit.kernels.common import merge_partial

pytestmark = pytest.mark.usefixtures("one_thread")
SCALE = 0.25


def _vmoba(batch: int = 2, layer: int = 2, text: int = 20):
    """A vmoba layout on a grid with text and padding (260 tokens in 32-token blocks), and q, k, v in its order."""
    grid = TokenGrid(3, 8, 10, text_tokens=text)
    g = torch.Generator().manual_seed(layer)
    q, k, v = (torch.randn(batch, 2, grid.num_tokens, 16, generator=g) for _ in range(3))
    layout = fastdit.build_layout("vmoba", grid, block_size=32, q=q, k=k, layer=layer, chunk_3d=(2, 4, 4),
                                  chunk_2d=(4, 4), threshold=0.3)
    return layout, *(layout.to_layout_order(x) for x in (q, k, v))


def _masked_dense(q, k, v, layout):
    """Dense attention on the token pairs the selection keeps (``[B, H, S, S]`` scores: small grids only)."""
    sel = layout.selection
    keep = sel.select[:, :, :, sel.key_group.clamp(min=0)] & (sel.key_group >= 0)
    if layout.kv_valid is not None:
        keep = keep & layout.kv_valid
    s = (q @ k.transpose(-1, -2) * SCALE).masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1).nan_to_num(0.0) @ v, torch.logsumexp(s, -1)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_torch_runs_exactly_the_selected_pairs(layer):
    layout, q, k, v = _vmoba(layer=layer)
    assert layout.selection.select.shape[0] == 2  # each batch element keeps its own choices
    expected, expected_lse = _masked_dense(q, k, v, layout)
    out, lse = attention(q, k, v, layout, scale=SCALE, backend="torch", return_lse=True)
    real = layout.order.valid
    torch.testing.assert_close(out[:, :, real], expected[:, :, real], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse[:, :, real], expected_lse[:, :, real], atol=2e-6, rtol=1e-5)
    assert layout.density() < layout.to_dense_block_mask().float().mean()  # pairs, not the envelope's blocks


def test_padded_text_keys_are_dropped():
    layout, q, k, v = _vmoba()
    valid = layout.order.valid.clone()
    valid[layout.order.video_len + 15:] = False  # the last text tokens are padding of this call
    padded = dataclasses.replace(layout, kv_valid=valid)
    out = attention(q, k, v, padded, scale=SCALE, backend="torch")
    real = layout.order.valid
    torch.testing.assert_close(out[:, :, real], _masked_dense(q, k, v, padded)[0][:, :, real], atol=2e-6, rtol=1e-5)


def test_gradients_equal_dense_masked_attention():
    layout, q, k, v = _vmoba(batch=1)
    real = layout.order.valid.view(1, 1, -1, 1)
    weight = torch.randn_like(q) * real
    grads = []
    for run in (lambda a, b, c: attention(a, b, c, layout, scale=SCALE, backend="torch"),
                lambda a, b, c: _masked_dense(a, b, c, layout)[0]):
        inputs = [x.clone().requires_grad_() for x in (q, k, v)]
        (run(*inputs) * weight).sum().backward()
        grads.append([x.grad for x in inputs])
    for mine, expected in zip(*grads):
        torch.testing.assert_close(mine, expected, atol=2e-6, rtol=1e-5)


def test_flex_masks_the_same_pairs():
    layout, q, k, v = _vmoba()
    real = layout.order.valid
    out = attention(q, k, v, layout, scale=SCALE, backend="flex")
    torch.testing.assert_close(out[:, :, real], _masked_dense(q, k, v, layout)[0][:, :, real], atol=2e-6, rtol=1e-5)


def test_key_slices_merge_to_the_whole():
    """Ring attention runs a rank's rows on one key slice at a time and merges by log-sum-exp."""
    layout, q, k, v = _vmoba()
    n, bs = layout.n_q_blocks, layout.block_q
    rows = range(2, 7)
    queries = slice(rows.start * bs, rows.stop * bs)
    merged = None
    for cols in (range(0, 3), range(3, 8), range(8, n)):
        piece = layout.block_slice(rows, cols)
        keys = slice(cols.start * bs, cols.stop * bs)
        part = attention(q[:, :, queries], k[:, :, keys], v[:, :, keys], piece, scale=SCALE, backend="torch",
                         return_lse=True)
        merged = part if merged is None else merge_partial(*merged, *part)
    whole = attention(q, k, v, layout, scale=SCALE, backend="torch")[:, :, queries]
    real = layout.order.valid[queries]
    torch.testing.assert_close(merged[0][:, :, real], whole[:, :, real], atol=2e-6, rtol=1e-5)


def test_triton_refuses_in_one_line_and_a_batch_mismatch_is_an_error():
    layout, q, k, v = _vmoba()
    reason = backends()["triton"].why_not(q, k, v, layout)
    assert reason is not None and "per query" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="batch element"):
        attention(q[:1].expand(3, -1, -1, -1), k[:1].expand(3, -1, -1, -1), v[:1].expand(3, -1, -1, -1), layout,
                  backend="torch")


@pytest.mark.parametrize("short", [1 << 30, 0])  # groups merged in runs; each group alone
@pytest.mark.parametrize("budget", [1 << 30, 3000 * 16 * 4])  # one slice; slices that cut heads mid-way
def test_slices_and_buckets_compute_the_same_pairs(monkeypatch, budget, short):
    """Segments of every head batched by bucket, rows in slices (a slice boundary inside a head) and tiny
    tiles (many buckets), with and without merged groups: outputs, log-sum-exp and gradients equal dense
    attention on the selected pairs."""
    from fastdit.kernels import per_query

    monkeypatch.setattr(per_query, "CHUNK_BYTES", budget)
    monkeypatch.setattr(per_query, "SHORT_KEYS", short)
    monkeypatch.setattr(per_query, "QUANTUM", 4)
    layout, q, k, v = _vmoba(batch=2, layer=1)
    real = layout.order.valid
    weight = torch.randn_like(q) * real.view(1, 1, -1, 1)
    results = []
    for run in (lambda a, b, c: attention(a, b, c, layout, scale=SCALE, backend="torch", return_lse=True),
                lambda a, b, c: _masked_dense(a, b, c, layout)):
        inputs = [x.clone().requires_grad_() for x in (q, k, v)]
        out, lse = run(*inputs)
        (out * weight).sum().backward()
        results.append((out.detach(), lse.detach(), [x.grad for x in inputs]))
    (out, lse, grads), (want, want_lse, want_grads) = results
    torch.testing.assert_close(out[:, :, real], want[:, :, real], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse[:, :, real], want_lse[:, :, real], atol=2e-6, rtol=1e-5)
    for mine, expected in zip(grads, want_grads):
        torch.testing.assert_close(mine, expected, atol=2e-6, rtol=1e-5)
    with torch.no_grad():  # the flash path (no autograd) as well
        fast = attention(q, k, v, layout, scale=SCALE, backend="torch")
    torch.testing.assert_close(fast[:, :, real], want[:, :, real], atol=2e-6, rtol=1e-5)


def test_bucketed_padding_stays_under_an_eighth():
    from fastdit.kernels.per_query import QUANTUM, _bucketed

    counts = torch.arange(1, 40000)
    padded = _bucketed(counts)
    assert bool((padded >= counts).all()) and bool((padded % QUANTUM == 0).all())
    tiles = -(-counts // QUANTUM) * QUANTUM
    assert bool((padded <= tiles * 1.125).all())
    assert padded.unique().numel() < 100  # few distinct sizes: few batched calls


def test_groups_chosen_together_are_attended_as_one(monkeypatch):
    """A query's choices within a run of MERGE consecutive groups are one flash row over their keys end to
    end: at threshold 1 every query takes all 3 frame chunks and the text group (4 groups, one run), so each
    query is one row of one call over all keys, not four rows merged afterwards; the output stays exact."""
    from fastdit.kernels import per_query

    monkeypatch.setattr(per_query, "QUANTUM", 4)
    grid = TokenGrid(3, 8, 10, text_tokens=20)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, grid.num_tokens, 16, generator=g) for _ in range(3))
    layout = fastdit.build_layout("vmoba", grid, block_size=32, q=q, k=k, layer=0, chunk_1d=1, threshold=1.0)
    q, k, v = (layout.to_layout_order(x) for x in (q, k, v))
    real = layout.order.valid
    assert layout.selection.n_groups == 4 and bool(layout.selection.select[:, :, real].all())
    calls = []
    attend = per_query._attend_lse
    monkeypatch.setattr(per_query, "_attend_lse", lambda a, b, *rest: calls.append((a.shape, b.shape)) or
                        attend(a, b, *rest))
    with torch.no_grad():
        out = attention(q, k, v, layout, scale=SCALE, backend="torch")
    assert [key_shape[1] for _, key_shape in calls] == [int(real.sum())]  # one call, every key in one row
    assert sum(s[0] * s[1] for s, _ in calls) <= 2 * grid.num_tokens * 1.125  # 2 heads x queries, padding
    torch.testing.assert_close(out[:, :, real], _masked_dense(q, k, v, layout)[0][:, :, real], atol=2e-6,
                               rtol=1e-5)
