"""Published denoiser configs of real models, so their transformers can be built with random weights.

Nothing can be downloaded in a benchmark sandbox, yet speedups only mean something at a real model's
shapes (width, heads, head dim, depth, token count). These are the ``transformer/config.json`` values of the
diffusers repos (checked against the Wan team's own configs: Wan2.1 1.3B is dim 1536, 12 heads, 30 layers,
FFN 8960; 14B is dim 5120, 40 heads, 40 layers, FFN 13824; each Wan2.2 A14B expert is a 14B transformer),
plus the pipeline's latent compression. The video size each model is usually run at is its preset's
(:class:`fastdit.patching.presets.VideoSize`, the one place real model sizes are written).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from fastdit.patching.presets import PRESETS, VideoSize

__all__ = ["ModelConfig", "MODEL_CONFIGS", "build_denoiser"]


@dataclass(frozen=True)
class ModelConfig:
    """A denoiser class and config, the pipeline's latent compression, and its usual video size."""

    denoiser: str
    config: dict[str, Any]
    size: VideoSize
    vae_temporal: int = 4
    vae_spatial: int = 8
    latent_channels: int = 16
    text_tokens: int = 512
    notes: str = ""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``[B, C, F, H, W]`` of the latents the pipeline feeds the denoiser for this video size."""
        return (1, self.latent_channels, (frames - 1) // self.vae_temporal + 1, height // self.vae_spatial,
                width // self.vae_spatial)


_WAN_COMMON = {"patch_size": (1, 2, 2), "attention_head_dim": 128, "in_channels": 16, "out_channels": 16,
               "text_dim": 4096, "freq_dim": 256, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
               "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": 1024}
_WAN_1_3B = {**_WAN_COMMON, "num_attention_heads": 12, "num_layers": 30, "ffn_dim": 8960}
_WAN_14B = {**_WAN_COMMON, "num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824}

_WAN21_13B, _WAN21_14B, _WAN22_A14B = (
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.2-T2V-A14B-Diffusers")
MODEL_CONFIGS: dict[str, ModelConfig] = {
    _WAN21_13B: ModelConfig("WanTransformer3DModel", _WAN_1_3B, PRESETS[_WAN21_13B].size,
                            notes="480p model; 81 frames -> 21 x 30 x 52 = 32 760 tokens"),
    _WAN21_14B: ModelConfig("WanTransformer3DModel", _WAN_14B, PRESETS[_WAN21_14B].size,
                            notes="720p; 81 frames -> 21 x 45 x 80 = 75 600 tokens"),
    _WAN22_A14B: ModelConfig("WanTransformer3DModel", _WAN_14B, PRESETS[_WAN22_A14B].size,
                             notes="each of the two experts; one runs per step"),
}


@contextlib.contextmanager
def _defaults(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype``: a 14B model in fp32 on the CPU first would need
    56 GB before it could be cast."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def build_denoiser(model_id: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   **overrides: Any) -> torch.nn.Module:
    """The denoiser of ``model_id`` with random weights (``overrides`` change config values, e.g. depth)."""
    import diffusers

    if model_id not in MODEL_CONFIGS:
        raise ValueError(f"no published config for {model_id!r}; known: {', '.join(MODEL_CONFIGS)}")
    spec = MODEL_CONFIGS[model_id]
    unknown = sorted(set(overrides) - set(spec.config))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} for {spec.denoiser}")
    with _defaults(torch.device(device), dtype):
        model = getattr(diffusers, spec.denoiser)(**{**spec.config, **overrides})
    return model.eval()
