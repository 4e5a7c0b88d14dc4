"""Published denoiser configs of real models, so their transformers can be built with random weights.

Nothing can be downloaded in a benchmark sandbox, yet speedups only mean something at a real model's
shapes (width, heads, head dim, depth, token count). :data:`MODEL_CONFIGS` holds, per supported family's
flagship checkpoint, the denoiser config (diffusers' class defaults where they are that checkpoint's, as the
class docstrings say, or the checkpoint's own ``config.json`` values), each with its source; the pipeline's
latent compression, prompt length and denoiser forwards per step (CFG); and the size it generates at (the
preset's :class:`fastdit.patching.presets.VideoSize` where fastdit has one). Families whose flagship config
can't be established offline are in :data:`NOT_BENCHED` with the reason."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from fastdit.patching.presets import PRESETS, VideoSize

__all__ = ["ModelConfig", "MODEL_CONFIGS", "NOT_BENCHED", "QUICK", "build_denoiser"]


@dataclass(frozen=True)
class ModelConfig:
    """A published checkpoint's denoiser: its class and config, where the config comes from, the pipeline's
    latent compression and prompt length, the generation size it is published at, and how many denoiser
    forwards one denoising step takes (2 under classifier-free guidance, 1 for guidance-distilled models).

    ``config`` holds the values that differ from the class's defaults (``{}``: the class defaults are this
    checkpoint's config). ``inputs`` names the forward-input layout in :data:`fastdit.dummy.inputs.INPUTS`.
    ``quick`` replaces :data:`QUICK` for classes whose depth and heads go by other names (``None``: QUICK's
    keys that the class takes).
    """

    denoiser: str
    config: dict[str, Any]
    size: VideoSize
    source: str
    inputs: str
    cfg: int
    text_tokens: int
    vae_spatial: int = 8
    quick: dict[str, Any] | None = None
    notes: str = ""

    @property
    def image(self) -> bool:
        """An image model: one frame, no temporal compression."""
        return self.size.frames == 1

    def latent(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(frames, height, width)`` of the latent the pipeline feeds the denoiser for this video size
        (causal video VAEs keep the first frame apart; ``size.t_compress`` is the VAE's temporal factor)."""
        return (frames - 1) // self.size.t_compress + 1, height // self.vae_spatial, width // self.vae_spatial

    def quick_overrides(self) -> dict[str, Any]:
        """The config values of the scaled-down ``--quick`` model: 2 layers (of each kind) of 2 heads."""
        if self.quick is not None:
            return dict(self.quick)
        import diffusers

        accepted = inspect.signature(getattr(diffusers, self.denoiser).__init__).parameters
        return {key: value for key, value in QUICK.items() if key in accepted}


# --quick: 2 layers of each kind, 2 heads (head dim, patch and prompt width kept); Wan's FFN width shrinks too
QUICK = {"num_layers": 2, "num_single_layers": 2, "num_attention_heads": 2, "ffn_dim": 1024}

_WAN_COMMON = {"patch_size": (1, 2, 2), "attention_head_dim": 128, "in_channels": 16, "out_channels": 16,
               "text_dim": 4096, "freq_dim": 256, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
               "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": 1024}
_WAN_1_3B = {**_WAN_COMMON, "num_attention_heads": 12, "num_layers": 30, "ffn_dim": 8960}
_WAN_14B = {**_WAN_COMMON, "num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824}
_WAN_SOURCE = ("the Diffusers repo's transformer/config.json, checked against the Wan team's configs (1.3B: dim "
               "1536, 12 heads, 30 layers, FFN 8960; 14B: dim 5120, 40 heads, 40 layers, FFN 13824; each Wan2.2 "
               "A14B expert is a 14B transformer); WanPipeline: CFG (guidance_scale 5.0), 512 prompt tokens")
_UNET_QUICK = {"layers_per_block": 1, "transformer_layers_per_block": 1, "attention_head_dim": 2}


def _image(pixels: int, compress: int = 16) -> VideoSize:
    """A square image, ``compress`` pixels per token (VAE factor x patch)."""
    return VideoSize(1, pixels, pixels, 1, compress)


def _size(model_id: str) -> VideoSize:
    """The preset's size: where fastdit already writes this model's size, the table reads it from there."""
    return PRESETS[model_id].size


_WAN21_13B, _WAN21_14B, _WAN22_A14B = (
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.2-T2V-A14B-Diffusers")
MODEL_CONFIGS: dict[str, ModelConfig] = {
    _WAN21_13B: ModelConfig("WanTransformer3DModel", _WAN_1_3B, _size(_WAN21_13B), _WAN_SOURCE, "wan", 2, 512,
                            notes="480p model; 81 frames -> 21 x 30 x 52 = 32 760 tokens"),
    _WAN21_14B: ModelConfig("WanTransformer3DModel", _WAN_14B, _size(_WAN21_14B), _WAN_SOURCE, "wan", 2, 512,
                            notes="720p; 81 frames -> 21 x 45 x 80 = 75 600 tokens"),
    _WAN22_A14B: ModelConfig("WanTransformer3DModel", _WAN_14B, _size(_WAN22_A14B), _WAN_SOURCE, "wan", 2, 512,
                             notes="each of the two experts; one runs per step"),
    "hunyuanvideo-community/HunyuanVideo": ModelConfig(
        "HunyuanVideoTransformer3DModel", {}, _size("hunyuanvideo-community/HunyuanVideo"),
        "diffusers' HunyuanVideoTransformer3DModel defaults (its docstring: tencent/HunyuanVideo); "
        "HunyuanVideoPipeline: 129 x 720 x 1280, embedded guidance 6.0 and true_cfg_scale 1.0 (one forward), "
        "256 prompt tokens", "hunyuan_video", 1, 256),
    "THUDM/CogVideoX-5b": ModelConfig(
        "CogVideoXTransformer3DModel",
        {"num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True},
        _size("THUDM/CogVideoX-5b"),
        "CogVideoX-5b's transformer/config.json: 48 heads, 42 layers, rotary positions (the class defaults are "
        "CogVideoX-2b's; the 5b preset's fingerprint holds the same); CogVideoXPipeline: CFG (guidance_scale 6), "
        "226 prompt tokens; 49 x 480 x 720 (model card)", "cogvideox", 2, 226),
    "Lightricks/LTX-Video": ModelConfig(
        "LTXVideoTransformer3DModel", {}, _size("Lightricks/LTX-Video"),
        "diffusers' LTXVideoTransformer3DModel defaults (its docstring: Lightricks/LTX-Video); LTXPipeline: "
        "161 x 512 x 704, CFG (guidance_scale 3), 128 prompt tokens", "ltx", 2, 128, vae_spatial=32,
        quick={"num_layers": 2, "num_attention_heads": 2, "cross_attention_dim": 128}),
    "genmo/mochi-1-preview": ModelConfig(
        "MochiTransformer3DModel", {}, _size("genmo/mochi-1-preview"),
        "diffusers' MochiTransformer3DModel defaults (its docstring: genmo/mochi-1-preview); 163 x 480 x 848 "
        "(model card); MochiPipeline: CFG (guidance_scale 4.5), 256 prompt tokens", "mochi", 2, 256),
    "black-forest-labs/FLUX.1-dev": ModelConfig(
        "FluxTransformer2DModel", {"guidance_embeds": True}, _size("black-forest-labs/FLUX.1-dev"),
        "diffusers' FluxTransformer2DModel defaults with guidance_embeds=True (FLUX.1-dev is guidance-distilled; "
        "the defaults without it are FLUX.1-schnell's); FluxPipeline: 1024 x 1024, embedded guidance 3.5 and "
        "true_cfg_scale 1.0 (one forward), 512 prompt tokens", "flux", 1, 512),
    "lodestones/Chroma1-HD": ModelConfig(
        "ChromaTransformer2DModel", {}, _image(1024),
        "diffusers' ChromaTransformer2DModel defaults (its docstring's reference: lodestones/Chroma1-HD); "
        "ChromaPipeline: 1024 x 1024 (default_sample_size 128), CFG (guidance_scale 5.0), 512 prompt tokens",
        "flux", 2, 512),
    "black-forest-labs/FLUX.2-dev": ModelConfig(
        "Flux2Transformer2DModel", {}, _image(1024),
        "diffusers' Flux2Transformer2DModel defaults; Flux2Pipeline: 1024 x 1024 (default_sample_size 128), "
        "embedded guidance (one forward), 512 prompt tokens", "flux2", 1, 512),
    "Qwen/Qwen-Image": ModelConfig(
        "QwenImageTransformer2DModel", {}, _image(1024),
        "diffusers' QwenImageTransformer2DModel defaults; QwenImagePipeline: 1024 x 1024 (default_sample_size "
        "128), true CFG (true_cfg_scale 4.0 with a negative prompt, as the model card runs it), up to 512 prompt "
        "tokens", "qwen_image", 2, 512),
    "Tongyi-MAI/Z-Image-Turbo": ModelConfig(
        "ZImageTransformer2DModel", {}, _image(1024),
        "diffusers' ZImageTransformer2DModel defaults; 1024 x 1024, guidance_scale 0 (model card: the distilled "
        "Turbo runs without CFG), up to 512 prompt tokens (ZImagePipeline)", "z_image", 1, 512,
        quick={"n_layers": 2, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 2, "dim": 256}),
    "stabilityai/stable-diffusion-3-medium-diffusers": ModelConfig(
        "SD3Transformer2DModel",
        {"num_layers": 24, "num_attention_heads": 24, "caption_projection_dim": 1536, "pos_embed_max_size": 192},
        _size("stabilityai/stable-diffusion-3-medium-diffusers"),
        "SD3 medium's transformer/config.json: 24 layers of 24 heads (caption projection 1536), positions up to "
        "192 (the class defaults are a smaller model's); StableDiffusion3Pipeline: 1024 x 1024, CFG "
        "(guidance_scale 7.0), 77 CLIP + 256 T5 prompt tokens", "sd3", 2, 333,
        quick={"num_layers": 2, "num_attention_heads": 2, "caption_projection_dim": 128}),
    "PixArt-alpha/PixArt-XL-2-1024-MS": ModelConfig(
        "PixArtTransformer2DModel", {"caption_channels": 4096, "out_channels": 8}, _image(1024),
        "diffusers' PixArtTransformer2DModel defaults (sample_size 128: the 1024-px model, with resolution and "
        "aspect-ratio conditions) with the T5 caption width 4096 and learned sigma (8 output channels); "
        "PixArtAlphaPipeline: CFG (guidance_scale 4.5), 120 prompt tokens", "pixart", 2, 120,
        quick={"num_layers": 2, "num_attention_heads": 2, "cross_attention_dim": 144}),
    "facebook/DiT-XL-2-256": ModelConfig(
        "DiTTransformer2DModel", {"out_channels": 8}, _image(256),
        "diffusers' DiTTransformer2DModel defaults (DiT-XL/2: 28 layers, 16 heads of 72, sample_size 32 = 256 px) "
        "with learned sigma (8 output channels); DiTPipeline: CFG (guidance_scale 4.0), class-conditional",
        "dit", 2, 0),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ModelConfig(
        "UNet2DConditionModel", {"cross_attention_dim": 768, "sample_size": 64},
        _size("stable-diffusion-v1-5/stable-diffusion-v1-5"),
        "diffusers' UNet2DConditionModel defaults (the SD 1.x UNet) with CLIP ViT-L's width 768 and sample_size "
        "64 (512 px); StableDiffusionPipeline: CFG (guidance_scale 7.5), 77 prompt tokens", "unet", 2, 77,
        quick=_UNET_QUICK),
    "stabilityai/stable-diffusion-xl-base-1.0": ModelConfig(
        "UNet2DConditionModel",
        {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
         "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
         "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20),
         "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048, "use_linear_projection": True,
         "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
         "projection_class_embeddings_input_dim": 2816, "sample_size": 128},
        _size("stabilityai/stable-diffusion-xl-base-1.0"),
        "SDXL base's unet/config.json (three levels, 1/2/10 transformer layers, heads 5/10/20, text_time "
        "conditioning); StableDiffusionXLPipeline: 1024 x 1024, CFG (guidance_scale 5.0), 77 prompt tokens",
        "unet", 2, 77, quick=_UNET_QUICK),
}

# Supported families with no entry above, and why: their flagship's config can't be established offline.
_UNSTATED = ("no offline source states its flagship checkpoint's config: the class docstring ties its defaults to "
             "no checkpoint, and the installed diffusers has no model card, doc or test config of one")
_WAN_LIKE = ("its defaults are the Wan 14B transformer's shape, but no offline source says which released checkpoint "
             "(with which widths of its own extra inputs) they are")
NOT_BENCHED: dict[str, str] = {
    **dict.fromkeys(("chronoedit", "wan_vace", "wan_animate", "wan_animate2", "anyflow", "anyflow_far", "helios"),
                    _WAN_LIKE),
    "hunyuan_video15": "its docstring names tencent/HunyuanVideo1.5, which holds 480p and 720p, text- and "
                       "image-to-video transformers; which one the defaults (target_size, 65 input channels) are "
                       "isn't stated offline",
    "ltx2": "its docstring points at Lightricks/LTX-Video (LTX 1), not at an LTX-2 checkpoint",
    "sana_wm_refiner": "a step attends a KV cache the pipeline fills block by block, which one forward of random "
                       "inputs doesn't model; and no offline source states the released refiner's config",
    "kandinsky6": "its docstring says the released checkpoints set text_token_padding, ca_rope, cross_gates and "
                  "fix_modulation, unlike the defaults, in their own config.json, which isn't available offline",
    "cosmos": "its docstring links the Cosmos project, which released 2B to 14B text- and video-to-world "
              "transformers; which one the defaults are isn't stated",
    "auraflow": "its defaults describe a 512-px model (sample_size 64, 1024 positions); which AuraFlow release "
                "(v0.1 to v0.3, the later ones 1024 px) that is isn't stated offline",
    "transformer_2d": "a generic transformer class with no checkpoint of its own (its defaults are one layer)",
    **dict.fromkeys((
        "skyreels_v2", "hunyuan_video_framepack", "motif_video", "consisid", "cogview3plus", "easyanimate",
        "minimax_h3", "kandinsky5", "allegro", "latte", "longcat_image", "ovis_image", "bria", "bria_fibo",
        "bria_fibo2", "flux3", "nucleus_moe_image", "qwen_image21", "prx", "glm_image", "hunyuan_image",
        "joyimage_edit", "joyimage_edit_plus", "ernie_image", "krea2", "ideogram4", "hidream", "lumina2", "omnigen",
        "cogview4", "dreamlite"), _UNSTATED),
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
    accepted = inspect.signature(getattr(diffusers, spec.denoiser).__init__).parameters
    unknown = sorted(set(overrides) - set(accepted) - {"self"})
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} for {spec.denoiser}")
    with _defaults(torch.device(device), dtype):
        model = getattr(diffusers, spec.denoiser)(**{**spec.config, **overrides})
    return model.eval()
