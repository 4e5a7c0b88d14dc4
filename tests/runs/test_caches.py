"""Sparse attention composed with every diffusers cache kind on the tiny Wan pipeline, in both orders (and a
block cache and an attention cache on Qwen-Image and Kandinsky 5, generic-path families, in a bare loop).

Per kind: fastdit's dense path under the cache reproduces the cache alone exactly, whichever of
``enable_cache`` and ``fastdit.apply`` comes first; with a sparse method, ``stats`` accounts for every layer
call of every denoiser forward, as computed or as served by the cache; ``remove`` and ``disable_cache``
restore the stock output.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_pipeline
from fastdit.runs.caches import CACHE_KINDS, CacheSpec, cache_config
from fastdit.runtime.engine import SparseAttention

hooks = pytest.importorskip("diffusers.hooks")

STEPS = 6
CALL = dict(prompt="a red ball", negative_prompt="blurry", height=128, width=128, num_frames=17,
            num_inference_steps=STEPS, max_sequence_length=16, output_type="latent")
SPARSE = dict(method="radial", preset=None, block_size=16, dense_steps=0, decay_factor=0.5)


# every cache kind diffusers has, by its config class (diffusers >= 0.35 is supported: older ones lack some)
KINDS = {"fbcache": "FirstBlockCacheConfig", "fastercache": "FasterCacheConfig", "magcache": "MagCacheConfig",
         "pab": "PyramidAttentionBroadcastConfig", "seacache": "SeaCacheConfig", "taylorseer": "TaylorSeerCacheConfig",
         "textkv": "TextKVCacheConfig"}


def _configs(pipe, kind: str) -> tuple[Callable[[], Any], dict[str, Any], bool]:
    """(config factory, call overrides, whether it skips self-attention work on this model) of ``kind``, set so
    that it does skip some on a 6-step toy run."""
    if not hasattr(hooks, KINDS[kind]):
        pytest.skip(f"this diffusers has no {KINDS[kind]}")
    timestep = lambda: pipe.current_timestep  # noqa: E731
    return {
        "fbcache": (lambda: hooks.FirstBlockCacheConfig(threshold=0.5), {}, True),
        # FasterCache needs the conditional and unconditional passes in one batch, which Wan's pipeline doesn't
        # do, so it runs guidance-distilled here (no unconditional pass)
        "fastercache": (lambda: hooks.FasterCacheConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000),
            current_timestep_callback=timestep, attention_weight_callback=lambda _: 0.5,
            is_guidance_distilled=True), {"guidance_scale": 1.0}, True),
        "magcache": (lambda: hooks.MagCacheConfig(mag_ratios=[1.0] * STEPS, threshold=0.5,
                                                  num_inference_steps=STEPS), {}, True),
        "pab": (lambda: hooks.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000),
            current_timestep_callback=timestep), {}, True),
        "seacache": (lambda: hooks.SeaCacheConfig(threshold=5.0), {}, True),
        "taylorseer": (lambda: hooks.TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1,
                                                           use_lite_mode=True), {}, True),
        "textkv": (lambda: hooks.TextKVCacheConfig(), {}, False),  # lossless: caches cross-attention text K/V
    }[kind]


@pytest.fixture(scope="module")
def pipe():
    p = dummy_wan_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _run(pipe, overrides) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(0), **{**CALL, **overrides}).frames


def _cached(pipe, make, overrides) -> torch.Tensor:
    pipe.transformer.enable_cache(make())
    try:
        return _run(pipe, overrides)
    finally:
        pipe.transformer.disable_cache()


def test_every_cache_kind_of_this_diffusers_is_tested():
    config_classes = {name for name in dir(hooks) if name.endswith(("CacheConfig", "BroadcastConfig"))}
    assert config_classes <= set(KINDS.values())


@pytest.mark.parametrize("kind", KINDS)
def test_dense_under_a_cache_equals_the_cache_alone_in_both_orders(pipe, kind):
    make, overrides, skips = _configs(pipe, kind)
    stock = _run(pipe, overrides)
    alone = _cached(pipe, make, overrides)
    assert skips == (not torch.equal(alone, stock))  # the cache does skip work on this run (textkv: exact)

    pipe.transformer.enable_cache(make())  # cache first, then fastdit
    fastdit.apply(pipe, method="dense")
    try:
        cache_then_apply = _run(pipe, overrides)
    finally:
        fastdit.remove(pipe)
        pipe.transformer.disable_cache()
    fastdit.apply(pipe, method="dense")  # fastdit first, then the cache
    pipe.transformer.enable_cache(make())
    try:
        apply_then_cache = _run(pipe, overrides)
    finally:
        pipe.transformer.disable_cache()
        fastdit.remove(pipe)
    assert torch.equal(cache_then_apply, alone) and torch.equal(apply_then_cache, alone)
    assert torch.equal(_run(pipe, overrides), stock)


@pytest.mark.parametrize("kind", KINDS)
def test_stats_count_every_layer_call_as_computed_or_cached(pipe, kind, monkeypatch):
    make, overrides, skips = _configs(pipe, kind)
    attention_calls, forwards = [0], [0]
    engine_call = SparseAttention.__call__

    def counting(self, *args, **kwargs):
        attention_calls[0] += 1
        return engine_call(self, *args, **kwargs)

    monkeypatch.setattr(SparseAttention, "__call__", counting)
    counter = pipe.transformer.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))
    fastdit.apply(pipe, **SPARSE)
    pipe.transformer.enable_cache(make())
    try:
        _run(pipe, overrides)
        stats = fastdit.stats(pipe)
    finally:
        pipe.transformer.disable_cache()
        fastdit.remove(pipe)
        counter.remove()
    layers = len(pipe.transformer.blocks)
    assert sum(r.calls for r in stats.records) == attention_calls[0]
    assert sum(r.calls + r.cached for r in stats.records) == forwards[0] * layers
    assert stats.steps == STEPS and len(stats.records) == STEPS * layers
    assert (stats.cached_fraction() > 0) == skips
    assert stats.sparse_fraction() > 0 and stats.mean_density() < 1
    if skips:
        assert "served by a cache" in stats.summary()


def test_a_fully_cached_layer_step_reads_as_cached_with_no_work(pipe):
    make, overrides, _ = _configs(pipe, "fbcache")
    fastdit.apply(pipe, **SPARSE)
    pipe.transformer.enable_cache(make())
    try:
        _run(pipe, overrides)
        records = fastdit.stats(pipe).records
    finally:
        pipe.transformer.disable_cache()
        fastdit.remove(pipe)
    skipped = [r for r in records if r.reason == "cached"]
    assert skipped and all(r.calls == 0 and r.cached > 0 and r.work == 0 and not r.ran_sparse for r in skipped)
    assert all(r.layer > 0 for r in skipped)  # First Block Cache always runs the first block


def test_cache_specs_are_checked_before_anything_runs():
    assert set(CACHE_KINDS) <= {"fbcache", "pab", "taylorseer", "magcache", "seacache", "textkv"}
    assert cache_config(CacheSpec("fbcache", {"threshold": 0.2})).threshold == 0.2
    with pytest.raises(ValueError, match="unknown cache 'nope'"):
        cache_config(CacheSpec("nope"))
    with pytest.raises(ValueError, match="unknown option.*'thresh'.*allowed: threshold"):
        cache_config(CacheSpec("fbcache", {"thresh": 0.2}))
    with pytest.raises(ValueError, match="cache 'magcache': .*mag_ratios"):
        cache_config(CacheSpec("magcache"))


class _Loop:
    """A denoising loop over a bare transformer of ``tests/patching/conftest.py``'s ``CASES``, with
    ``current_timestep`` read by the timestep-aware caches as a pipeline's."""

    def __init__(self, family: str) -> None:
        from tests.patching.conftest import CASES

        self.case = CASES[family]
        self.transformer = self.case.build()
        self.current_timestep = None

    def run(self) -> torch.Tensor:
        outs = []
        with torch.no_grad():
            for t in torch.linspace(900, 100, STEPS):
                inputs = self.case.inputs(self.case.grids[0], 1)
                self.current_timestep = t
                with self.transformer.cache_context("cond"):
                    out = self.transformer(**dict(inputs, timestep=torch.full_like(inputs["timestep"], t)),
                                           return_dict=False)
                outs.append(out[0] if isinstance(out, tuple) else out)  # Kandinsky 5 returns its bare sample
        return torch.stack(outs)


# diffusers registers these families' blocks with its cache hooks (Kandinsky 5's blocks take `x`, which its
# First Block Cache hook can't read: "Parameter 'hidden_states' not found", without fastdit too)
@pytest.mark.parametrize("family, kind", [("qwen_image", "fbcache"), ("kandinsky5", "pab")])
def test_generic_path_families_under_a_cache(family, kind):
    loop = _Loop(family)
    make, _, _ = _configs(loop, kind)
    model = loop.transformer
    stock = loop.run()
    model.enable_cache(make())
    try:
        alone = loop.run()
    finally:
        model.disable_cache()
    assert not torch.equal(alone, stock)  # the cache skips work on this run
    for first in ("cache", "fastdit"):
        for step in ((lambda: model.enable_cache(make())), (lambda: fastdit.apply(model, method="dense")))[
                ::1 if first == "cache" else -1]:
            step()
        try:
            assert torch.equal(loop.run(), alone), first
        finally:
            model.disable_cache()
            fastdit.remove(model)
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, mode="surround", radius=0)
    model.enable_cache(make())
    try:
        loop.run()
        stats = fastdit.stats(model)
    finally:
        model.disable_cache()
        fastdit.remove(model)
    assert stats.steps == STEPS and stats.cached_fraction() > 0 and stats.sparse_fraction() > 0
    assert torch.equal(loop.run(), stock)
