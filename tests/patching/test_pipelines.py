"""End to end through real diffusers pipelines (tiny, offline): text encoders, scheduler loop, CFG, decode."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.image import dummy_flux_pipeline, dummy_sd_pipeline
from fastdit.dummy.video import dummy_cogvideox_pipeline, dummy_hunyuan_video_pipeline
from fastdit.dummy.wan import dummy_wan22_pipeline

# criss-cross planes keep every group of these tiny grids; one-group surround leaves something to drop
SPARSE_GRAT = {"mode": "surround", "radius": 0}

PROMPT = "a red ball bouncing in a white room"
VIDEO = dict(height=128, width=128, num_frames=9, max_sequence_length=16, output_type="latent")  # grid 3x8x8
PIPELINES = {
    # name: (builder, call arguments, sparse method, denoisers)
    "wan2.2": (dummy_wan22_pipeline, dict(VIDEO, negative_prompt="blurry", num_inference_steps=4), "radial",
               ("transformer", "transformer_2")),
    "hunyuan_video": (dummy_hunyuan_video_pipeline,
                      dict(VIDEO, num_inference_steps=2, prompt_template={"template": "{}", "crop_start": 0}),
                      "radial", ("transformer",)),
    "cogvideox": (dummy_cogvideox_pipeline, dict(VIDEO, negative_prompt="", num_inference_steps=2),
                  "radial", ("transformer",)),
    "flux": (dummy_flux_pipeline, dict(height=128, width=128, num_inference_steps=2, max_sequence_length=16,
                                            output_type="pt"), "grat", ("transformer",)),
    "sd": (dummy_sd_pipeline, dict(height=128, width=128, num_inference_steps=2, output_type="pt"), "grat",
           ("unet",)),
}


def _output(pipe, arguments: dict) -> torch.Tensor:
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **arguments)
    return out.frames if hasattr(out, "frames") else out.images


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_dense_sparse_and_remove(name):
    build, arguments, method, denoisers = PIPELINES[name]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    before = _output(pipe, arguments)

    fastdit.apply(pipe, method="dense")  # preset "auto": the family default, warm-up included
    try:
        dense = _output(pipe, arguments)
    finally:
        fastdit.remove(pipe)
    torch.testing.assert_close(dense, before, atol=1e-6, rtol=0)

    fastdit.apply(pipe, method=method, preset=None, block_size=16, **(SPARSE_GRAT if method == "grat" else {}))
    try:
        sparse = _output(pipe, arguments)
        records = fastdit.stats(pipe).records
    finally:
        fastdit.remove(pipe)
    assert {r.model for r in records} == set(denoisers)  # Wan 2.2: both experts are patched and used
    assert any(not r.dense for r in records) and all(r.reason == "grid too small" for r in records if r.dense)
    assert torch.isfinite(sparse).all()
    rel = ((sparse - before).norm() / before.norm()).item()
    assert 1e-5 < rel < 0.5, rel

    assert torch.equal(_output(pipe, arguments), before)
    assert not fastdit.is_patched(pipe)


@pytest.mark.parametrize("name", ["wan2.2", "hunyuan_video"])
def test_svg2_runs_through_the_generic_path(name):
    """SVG2's per-head orders through real pipelines on the generic path: Wan (video-only self-attention, two
    experts, CFG) and HunyuanVideo (joint text tokens, padded prompts); sparse calls close to the stock output."""
    build, arguments, _, denoisers = PIPELINES[name]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    before = _output(pipe, arguments)
    fastdit.apply(pipe, method="svg2", preset=None, block_size=16, q_clusters=2, k_clusters=6, top_p=0.6)
    try:
        sparse = _output(pipe, arguments)
        records = fastdit.stats(pipe).records
    finally:
        fastdit.remove(pipe)
    assert {r.model for r in records} == set(denoisers)
    assert any(not r.dense and r.density < 1 for r in records)
    assert torch.isfinite(sparse).all()
    rel = ((sparse - before).norm() / before.norm()).item()
    assert 1e-5 < rel < 0.5, rel
