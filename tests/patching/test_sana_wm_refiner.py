"""The Sana-WM refiner as its pipeline runs it: the active block's queries attend ``[sink ; history ; block]`` keys
from the KV cache (the cached keys dense to fastdit, the block's own sparse), on the grid of the block's RoPE call."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.video import dummy_sana_wm_refiner_transformer
from fastdit.layout.grid import TokenGrid

H = W = 8
SINK, HISTORY, BLOCK = [0], [1, 2], [3, 4]  # absolute latent frames: one sink frame, two of history, the block's two
PREFIX = (len(SINK) + len(HISTORY)) * H * W  # 192 cached keys before the block's 128
TEXT = 5
SPARSE = dict(method="grat", preset=None, block_size=16, dense_steps=0, dense_layers=0, mode="surround", radius=0)


def _latents(frames: list[int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, len(frames) * H * W, 4, generator=torch.Generator().manual_seed(frames[0]))


def _forward(model, frames: list[int], cache, mode: str | None, timestep: float) -> torch.Tensor:
    """One forward over ``frames`` as the pipeline makes it: the block's RoPE built right before."""
    rope = model.build_rotary_emb_for_absolute_positions(batch_size=2, frame_positions=frames, height=H, width=W,
                                                         device="cpu", fps=24.0)
    tokens = _latents(frames)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        return model(hidden_states=tokens, encoder_hidden_states=torch.randn(2, TEXT, 16, generator=g),
                     timestep=torch.full(tokens.shape[:2], timestep), video_rotary_emb=rope,
                     encoder_attention_mask=torch.ones(2, TEXT), kv_cache=cache, kv_cache_mode=mode,
                     return_dict=False)[0]


def _sink_rope(model) -> tuple[torch.Tensor, torch.Tensor]:
    return model.build_rotary_emb_for_absolute_positions(batch_size=2, frame_positions=SINK, height=H, width=W,
                                                         device="cpu", fps=24.0)


def _cache(model):
    """The sink's pre-RoPE keys and the history's post-RoPE keys, captured as the pipeline captures them."""
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMRefinerKVCache

    cache = SanaWMRefinerKVCache(len(model.transformer_blocks))
    _forward(model, SINK, cache, "capture_pre_rope", 0.0)
    for layer in cache.layer_caches:
        layer.store_sink(*layer.get_captured_pre_rope())
    cache.sink_pe = _sink_rope(model)
    _forward(model, HISTORY, cache, "inject_and_capture_post_rope", 0.0)
    for layer in cache.layer_caches:
        layer.store_history(*layer.get_captured_post_rope())
    return cache


def _denoise(model, cache) -> torch.Tensor:
    """A denoising step of the block: the sink's RoPE rebuilt first, then the block's, then the forward."""
    cache.sink_pe = _sink_rope(model)
    return _forward(model, BLOCK, cache, "inject", 900.0)


@pytest.fixture(scope="module")
def model():
    return dummy_sana_wm_refiner_transformer()


@pytest.fixture(scope="module")
def cache(model):
    return _cache(model)


def test_dense_is_stock_over_the_cached_keys(model, cache):
    stock = _denoise(model, cache)
    fastdit.apply(model, method="dense")
    try:
        dense = _denoise(model, cache)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    torch.testing.assert_close(dense, stock, atol=1e-6, rtol=0)
    assert records and all(r.dense and r.reason == "method" and r.tokens == PREFIX + 128 for r in records)


def test_the_block_runs_sparse_on_its_rope_grid_and_the_cached_keys_stay_dense(model, cache, monkeypatch):
    """The grid is the block's RoPE call's (the last before the forward, not the sink's); the kernel runs the
    block's 128 query rows (8 blocks) over the 192 cached keys (12 blocks) and the block's own."""
    import fastdit.runtime.engine as engine

    shapes, kernel = [], engine.attention
    monkeypatch.setattr(engine, "attention", lambda q, k, *args, **kwargs: shapes.append((q.shape[2], k.shape[2]))
                        or kernel(q, k, *args, **kwargs))
    dense = _denoise(model, cache)
    fastdit.apply(model, **SPARSE)
    try:
        out = _denoise(model, cache)
        grid = model._fastdit_state.context.grid
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert grid == TokenGrid(len(BLOCK), H, W)
    assert records and all(not r.dense and 0 < r.density < 1 and r.tokens == PREFIX + 128 for r in records)
    assert shapes and set(shapes) == {(128, PREFIX + 128)}
    assert 1e-4 < ((out - dense).norm() / dense.norm()).item() < 0.5


def test_every_block_query_reads_every_cached_key(model, cache):
    """Change the last layer's cached value at one sink or history position: on the sparse step every token of
    the block moves (the cached keys are dense to fastdit)."""
    last = cache.layer_caches[-1]
    fastdit.apply(model, **SPARSE)
    try:
        base = _denoise(model, cache)
        for name, position in (("sink_v", 0), ("sink_v", 63), ("history_v", 0), ("history_v", 127)):
            saved = getattr(last, name)
            setattr(last, name, saved.clone())
            getattr(last, name)[:, position] += 1
            moved = (_denoise(model, cache) != base).any(-1)
            setattr(last, name, saved)
            assert bool(moved.all()), (name, position)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert records and all(not r.dense for r in records)


def test_remove_gives_the_rope_method_back(model):
    method = "build_rotary_emb_for_absolute_positions"
    fastdit.apply(model, **SPARSE)
    try:
        assert getattr(model.__dict__.get(method), "_fastdit_wrapper", False)
    finally:
        fastdit.remove(model)
    assert method not in model.__dict__
    assert getattr(model, method).__func__ is getattr(type(model), method)
