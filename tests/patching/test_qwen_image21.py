"""Qwen-Image 2.1 as its pipeline runs it: a block-causal first step that fills the KV cache (not fastdit's: it runs
as stock), then cached steps whose target queries attend ``[cached prefix ; target]`` keys (fastdit's: sparse on
the target's grid, the prefix keys dense)."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.image import dummy_qwen_image21_transformer
from fastdit.layout.grid import TokenGrid

GRID = (1, 16, 16)
# the vision-language sequence: 3 prompt tokens, a 4 × 4 condition image's 4 slots, 4 prompt tokens (sample i's
# last 1 + i of them padding), then the target's slots; the joint sequence grows each slot to 2 × 2 tokens
PROMPT, SLOTS, CONDITION = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).bool(), 4, (1, 4, 4)
PREFIX = 3 + 16 + 4
STEPS = (1.0, 0.6, 0.3)  # timestep / 1000, falling, as the pipeline passes it


def _inputs(batch: int = 2) -> dict:
    _, h, w = GRID
    g, text = torch.Generator().manual_seed(0), PROMPT.numel()
    return dict(hidden_states=torch.randn(batch, 16 + h * w, 4, generator=g),
                encoder_hidden_states=torch.randn(batch, text, 16, generator=g),
                encoder_hidden_states_mask=torch.arange(text) < text - 1 - torch.arange(batch)[:, None],
                img_shapes=[[CONDITION, GRID]] * batch,
                img_mask=torch.cat([PROMPT, torch.ones(h * w // 4, dtype=torch.bool)]).expand(batch, -1))


def _generate(model, inputs: dict) -> tuple[list[torch.Tensor], object]:
    """The pipeline's loop: ``extract`` at the first step, ``cached`` after; the outputs and the filled cache."""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    cache = QwenImage21KVCache(len(model.transformer_blocks))
    batch = inputs["hidden_states"].shape[0]
    with torch.no_grad():
        outputs = [model(**inputs, timestep=torch.full((batch,), t), kv_cache=cache,
                         kv_cache_mode="cached" if i else "extract", return_dict=False)[0]
                   for i, t in enumerate(STEPS)]
    return outputs, cache


@pytest.mark.parametrize("processor", ["QwenImage21AttnProcessor", "QwenImage21FlexAttnProcessor"])
def test_the_prefill_runs_as_stock_and_the_cached_steps_run_sparse(processor):
    """With no dense warm-up step, the first step still runs exactly as stock (its block-causal calls dispatch to
    diffusers' own backend or flex, which fastdit doesn't take), and fills the same cache; the cached steps run
    sparse over the condition image's and the prompt's 23 cached keys and the target's 256."""
    from diffusers.models.transformers import transformer_qwenimage21

    model = dummy_qwen_image21_transformer()
    model.set_attn_processor(getattr(transformer_qwenimage21, processor)())
    inputs = _inputs()
    stock, stock_cache = _generate(model, inputs)
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, dense_layers=0,
                  mode="surround", radius=0)
    try:
        out, cache = _generate(model, inputs)
        grid = model._fastdit_state.context.grid
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert torch.equal(out[0], stock[0])
    for layer, stock_layer in zip(cache.layer_caches, stock_cache.layer_caches):
        assert torch.equal(layer.k, stock_layer.k) and torch.equal(layer.v, stock_layer.v)
    assert grid == TokenGrid(*GRID, text_tokens=PREFIX, text_position="before")
    assert all(r.calls == 0 for r in records if r.step == 0)  # the prefill never reached fastdit
    decode = [r for r in records if r.step > 0]
    assert len(decode) == 4 and all(not r.dense and 0 < r.density < 1 and r.tokens == PREFIX + 256 for r in decode)
    for sparse, dense in zip(out[1:], stock[1:]):
        assert 1e-4 < ((sparse - dense).norm() / dense.norm()).item() < 0.5


def test_every_target_query_of_a_sparse_step_reads_every_cached_prefix_key():
    """Change the last layer's cached value at one prefix position: on a sparse cached step every target token's
    output moves when that key is valid (the prefix stays dense), and none does when it is the prompt's padding
    (the key mask holds on the sparse path)."""
    model = dummy_qwen_image21_transformer()
    inputs = _inputs()
    _, cache = _generate(model, inputs)
    decode = dict(inputs, timestep=torch.full((2,), 0.5), kv_cache=cache, kv_cache_mode="cached", return_dict=False)
    valid = torch.ones(2, PREFIX, dtype=torch.bool)
    valid[:, 3 + 16:] = inputs["encoder_hidden_states_mask"][:, -4:]  # the prompt after the condition image
    last = cache.layer_caches[-1]
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, dense_layers=0,
                  mode="surround", radius=0)
    try:
        with torch.no_grad():
            base = model(**decode)[0]
            for position in range(PREFIX):
                saved = last.v
                last.v = saved.clone()
                last.v[:, position] += 1
                moved = (model(**decode)[0] != base).any(-1)  # [batch, target tokens]
                last.v = saved
                for sample in range(2):
                    assert bool(moved[sample].all() if valid[sample, position] else not moved[sample].any()), \
                        (position, sample)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert records and all(not r.dense and r.density < 1 for r in records)


def test_the_kernel_runs_only_the_target_query_blocks_over_the_prefix_keys(monkeypatch):
    """The cached prefix has keys and no queries: the kernel gets the target's 256 query rows (16 blocks) over
    the prefix's and the target's keys (2 + 16 blocks), no padded rows for the prefix."""
    import fastdit.runtime.engine as engine

    shapes, kernel = [], engine.attention
    monkeypatch.setattr(engine, "attention", lambda q, k, *args, **kwargs: shapes.append((q.shape[2], k.shape[2]))
                        or kernel(q, k, *args, **kwargs))
    model = dummy_qwen_image21_transformer()
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, dense_layers=0,
                  mode="surround", radius=0)
    try:
        _generate(model, _inputs())
    finally:
        fastdit.remove(model)
    assert shapes and set(shapes) == {(256, 16 * (2 + 16))}
