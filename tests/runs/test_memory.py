"""Offload and VAE tiling: the big models' remedies, by name; on a GPU the video is the one a plain run makes."""

from __future__ import annotations

import numpy as np
import pytest

from fastdit.models.loading import load_pipeline, resolve_model
from fastdit.runs.memory import place_pipeline
from fastdit.runs.run import run_pipeline

CALL = {"prompt": "a red ball", "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 2,
        "max_sequence_length": 16}
SPARSE = {"method": "radial", "block_size": 16, "dense_steps": 0}


def _sample():
    pipe = load_pipeline(resolve_model("sample"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_vae_tiling_and_the_refusals():
    pipe = _sample()
    assert place_pipeline(pipe, "cpu", vae_tiling=True) is pipe
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    with pytest.raises(ValueError, match="offload 'model' moves weights between the CPU and a GPU; it needs a CUDA"):
        place_pipeline(pipe, "cpu", offload="model")
    with pytest.raises(ValueError, match="unknown offload 'disk'; available: model, sequential"):
        place_pipeline(pipe, "cuda", offload="disk")
    pipe.vae = None
    with pytest.raises(ValueError, match="WanPipeline's VAE \\(NoneType\\) can't decode in tiles"):
        place_pipeline(pipe, "cpu", vae_tiling=True)


@pytest.mark.gpu
@pytest.mark.parametrize("offload, tiling", [("model", False), ("sequential", False), (None, True)])
def test_offloaded_or_tiled_sparse_run_makes_the_plain_video(offload, tiling):
    import torch

    plain = run_pipeline(place_pipeline(_sample(), "cuda"), CALL, seed=0, label="plain", sparse=SPARSE)
    pipe = place_pipeline(_sample(), "cuda", offload=offload, vae_tiling=tiling)
    run = run_pipeline(pipe, CALL, seed=0, label="placed", sparse=SPARSE)
    assert run.stats.sparse_fraction() == plain.stats.sparse_fraction() > 0  # the method ran under the hooks
    assert np.abs(run.frames.astype(int) - plain.frames.astype(int)).max() <= 1
    if offload is not None:  # the weights went back to the CPU
        assert next(pipe.transformer.parameters()).device.type in ("cpu", "meta")
    torch.cuda.empty_cache()
