"""Dummy (random-weight) Wan 2.1 / 2.2 transformers and pipelines, and those of the models built on the Wan
architecture (SkyReels-V2, Wan-VACE, ...), at toy width, built offline in well under a second.

They exercise the exact code paths of the real models (same classes, same processors, same token order) at
toy sizes, so tests and the bundled demo model need no download. Their output is noise, not video.
"""

from __future__ import annotations

from typing import Any

import torch

from fastdit.dummy.text_encoders import dummy_t5_encoder, dummy_tokenizer


def dummy_wan_transformer(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12, *,
                          ffn_dim: int = 32, patch_size: tuple[int, int, int] = (1, 2, 2),
                          rope_max_seq_len: int = 32):
    """A ``WanTransformer3DModel`` with the real architecture at toy width (diffusers' fast-test config).

    ``rope_max_seq_len`` bounds the latent frames, height and width the RoPE tables cover (real Wan: 1024).
    """
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=patch_size, num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=rope_max_seq_len,
    ).eval()


def dummy_wan_variant(model_class: str, seed: int = 0, **config: Any):
    """A model of the Wan architecture's other families (``SkyReelsV2Transformer3DModel``,
    ``ChronoEditTransformer3DModel``, ``WanVACETransformer3DModel``, ``HeliosTransformer3DModel`` ...) at the toy
    width of :func:`dummy_wan_transformer` (the toy arguments the class takes); ``config`` adds or overrides
    constructor arguments."""
    import inspect

    import diffusers

    torch.manual_seed(seed)
    cls = getattr(diffusers, model_class)
    toy = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
               text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{**{k: v for k, v in toy.items() if k in accepted}, **config}).eval()


def _wan_parts(seed: int) -> dict[str, Any]:
    """The tokenizer, UMT5 text encoder and Wan VAE that the Wan architecture's pipelines share."""
    from diffusers import AutoencoderKLWan

    tokenizer = dummy_tokenizer()
    text_encoder = dummy_t5_encoder(tokenizer, seed=seed, umt5=True)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae)


def dummy_wan_pipeline(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12,
                       **transformer_options: Any):
    """A text-to-video ``WanPipeline`` (UMT5 text encoder, Wan VAE, flow-matching scheduler), random weights.

    ``transformer_options`` go to :func:`dummy_wan_transformer` (``ffn_dim``, ``patch_size``, ...).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    parts = _wan_parts(seed)
    transformer = dummy_wan_transformer(seed, num_layers, heads, head_dim, **transformer_options)
    return WanPipeline(**parts, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


def dummy_skyreels_v2_pipeline(seed: int = 0, **transformer_config: Any):
    """A text-to-video ``SkyReelsV2Pipeline``: the parts of :func:`dummy_wan_pipeline`, a
    ``SkyReelsV2Transformer3DModel`` (:func:`dummy_wan_variant`; ``transformer_config`` overrides its toy
    arguments) and the flow-sigma UniPC scheduler SkyReels-V2 ships with."""
    from diffusers import SkyReelsV2Pipeline, UniPCMultistepScheduler

    transformer = dummy_wan_variant("SkyReelsV2Transformer3DModel", seed, **transformer_config)
    return SkyReelsV2Pipeline(**_wan_parts(seed), transformer=transformer,
                              scheduler=UniPCMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True,
                                                                prediction_type="flow_prediction"))


def dummy_wan_vace_pipeline(seed: int = 0, **transformer_config: Any):
    """A ``WanVACEPipeline``: the parts of :func:`dummy_wan_pipeline` and a ``WanVACETransformer3DModel``
    (:func:`dummy_wan_variant`; ``transformer_config`` overrides its toy arguments) with one VACE block, which
    takes the control video's latents (16 inactive + 16 reactive channels) and its 8x8-folded mask (64)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline

    config = {"vace_layers": [0], "vace_in_channels": 96, **transformer_config}
    transformer = dummy_wan_variant("WanVACETransformer3DModel", seed, **config)
    return WanVACEPipeline(**_wan_parts(seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                           transformer=transformer)


def dummy_wan_i2v_transformer(seed: int = 0, num_layers: int = 2, image_dim: int = 4):
    """A Wan 2.1 image-to-video transformer: the image's CLIP tokens enter ``attn2`` through its added K/V
    (``encoder_hidden_states_image [B, N, image_dim]``), and the latent has 36 channels (noise + image + mask)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim, added_kv_proj_dim=24,
    ).eval()


def dummy_wan22_pipeline(seed: int = 0, boundary_ratio: float = 0.875):
    """A Wan 2.2 A14B-style ``WanPipeline``: two experts, ``transformer`` for the high-noise steps (timesteps at
    or above ``boundary_ratio`` of the schedule) and ``transformer_2`` for the rest."""
    from diffusers import WanPipeline

    pipe = dummy_wan_pipeline(seed)
    return WanPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                       scheduler=pipe.scheduler, transformer=pipe.transformer,
                       transformer_2=dummy_wan_transformer(seed + 1), boundary_ratio=boundary_ratio)
