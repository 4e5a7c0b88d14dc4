"""Tiny random-weight Flux, SD3, PixArt, DiT and Stable Diffusion (UNet) models and pipelines, built offline.

Same classes and processors as the real models at toy width (configs follow diffusers' own fast tests).
Outputs are noise.
"""

from __future__ import annotations

import torch

from fastdit.dummy.text_encoders import dummy_clip_text_encoder, dummy_clip_tokenizer, dummy_t5_encoder, dummy_tokenizer


def dummy_flux_transformer(seed: int = 0, num_layers: int = 1, num_single_layers: int = 1):
    """``FluxTransformer2DModel``: 2 heads × 16, packed 4-channel latents, 32-wide text."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ).eval()


def dummy_flux_pipeline(seed: int = 0):
    """``FluxPipeline``: CLIP (pooled) + T5 (sequence) encoders, a 1-channel-latent VAE (8x down-sampling)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    tokenizer = dummy_clip_tokenizer()
    text_encoder = dummy_clip_text_encoder(tokenizer, seed=seed)
    tokenizer_2 = dummy_tokenizer()
    text_encoder_2 = dummy_t5_encoder(tokenizer_2, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    ).eval()
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                        transformer=dummy_flux_transformer(seed))


def dummy_flux_variant(model_class: str, seed: int = 0, **config):
    """A model of the Flux architecture's other families (``ChromaTransformer2DModel``,
    ``LongCatImageTransformer2DModel``, ``OvisImageTransformer2DModel``, ``BriaTransformer2DModel``,
    ``Flux2Transformer2DModel``, ``Flux3Transformer2DModel``) at toy width, one double (FLUX.3: one per-mode block
    per mode) and one single block; ``config`` adds the class's own constructor arguments."""
    import diffusers

    torch.manual_seed(seed)
    toy = dict(in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
               joint_attention_dim=32, axes_dims_rope=(4, 6, 6))
    return getattr(diffusers, model_class)(**{**toy, **config}).eval()


def dummy_qwen_image_transformer(seed: int = 0, num_layers: int = 2):
    """A ``QwenImageTransformer2DModel`` at toy width (RoPE axes 4 + 6 + 6 = the head dim 16)."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                       axes_dims_rope=(4, 6, 6)).eval()


def dummy_qwen_image21_transformer(seed: int = 0):
    """A ``QwenImage21Transformer2DModel`` at toy width (diffusers' own test config with 16-wide text): two blocks,
    2 heads x 16 (RoPE axes 4 + 6 + 6 = the head dim), unpatched 4-channel latents, ``causal_condition`` (the
    default), so a ``QwenImage21KVCache`` works."""
    from diffusers import QwenImage21Transformer2DModel

    torch.manual_seed(seed)
    return QwenImage21Transformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, context_in_dim=16, mlp_ratio=2,
                                         axes_dims_rope=(4, 6, 6)).eval()


def dummy_nucleus_moe_image_transformer(seed: int = 0):
    """A ``NucleusMoEImageTransformer2DModel`` at toy width: two blocks, no experts (dense MLPs), 2 query heads
    sharing 1 key/value head (RoPE axes 4 + 6 + 6 = the head dim 16)."""
    from diffusers import NucleusMoEImageTransformer2DModel

    torch.manual_seed(seed)
    return NucleusMoEImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                             attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
                                             joint_attention_dim=16, axes_dims_rope=(4, 6, 6),
                                             moe_enabled=False).eval()


def dummy_prx_transformer(seed: int = 0):
    """A ``PRXTransformer2DModel`` at toy width: two blocks, 2 heads × 16 (RoPE axes 8 + 8), patch 2.

    The model zero-initialises each block's modulation, which gates every attention output to 0; here it is
    random, so attention reaches the output."""
    from diffusers import PRXTransformer2DModel

    torch.manual_seed(seed)
    model = PRXTransformer2DModel(in_channels=4, patch_size=2, context_in_dim=16, hidden_size=32, mlp_ratio=2.0,
                                  num_heads=2, depth=2, axes_dim=[8, 8])
    for block in model.blocks:
        torch.nn.init.normal_(block.modulation.lin.weight, std=0.2)
    return model.eval()


def dummy_bria_fibo2_transformer(seed: int = 0):
    """A ``BriaFibo2Transformer2DModel`` at toy width: one refiner block, two main blocks (the second an injection
    block), one Perceiver layer; 4 to 8 gist tokens for 2- to 16-token prompts (RoPE axes 4 + 6 + 6 = head dim 16)."""
    from diffusers import BriaFibo2Transformer2DModel

    torch.manual_seed(seed)
    return BriaFibo2Transformer2DModel(in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
                                       cap_feat_dim=16, injection_layer_ids=(1,), perceiver_num_layers=1,
                                       min_num_gist_tokens=4, max_num_gist_tokens=8, gist_step=4, gist_min_text_len=2,
                                       gist_max_text_len=16, axes_dims=(4, 6, 6), axes_lens=(16, 32, 32)).eval()


def dummy_glm_image_transformer(seed: int = 0):
    """A ``GlmImageTransformer2DModel`` at toy width (diffusers' own test config, two heads × 8)."""
    from diffusers import GlmImageTransformer2DModel

    torch.manual_seed(seed)
    return GlmImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                                      num_attention_heads=2, text_embed_dim=32, time_embed_dim=16, condition_dim=8,
                                      prior_vq_quantizer_codebook_size=64).eval()


def dummy_hunyuan_image_transformer(seed: int = 0):
    """A ``HunyuanImageTransformer2DModel`` at toy width, one double and one single block (RoPE axes 8 + 8)."""
    from diffusers import HunyuanImageTransformer2DModel

    torch.manual_seed(seed)
    return HunyuanImageTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16,
                                          num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=(1, 1),
                                          text_embed_dim=16, rope_axes_dim=(8, 8)).eval()


def dummy_joyimage_transformer(model_class: str = "JoyImageEditTransformer3DModel", seed: int = 0):
    """A JoyImage-Edit model (``JoyImageEditTransformer3DModel`` or ``JoyImageEditPlusTransformer3DModel``, which
    share their constructor) at toy width: two double blocks, 2 heads x 16 (RoPE axes 4 + 6 + 6), 4-channel
    latents, 16-wide text."""
    import diffusers

    torch.manual_seed(seed)
    return getattr(diffusers, model_class)(patch_size=[1, 2, 2], in_channels=4, hidden_size=32, num_attention_heads=2,
                                           text_dim=16, mlp_width_ratio=2.0, num_layers=2,
                                           rope_dim_list=[4, 6, 6]).eval()


def dummy_ernie_image_transformer(seed: int = 0):
    """An ``ErnieImageTransformer2DModel`` at toy width, two layers, patch 2 (RoPE axes 4 + 6 + 6 = the head dim).

    The model zero-initialises its modulation and output projection (a fresh model's attention is gated off
    and its output is 0); here they are random, so attention reaches the output."""
    from diffusers import ErnieImageTransformer2DModel

    torch.manual_seed(seed)
    model = ErnieImageTransformer2DModel(hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=64,
                                         in_channels=4, out_channels=4, patch_size=2, text_in_dim=16,
                                         rope_axes_dim=(4, 6, 6))
    for linear in (model.adaLN_modulation[-1], model.final_linear):
        torch.nn.init.normal_(linear.weight, std=0.2)
    return model.eval()


def dummy_z_image_transformer(seed: int = 0, siglip_feat_dim: int | None = None):
    """A ``ZImageTransformer2DModel`` at toy width: 2 heads x 16 (RoPE axes 4 + 6 + 6 = the head dim), two main
    layers and one refiner layer of each kind, patch 2, 16-wide captions; with ``siglip_feat_dim``, the omni
    model's SigLIP embedder and refiner too."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    return ZImageTransformer2DModel(in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                                    cap_feat_dim=16, siglip_feat_dim=siglip_feat_dim, axes_dims=[4, 6, 6],
                                    axes_lens=[256, 64, 64]).eval()


def dummy_ideogram4_transformer(seed: int = 0):
    """An ``Ideogram4Transformer2DModel`` at toy width: 2 heads x 16 (MRoPE sections 4 + 2 + 2 = half the head
    dim), two layers, 4-channel packed latents, 16-wide text features."""
    from diffusers import Ideogram4Transformer2DModel

    torch.manual_seed(seed)
    return Ideogram4Transformer2DModel(in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                                       intermediate_size=64, adaln_dim=16, llm_features_dim=16,
                                       mrope_section=(4, 2, 2)).eval()


def dummy_krea2_transformer(seed: int = 0):
    """A ``Krea2Transformer2DModel`` at toy width, two blocks with grouped-query attention (2 query heads, 1
    key/value head, RoPE axes 4 + 6 + 6 = the head dim), one text fusion block of each kind over 2 text layers."""
    from diffusers import Krea2Transformer2DModel

    torch.manual_seed(seed)
    return Krea2Transformer2DModel(in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=64, timestep_embed_dim=32,
                                   text_hidden_dim=16, num_text_layers=2, text_num_attention_heads=2,
                                   text_num_key_value_heads=2, text_intermediate_size=32, num_layerwise_text_blocks=1,
                                   num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6)).eval()


def dummy_cogview3plus_transformer(seed: int = 0):
    """A ``CogView3PlusTransformer2DModel`` (CogVideoX's blocks on an image) at toy width."""
    from diffusers import CogView3PlusTransformer2DModel

    torch.manual_seed(seed)
    return CogView3PlusTransformer2DModel(patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                          num_attention_heads=4, out_channels=4, text_embed_dim=32, time_embed_dim=8,
                                          condition_dim=2, pos_embed_max_size=32, sample_size=16).eval()


def dummy_sd3_transformer(seed: int = 0, num_layers: int = 2, dual_attention_layers: tuple[int, ...] = ()):
    """``SD3Transformer2DModel`` (``dual_attention_layers`` gives SD3.5-style image-only ``attn2`` blocks)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        out_channels=4, dual_attention_layers=dual_attention_layers,
    ).eval()


def dummy_pixart_transformer(seed: int = 0, num_layers: int = 2):
    """``PixArtTransformer2DModel``: 2 heads × 8, 16-wide captions (no size conditioning: ``sample_size`` != 128)."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
        cross_attention_dim=16, sample_size=16, patch_size=2, caption_channels=16,
    ).eval()


def dummy_dit_transformer(seed: int = 0, num_layers: int = 2):
    """``DiTTransformer2DModel``: 2 heads × 8, 10 classes (it unpatchifies square images only)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
        sample_size=16, patch_size=2, num_embeds_ada_norm=10,
    ).eval()


def dummy_transformer_2d(seed: int = 0, num_layers: int = 2):
    """Legacy ``Transformer2DModel`` on continuous input (one token per latent pixel): 2 heads × 8,
    cross-attention to 16-wide text."""
    from diffusers import Transformer2DModel

    torch.manual_seed(seed)
    return Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=num_layers, cross_attention_dim=16,
        norm_num_groups=4,
    ).eval()


def dummy_auraflow_transformer(seed: int = 0):
    """An ``AuraFlowTransformer2DModel`` at toy width, one joint and one single block (positions for 20x20)."""
    from diffusers import AuraFlowTransformer2DModel

    torch.manual_seed(seed)
    model = AuraFlowTransformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1,
                                       num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=2,
                                       joint_attention_dim=32, caption_projection_dim=16, out_channels=4,
                                       pos_embed_max_size=400).eval()
    # At random init the AdaLN-Zero gates are ~0.03: attention would reach the output ~1% as strongly as the
    # residual, and a change in it (sparse vs dense) would vanish. Ten times larger gates let it show.
    with torch.no_grad():
        for block in (*model.joint_transformer_blocks, *model.single_transformer_blocks):
            block.norm1.linear.weight.mul_(10)
    return model


def dummy_cogview4_transformer(seed: int = 0):
    """A ``CogView4Transformer2DModel`` at toy width, one block."""
    from diffusers import CogView4Transformer2DModel

    torch.manual_seed(seed)
    return CogView4Transformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                                      num_attention_heads=2, text_embed_dim=32, time_embed_dim=8, condition_dim=2,
                                      sample_size=16).eval()


def dummy_hidream_transformer(seed: int = 0):
    """A ``HiDreamImageTransformer2DModel`` at toy width, one double- and one single-stream block, no MoE;
    ``max_resolution`` 32 × 32 pads a non-square latent to 256 tokens (configs follow diffusers' fast test)."""
    from diffusers import HiDreamImageTransformer2DModel

    torch.manual_seed(seed)
    return HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                          num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
                                          caption_channels=[8, 4], text_emb_dim=8, num_routed_experts=0,
                                          axes_dims_rope=(4, 2, 2), max_resolution=(32, 32),
                                          llama_layers=(0, 1)).eval()


def dummy_lumina2_transformer(seed: int = 0):
    """A ``Lumina2Transformer2DModel`` at toy width: one refiner of each kind and one joint layer, 2 query heads
    sharing 1 key/value head (RoPE axes 4 + 6 + 6 = the head dim 16)."""
    from diffusers import Lumina2Transformer2DModel

    torch.manual_seed(seed)
    return Lumina2Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, hidden_size=32, num_layers=1,
                                     num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1, multiple_of=16,
                                     axes_dim_rope=(4, 6, 6), axes_lens=(64, 64, 64), cap_feat_dim=16).eval()


def dummy_omnigen_transformer(seed: int = 0):
    """An ``OmniGenTransformer2DModel`` at toy width: 2 layers, 2 heads × 16, a 64-token vocabulary (id 0 pads),
    positions for a 20 × 20 latent grid, unscaled RoPE."""
    from diffusers import OmniGenTransformer2DModel

    torch.manual_seed(seed)
    return OmniGenTransformer2DModel(in_channels=4, patch_size=2, hidden_size=32, num_attention_heads=2,
                                     num_key_value_heads=2, intermediate_size=64, num_layers=2, vocab_size=64,
                                     pad_token_id=0, max_position_embeddings=512, original_max_position_embeddings=256,
                                     rope_scaling={"short_factor": [1.0] * 8, "long_factor": [1.0] * 8},
                                     pos_embed_max_size=20, time_step_dim=16).eval()


def dummy_unet(seed: int = 0, sample_size: int = 16):
    """``UNet2DConditionModel`` with self-attention at two resolution levels and the mid block (SD layout)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        norm_num_groups=4, attention_head_dim=4,
    ).eval()


def dummy_sdxl_unet(seed: int = 0, sample_size: int = 16):
    """SDXL-layout ``UNet2DConditionModel``: no attention at full resolution, two transformer layers at the
    lower level, and ``text_time`` conditioning (``added_cond_kwargs``: ``text_embeds [B, 32]``,
    ``time_ids [B, 6]``), as in diffusers' SDXL fast tests."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=2, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=32, norm_num_groups=1,
    ).eval()


def dummy_dreamlite_unet(seed: int = 0, sample_size: int = 16):
    """``DreamLiteUNetModel`` with self-attention at full resolution (down and up) and in the mid block, a level
    between built without it (its "no self-attention" blocks), and DreamLite's defaults: one key/value head for
    two query heads, RMS ``qk_norm``, depthwise-separable convolutions."""
    from diffusers import DreamLiteUNetModel

    torch.manual_seed(seed)
    return DreamLiteUNetModel(
        block_out_channels=(16, 16, 32), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DreamLiteCrossAttnDownBlock2D", "DreamLiteCrossAttnNoSelfAttnDownBlock2D",
                          "DreamLiteDownBlock2D"),
        up_block_types=("DreamLiteUpBlock2D", "DreamLiteCrossAttnNoSelfAttnUpBlock2D", "DreamLiteCrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=2, num_kv_heads=1, ff_mult=2,
    ).eval()


def dummy_sd_pipeline(seed: int = 0):
    """``StableDiffusionPipeline``: the UNet above (trained size 16 latent = 128 px), CLIP text encoder, 8x VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 4, 4), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=2, layers_per_block=1,
    ).eval()
    tokenizer = dummy_clip_tokenizer()
    text_encoder = dummy_clip_text_encoder(tokenizer, seed=seed)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=dummy_unet(seed), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
