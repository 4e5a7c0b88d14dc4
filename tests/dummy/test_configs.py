"""Published model configs: the random-weight transformers have the real models' sizes."""

from __future__ import annotations

import pytest
import torch

from fastdit.dummy.configs import MODEL_CONFIGS, build_denoiser


@pytest.mark.parametrize("model_id, billions", [
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 1.42),
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", 14.29),
    ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", 14.29),
])
def test_parameter_counts(model_id, billions):
    model = build_denoiser(model_id, device="meta", dtype=torch.bfloat16)  # no memory, no time
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # restored


def test_latent_shape_and_overrides():
    spec = MODEL_CONFIGS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    assert spec.latent_shape(81, 480, 832) == (1, 16, 21, 60, 104)  # -> 21 x 30 x 52 tokens after patchify
    model = build_denoiser("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="meta", num_layers=2)
    assert len(model.blocks) == 2
    with pytest.raises(ValueError, match="unknown config key"):
        build_denoiser("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="meta", layers=2)
    with pytest.raises(ValueError, match="no published config"):
        build_denoiser("nobody/nothing")
