"""The engine's handling of model masks: key padding of text tokens runs sparse and stays masked per sample."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from fastdit.layout.grid import TokenGrid
from fastdit.methods import build_layout
from fastdit.runtime.config import SparseConfig
from fastdit.runtime.context import RunContext
from fastdit.runtime.engine import SparseAttention, key_padding

GRID = TokenGrid(2, 8, 8)
TEXT = 5
TILE = (1, 4, 4)  # grat groups of one 16-token block: the 2 x 8 x 8 grid has eight


def _engine(method: str, grid: TokenGrid = GRID) -> SparseAttention:
    context = RunContext()
    context.grid = grid
    return SparseAttention(SparseConfig.create(method, {}, block_size=16, tile=TILE if method == "grat" else None),
                           context)


def _qkv(batch: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, tokens, 8, generator=g) for _ in range(3)]


def _text_mask(valid: list[int]) -> torch.Tensor:
    """HunyuanVideo-style ``[B, 1, 1, S]`` bool mask: video and the first ``valid[i]`` text tokens kept."""
    keep = torch.arange(TEXT) < torch.tensor(valid)[:, None]
    return torch.cat([torch.ones(len(valid), GRID.video_tokens, dtype=torch.bool), keep], 1)[:, None, None, :]


def test_key_padding_reads_bool_and_additive_key_masks_only():
    keys = torch.tensor([[True, True, False], [True, False, False]])
    assert torch.equal(key_padding(keys[:, None, None, :], 3), keys)
    assert torch.equal(key_padding(keys[:, None, None, :].expand(2, 4, 6, 3), 3), keys)  # same for heads, queries
    additive = torch.zeros(2, 1, 1, 3).masked_fill(~keys[:, None, None, :], float("-inf"))
    assert torch.equal(key_padding(additive, 3), keys)
    assert torch.equal(key_padding(additive.clamp(min=torch.finfo(torch.float32).min), 3), keys)
    assert key_padding(additive.clamp(min=-10000.0), 3) is None  # a finite bias is not a padding mask
    per_query = keys[:, None, None, :].repeat(1, 1, 2, 1)
    per_query[0, 0, 1, 0] = False
    assert key_padding(per_query, 3) is None
    assert key_padding(keys[:, None, None, :], 4) is None


def test_dense_method_passes_the_mask_to_sdpa_unchanged():
    q, k, v = _qkv(2, GRID.video_tokens + TEXT)
    mask = _text_mask([3, 5])
    out = _engine("dense")(q, k, v, layer=0, model="m", text_tokens=TEXT, attn_mask=mask)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def _reference(q, k, v, valid: list[int]) -> torch.Tensor:
    """Block-sparse attention written out token by token: the layout's block mask, expanded, with padding."""
    layout = build_layout("grat", TokenGrid(GRID.t, GRID.h, GRID.w, text_tokens=TEXT), block_size=16, tile=TILE)
    tiling = layout.order
    blocks = layout.to_dense_block_mask()[0]
    allowed = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)  # the layout's order, tokens
    outs = []
    for i, n in enumerate(valid):
        keys = torch.zeros(tiling.seq_len, dtype=torch.bool)
        keys[tiling.destination] = _text_mask([n])[0, 0, 0]
        qt, kt, vt = (tiling.to_order(x[i:i + 1]) for x in (q, k, v))
        outs.append(tiling.from_order(F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed & keys)))
    return torch.cat(outs)


def test_padded_text_keys_stay_masked_per_sample_on_the_sparse_path():
    valid = [5, 2, 2, 1]  # samples 1 and 2 share a pattern; sample 0 has no padding
    q, k, v = _qkv(len(valid), GRID.video_tokens + TEXT, seed=1)
    engine = _engine("grat")
    out = engine(q, k, v, layer=0, model="m", text_tokens=TEXT, attn_mask=_text_mask(valid))
    record = engine.context.stats.records[-1]
    assert not record.dense and record.density < 1
    torch.testing.assert_close(out, _reference(q, k, v, valid), atol=1e-5, rtol=0)
    # and the padding mattered: ignoring it gives another result
    unmasked = engine(q, k, v, layer=0, model="m", text_tokens=TEXT)
    assert (out[1:] - unmasked[1:]).abs().max() > 1e-3


def test_return_lse_gives_the_log_sum_exp_of_each_sparse_row_and_none_for_a_dense_call():
    """What a caller merging keys of its own needs (side keys): each row's log-sum-exp over the keys the layout
    and the key padding keep, beside the same output as without it; a dense call has none to give."""
    valid = [5, 2]
    q, k, v = _qkv(len(valid), GRID.video_tokens + TEXT, seed=2)
    engine = _engine("grat")
    call = dict(layer=0, model="m", text_tokens=TEXT, attn_mask=_text_mask(valid))
    out, lse = engine(q, k, v, return_lse=True, **call)
    layout = engine.context.stats.last_layout
    torch.testing.assert_close(out, engine(q, k, v, **call), atol=1e-6, rtol=0)
    blocks = layout.to_dense_block_mask()[0].repeat_interleave(16, 0).repeat_interleave(16, 1)
    destination = layout.order.destination
    kept = blocks[destination][:, destination] & _text_mask(valid)[:, 0]
    assert 0 < kept.float().mean() < 1
    scores = (q @ k.transpose(-1, -2) * 8**-0.5).masked_fill(~kept[:, None], -torch.inf)
    torch.testing.assert_close(lse, scores.logsumexp(-1), atol=1e-5, rtol=0)
    dense = _engine("dense")
    out, lse = dense(q, k, v, return_lse=True, **call)
    assert lse is None and torch.equal(out, dense(q, k, v, **call))


def _segment_mask(keys: torch.Tensor) -> torch.Tensor:
    """Ideogram 4's ``[B, 1, S, S]`` segment mask over ``keys [B, S]``: kept tokens attend the kept ones, padding
    tokens each other."""
    return (keys[:, :, None] == keys[:, None, :])[:, None]


def test_a_mask_that_keeps_padding_queries_apart_is_key_padding():
    keys = _text_mask([5, 2])[:, 0, 0]
    video = slice(0, GRID.video_tokens)
    assert torch.equal(key_padding(_segment_mask(keys), keys.shape[1], video), keys)
    both_ways = (keys[:, :, None] & keys[:, None, :])[:, None]  # HunyuanVideo-1.5: padding queries see nothing
    assert torch.equal(key_padding(both_ways, keys.shape[1]), keys)
    assert torch.equal(key_padding(both_ways, keys.shape[1], video), keys)
    # without the video's place, the kept keys of a segment mask are unknown (padding is attended too)
    assert key_padding(_segment_mask(keys), keys.shape[1]) is None
    leaky = _segment_mask(keys)
    leaky[1, 0, 3, -1] = True  # a video query sees a padding key
    assert key_padding(leaky, keys.shape[1], video) is None
    partial = _segment_mask(keys)
    partial[0, 0, 3, 7] = False  # a video query misses a kept key
    assert key_padding(partial, keys.shape[1], video) is None


def test_a_segment_mask_runs_sparse_and_kept_queries_are_exact():
    valid = [5, 2]
    q, k, v = _qkv(len(valid), GRID.video_tokens + TEXT, seed=2)
    keys = _text_mask(valid)[:, 0, 0]
    engine = _engine("grat")
    out = engine(q, k, v, layer=0, model="m", text_tokens=TEXT, attn_mask=_segment_mask(keys))
    record = engine.context.stats.records[-1]
    assert not record.dense and record.density < 1
    reference = _reference(q, k, v, valid)
    for i in range(len(valid)):
        torch.testing.assert_close(out[i][:, keys[i]], reference[i][:, keys[i]], atol=1e-5, rtol=0)


def test_a_mask_on_video_tokens_runs_dense_with_a_warning():
    q, k, v = _qkv(1, GRID.video_tokens + TEXT)
    mask = _text_mask([5])
    mask[..., 3] = False  # hides a video key
    engine = _engine("grat")
    with pytest.warns(UserWarning, match="hides video tokens"):
        out = engine(q, k, v, layer=0, model="m", text_tokens=TEXT, attn_mask=mask)
    assert engine.context.stats.records[-1].reason == "attention mask"
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_a_per_call_grid_scales_the_training_token_count():
    context = RunContext()
    context.grid = TokenGrid(1, 32, 32)
    engine = SparseAttention(SparseConfig.create("dense", {}, entropy_scaling=True, n_train=256), context)
    seen = []
    scale = engine.scale
    engine.scale = lambda *args: seen.append(scale(*args)) or seen[-1]
    q, k, v = _qkv(1, 16 * 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine(q, k, v, layer=0, model="m", grid=TokenGrid(1, 16, 16))
    # the level has 1/4 of the input's tokens, so its training count is 256 / 4 = 64: factor sqrt(log 256 / log 64)
    assert seen == [pytest.approx(8**-0.5 * (torch.tensor(256.0).log() / torch.tensor(64.0).log()).sqrt().item())]


def test_a_warning_shows_once_per_process_not_once_per_patch(monkeypatch):
    import fastdit
    import fastdit.runtime.engine
    from fastdit.dummy.wan import dummy_wan_transformer

    monkeypatch.setattr(fastdit.runtime.engine, "_WARNED", set())
    model = dummy_wan_transformer(num_layers=1)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 1, 16, 16, generator=g), torch.tensor([500]), torch.randn(1, 7, 32, generator=g))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # as the app and `compare` do: patch, run, restore, for every request
            fastdit.apply(model, method="radial", preset=None, block_size=16)  # one frame: nothing to drop
            with torch.no_grad():
                model(*inputs)
            fastdit.remove(model)
    assert len([w for w in caught if "keeps every block" in str(w.message)]) == 1


@pytest.mark.parametrize("method", ["grat", "radial", "pyramid"])
@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("masked", [False, True])
def test_text_keys_without_queries_give_the_video_rows_of_the_joint_call(method, position, masked):
    """A call whose text is keys only (``q`` the video's rows, ``k, v`` the joint sequence: a KV cache) runs
    only the video's query blocks, and gives exactly the video rows of the joint call whose text queries are
    zero rows (what the generic path ran before), dynamic methods' layouts included; the observer sees that
    joint call's queries."""
    text = 3 * GRID.video_tokens  # more keys than queries: the case where padded rows cost more than dense
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 2, n, 8, generator=g) for n in (GRID.video_tokens, *(2 * [GRID.video_tokens + text])))
    video = slice(text, None) if position == "before" else slice(0, GRID.video_tokens)
    joint = torch.zeros_like(k)
    joint[:, :, video] = q
    mask = None
    if masked:  # samples with padded text keys, as a [B, 1, 1, S] key mask
        mask = torch.ones(3, 1, 1, k.shape[2], dtype=torch.bool)
        text_keys = torch.ones(k.shape[2], dtype=torch.bool)
        text_keys[video] = False
        mask[1:, ..., text_keys & (torch.arange(k.shape[2]) % 7 == 0)] = False
    engine = SparseAttention(SparseConfig.create(method, {}, block_size=16,
                                                 tile=TILE if method == "grat" else None), RunContext())
    engine.context.grid = GRID
    seen = []
    engine.observer = seen.append
    call = dict(layer=0, model="m", text_tokens=text, text_position=position, attn_mask=mask)
    out = engine(q, k, v, **call)
    expected = engine(joint, k, v, **call)[:, :, video]
    assert [r.dense for r in engine.context.stats.records] == [False] and out.shape == q.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert torch.equal(seen[0].q, joint) and torch.equal(seen[0].k, seen[1].k)
