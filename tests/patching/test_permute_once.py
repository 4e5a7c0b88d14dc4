"""Tokens permuted once per forward (issue 37): the same output as the per-call path, no per-call gathers in
``stats``, the per-call path where the order changes by layer or has padding between tokens, exact remove."""

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_pipeline, dummy_wan_transformer
from fastdit.patching.patch import set_observer
from fastdit.runtime.config import SparseConfig

SURROUND = {"mode": "surround", "radius": (1, 1, 1)}


@pytest.fixture(scope="module")
def transformer():
    return dummy_wan_transformer(num_layers=3)


def _inputs(frames, height, width, batch=2, per_token_timestep=False):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 16, frames, height, width, generator=g)
    tokens = frames * height * width // 4
    # Wan 2.2 TI2V passes one timestep per token: its blocks then get a per-token temb [B, S, 6, C]
    t = torch.rand(batch, tokens, generator=g) * 1000 if per_token_timestep else torch.full((batch,), 500.0)
    return x, t, torch.randn(batch, 7, 32, generator=g)


def _run(model, inputs, method, permute_once, **options):
    fastdit.apply(model, method=method, preset=None, block_size=16, permute_once=permute_once, **options)
    try:
        with torch.no_grad():
            out = model(*inputs, return_dict=False)[0]
        return out, fastdit.stats(model)
    finally:
        fastdit.remove(model)


@pytest.mark.parametrize("method,options,frames,height,width,per_token", [
    ("radial", {}, 5, 14, 18, False),  # raster: nothing moves; 315 tokens, padded at the end to 320
    ("grat", SURROUND, 8, 16, 24, False),  # tiles that divide the grid: a real permutation
    ("grat", SURROUND, 8, 16, 24, True),  # per-token timestep embedding permuted with the tokens
    ("pyramid", {}, 6, 12, 20, False),  # dynamic layout on a static (Gilbert) order
])
def test_permuted_once_equals_per_call_without_gathers(transformer, method, options, frames, height, width,
                                                        per_token):
    inputs = _inputs(frames, height, width, per_token_timestep=per_token)
    per_call, per_call_stats = _run(transformer, inputs, method, False, **options)
    once, once_stats = _run(transformer, inputs, method, True, **options)
    per_call_records, once_records = per_call_stats.records, once_stats.records
    torch.testing.assert_close(once, per_call, atol=1e-5, rtol=1e-5)
    assert all(r.gathered for r in per_call_records if not r.dense)
    assert [r.density for r in once_records] == [r.density for r in per_call_records]
    assert any(not r.dense for r in once_records) and not any(r.gathered for r in once_records)
    # the moves outside the attention calls are timed as overhead (raster: nothing moves)
    assert per_call_stats.once_s() == 0 and (once_stats.once_s() > 0) == (method != "radial")
    assert once_stats.overhead_s() == pytest.approx(once_stats.seconds("attention") - once_stats.seconds("kernel")
                                                     + once_stats.once_s())


@pytest.mark.parametrize("method,options,frames,height,width", [
    ("vmoba", {}, 8, 16, 24),  # its chunk order changes by layer
    ("grat", {**SURROUND, "tile": (1, 4, 4)}, 5, 14, 18),  # 7x9 tokens per frame in 4x4 tiles: padding between
])
def test_orders_it_cannot_hold_keep_the_per_call_path(transformer, method, options, frames, height, width):
    inputs = _inputs(frames, height, width)
    per_call, _ = _run(transformer, inputs, method, False, **options)
    once, stats = _run(transformer, inputs, method, True, **options)
    sparse = [r for r in stats.records if not r.dense]
    assert sparse and all(r.gathered for r in sparse) and stats.once_s() == 0
    assert torch.equal(once, per_call)


def test_dense_layers_and_observer(transformer):
    inputs = _inputs(8, 16, 24)
    per_call, _ = _run(transformer, inputs, "grat", False, dense_layers=1, **SURROUND)
    once, stats = _run(transformer, inputs, "grat", True, dense_layers=1, **SURROUND)
    torch.testing.assert_close(once, per_call, atol=1e-5, rtol=1e-5)  # dense SDPA on permuted tokens too
    assert stats.records[0].dense and not any(r.gathered for r in stats.records)
    seen = []
    fastdit.apply(transformer, method="grat", preset=None, block_size=16, permute_once=True, **SURROUND)
    set_observer(transformer, lambda call: seen.append(call.q))
    try:
        with torch.no_grad():
            transformer(*inputs, return_dict=False)
        records = fastdit.stats(transformer).records
    finally:
        fastdit.remove(transformer)
    # an observer (fastdit.calibrate) sees q in the model's order: the per-call path
    assert len(seen) == 3 and all(r.gathered for r in records)


def test_remove_restores_exactly(transformer):
    inputs = _inputs(8, 16, 24)
    hooks = [(len(b._forward_pre_hooks), len(b._forward_hooks)) for b in transformer.blocks]
    with torch.no_grad():
        before = transformer(*inputs, return_dict=False)[0]
    _run(transformer, inputs, "grat", True, **SURROUND)
    assert [(len(b._forward_pre_hooks), len(b._forward_hooks)) for b in transformer.blocks] == hooks
    with torch.no_grad():
        assert torch.equal(transformer(*inputs, return_dict=False)[0], before)


def test_permute_once_is_a_bool():
    with pytest.raises(TypeError, match="permute_once"):
        SparseConfig.create("radial", {}, permute_once="yes")
    assert SparseConfig.from_dict(SparseConfig.create("radial", {}, permute_once=True).to_dict()).permute_once is True


@pytest.mark.parametrize("kind", ["FirstBlockCacheConfig", "MagCacheConfig"])
def test_a_model_with_a_cache_keeps_the_per_call_path(kind):
    """A block cache keeps residuals across steps, and the dense warm-up's steps run in the model's order: mixing
    them with permuted tokens changed the output (by up to 10% of its range), so a hooked model runs per call."""
    hooks = pytest.importorskip("diffusers.hooks")
    if not hasattr(hooks, kind):
        pytest.skip(f"this diffusers has no {kind}")
    config = {"FirstBlockCacheConfig": lambda: hooks.FirstBlockCacheConfig(threshold=0.5),
              "MagCacheConfig": lambda: hooks.MagCacheConfig(mag_ratios=[1.0] * 6, threshold=0.5,
                                                             num_inference_steps=6)}[kind]
    pipe = dummy_wan_pipeline()
    outs = {}
    for once in (False, True):
        pipe.transformer.enable_cache(config())
        fastdit.apply(pipe, method="grat", preset=None, block_size=16, dense_steps=2, permute_once=once, **SURROUND)
        try:
            with torch.no_grad():
                outs[once] = pipe(prompt="a red ball", height=128, width=128, num_frames=17, num_inference_steps=6,
                                  max_sequence_length=16, output_type="latent",
                                  generator=torch.Generator().manual_seed(0)).frames
            stats = fastdit.stats(pipe)
        finally:
            fastdit.remove(pipe)
            pipe.transformer.disable_cache()
        assert stats.cached_fraction() > 0 and stats.once_s() == 0
        assert all(r.gathered for r in stats.records if r.ran_sparse)
    assert torch.equal(outs[True], outs[False])
