"""Pipelines that share a transformer (``WanPipeline.from_pipe``): a patch belongs to the model, so every
pipeline holding it reports it, and ``remove`` through any of them restores it."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_pipeline

CALL = dict(prompt="a red ball", negative_prompt="blurry", height=128, width=128, num_frames=17,
            num_inference_steps=2, max_sequence_length=16, output_type="latent")


@pytest.fixture
def pipes():
    from diffusers import WanPipeline

    first = dummy_wan_pipeline()
    second = WanPipeline.from_pipe(first)
    for p in (first, second):
        p.set_progress_bar_config(disable=True)
    assert second.transformer is first.transformer
    yield first, second
    fastdit.remove(first)


def _run(pipe) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(0), **CALL).frames


def _method(pipe) -> str:
    return fastdit.patching.patch_config(pipe).method


def test_every_pipeline_sharing_the_model_reports_its_patch(pipes):
    first, second = pipes
    fastdit.apply(first, method="radial", preset=None, block_size=16)
    fastdit.apply(second, method="grat", preset=None, block_size=16, mode="surround", radius=0)
    assert fastdit.is_patched(first) and fastdit.is_patched(second)
    assert _method(first) == "grat"  # one model, one patch: the latest apply configures it for both
    _run(first)
    assert fastdit.stats(first) is fastdit.stats(second)
    assert {r.reason for r in fastdit.stats(first).records} == {"grat"}


def test_remove_through_either_pipeline_restores_the_shared_model(pipes):
    first, second = pipes
    stock = _run(first)
    fastdit.apply(first, method="radial", preset=None, block_size=16)
    fastdit.apply(second, method="grat", preset=None, block_size=16, mode="surround", radius=0)
    assert not torch.equal(_run(first), stock)
    fastdit.remove(first)  # not the pipeline the current patch was applied through
    assert not fastdit.is_patched(first) and not fastdit.is_patched(second)
    assert type(first.transformer.blocks[0].attn1.processor).__name__ == "WanAttnProcessor"
    assert "set_timesteps" not in vars(first.scheduler)
    assert torch.equal(_run(first), stock) and torch.equal(_run(second), stock)
    with pytest.raises(ValueError, match="not patched"):
        fastdit.stats(second)


def test_a_patch_through_the_bare_model_is_seen_from_the_pipeline(pipes):
    first, _ = pipes
    fastdit.apply(first.transformer, method="radial", preset=None, block_size=16)
    assert fastdit.is_patched(first)
    _run(first)
    assert fastdit.stats(first).steps == 2
    fastdit.remove(first)
    assert not fastdit.is_patched(first.transformer)
