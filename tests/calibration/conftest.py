"""A tiny Wan pipeline whose one self-attention layer has a local head and a global head; generating with a
calibration applied, and checking that the run follows it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_pipeline

HEAD_DIM = 32
# 9 frames of 64x64: a 3x8x8 latent grid (patch 1x1x1), 12 blocks of 16 tokens
CALL = {"num_frames": 9, "height": 64, "width": 64, "num_inference_steps": 3, "guidance_scale": 1.0}
PROMPT = "a red ball bouncing in a white room"


def generate(pipe, call: dict[str, Any] = CALL, **overrides: Any):
    """One generation of ``PROMPT`` with ``call``'s arguments (and ``overrides``), latents out, seed 0."""
    return pipe(PROMPT, **{**call, **overrides}, output_type="latent", generator=torch.Generator().manual_seed(0))


def stats_with(pipe, calibration, call: dict[str, Any] = CALL):
    """The attention stats of one generation with ``calibration`` applied (the pipe is left unpatched)."""
    fastdit.apply(pipe, calibration=calibration)
    try:
        generate(pipe, call)
        return fastdit.stats(pipe)
    finally:
        fastdit.remove(pipe)


def check_follows(stats, calibration) -> None:
    """The run of ``stats`` followed ``calibration``: dense through its warm-up, then each layer's chosen method at
    exactly the density it recorded (static methods' densities don't depend on the data)."""
    chosen = {c.layer: c for c in calibration.layers}
    for record in stats.records:
        if record.step < calibration.dense_steps:
            assert record.dense and record.reason == "dense_steps"
        elif chosen[record.layer].method == "dense":
            assert record.dense
        else:
            assert not record.dense and record.reason == chosen[record.layer].method
            assert record.density == pytest.approx(chosen[record.layer].density, abs=1e-9)
    assert stats.mean_density() == pytest.approx(calibration.expected_density, abs=1e-9)


def make_local_global(pipe) -> None:
    """Head 0 attends locally, head 1 uniformly: constant queries and keys, so logits depend only on RoPE's
    relative position; head 0's are scaled up until attention is a sharp peak around the query's own
    position, head 1's are zero, so it attends every token alike."""
    for block in pipe.transformer.blocks:
        attn = block.attn1
        with torch.no_grad():
            for proj, norm in ((attn.to_q, attn.norm_q), (attn.to_k, attn.norm_k)):
                proj.weight.zero_()
                proj.bias.fill_(1.0)
                weight = torch.zeros_like(norm.weight)
                weight[:HEAD_DIM] = 8.0
                norm.weight.copy_(weight)


@pytest.fixture(scope="module")
def local_global_pipe():
    pipe = dummy_wan_pipeline(num_layers=2, head_dim=HEAD_DIM, patch_size=(1, 1, 1))
    make_local_global(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def random_pipe():
    pipe = dummy_wan_pipeline(num_layers=2, head_dim=HEAD_DIM, patch_size=(1, 1, 1))
    pipe.set_progress_bar_config(disable=True)
    return pipe
