"""Published model configs: the random-weight transformers have the real models' sizes."""

from __future__ import annotations

import pytest
import torch

from fastdit.dummy.configs import MODEL_CONFIGS, build_denoiser
from fastdit.dummy.inputs import INPUTS


# the published sizes of the checkpoints (model cards: "1.3B", "13B", "5B", "2B", "10B", "12B", "8.9B", "32B", "20B",
# "6B", "2B", "0.6B", SD 1.5's 860M and SDXL's 2.6B UNet); DiT-XL/2 is 675M upstream, diffusers repeats the timestep and
# class embedding in every block's adaLN-Zero
@pytest.mark.parametrize("model_id, billions", [
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 1.42),
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", 14.29),
    ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", 14.29),
    ("hunyuanvideo-community/HunyuanVideo", 12.82),
    ("THUDM/CogVideoX-5b", 5.57),
    ("Lightricks/LTX-Video", 1.92),
    ("genmo/mochi-1-preview", 10.03),
    ("black-forest-labs/FLUX.1-dev", 11.90),
    ("lodestones/Chroma1-HD", 8.9),
    ("black-forest-labs/FLUX.2-dev", 32.22),
    ("Qwen/Qwen-Image", 20.43),
    ("Tongyi-MAI/Z-Image-Turbo", 6.15),
    ("stabilityai/stable-diffusion-3-medium-diffusers", 2.03),
    ("PixArt-alpha/PixArt-XL-2-1024-MS", 0.61),
    ("facebook/DiT-XL-2-256", 0.75),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", 0.86),
    ("stabilityai/stable-diffusion-xl-base-1.0", 2.57),
])
def test_parameter_counts(model_id, billions):
    model = build_denoiser(model_id, device="meta", dtype=torch.bfloat16)  # no memory, no time
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # restored


def test_every_config_is_counted_and_sourced():
    assert len(MODEL_CONFIGS) == len(test_parameter_counts.pytestmark[0].args[1])
    for spec in MODEL_CONFIGS.values():
        assert spec.source and spec.cfg in (1, 2) and spec.inputs in INPUTS


def test_latent_shape_and_overrides():
    spec = MODEL_CONFIGS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    assert spec.latent(81, 480, 832) == (21, 60, 104)  # -> 21 x 30 x 52 tokens after patchify
    assert MODEL_CONFIGS["Lightricks/LTX-Video"].latent(161, 512, 704) == (21, 16, 22)
    model = build_denoiser("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="meta", num_layers=2)
    assert len(model.blocks) == 2
    with pytest.raises(ValueError, match="unknown config key"):
        build_denoiser("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="meta", layers=2)
    with pytest.raises(ValueError, match="no published config"):
        build_denoiser("nobody/nothing")
