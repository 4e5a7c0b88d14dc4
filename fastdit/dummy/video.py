"""Tiny random-weight HunyuanVideo (1.0 and 1.5), Motif-Video, AnyFlow, CogVideoX, ConsisID, LTX-Video (1 and 2),
MiniMax-H3, Mochi, Kandinsky (5 and 6), Cosmos, Allegro and Latte models and pipelines, built offline.

Same classes and processors as the real models at toy width (configs follow diffusers' own fast tests), so
the attention code paths, token order and text handling are the real ones. Outputs are noise.
"""

from __future__ import annotations

import torch

from fastdit.dummy.text_encoders import dummy_clip_text_encoder, dummy_clip_tokenizer, dummy_t5_encoder, dummy_tokenizer


def dummy_hunyuan_video_transformer(seed: int = 0, num_layers: int = 1, num_single_layers: int = 1,
                                    patch_size: int = 2):
    """``HunyuanVideoTransformer3DModel``: 2 heads × 10, Llama-width text (16), CLIP-width pooled input (8)."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=num_layers,
        num_single_layers=num_single_layers, num_refiner_layers=1, patch_size=patch_size, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ).eval()


def dummy_hunyuan_video_pipeline(seed: int = 0):
    """``HunyuanVideoPipeline`` with a tiny Llama (text) and CLIP (pooled) encoder and a 4-level video VAE.

    Call it with ``prompt_template={"template": "{}", "crop_start": 0}``: the real template is Llama-chat text
    that a toy tokenizer can't crop like the real one.
    """
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from transformers import LlamaConfig, LlamaModel

    tokenizer = dummy_tokenizer()
    torch.manual_seed(seed)
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=3, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, hidden_act="gelu",
    )).eval()
    tokenizer_2 = dummy_clip_tokenizer()
    text_encoder_2 = dummy_clip_text_encoder(tokenizer_2, hidden_size=8, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    ).eval()
    return HunyuanVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=dummy_hunyuan_video_transformer(seed),
        vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def dummy_hunyuan_video15_transformer(seed: int = 0, num_layers: int = 2):
    """A ``HunyuanVideo15Transformer3DModel`` at toy width (RoPE axes 4 + 6 + 6 = the head dim 16)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideo15Transformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=num_layers,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
        image_embed_dim=8, rope_axes_dim=(4, 6, 6)).eval()


def dummy_motif_video_transformer(seed: int = 0):
    """A ``MotifVideoTransformer3DModel`` at toy width, one double and one single block."""
    from diffusers import MotifVideoTransformer3DModel

    torch.manual_seed(seed)
    return MotifVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16,
                                        num_layers=1, num_single_layers=1, patch_size=2, patch_size_t=1,
                                        text_embed_dim=16, rope_axes_dim=(4, 6, 6)).eval()


def dummy_anyflow_transformer(seed: int = 0, num_layers: int = 2):
    """An ``AnyFlowTransformer3DModel`` at the toy width of the dummy Wan transformer."""
    from diffusers import AnyFlowTransformer3DModel

    torch.manual_seed(seed)
    return AnyFlowTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                     in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                     num_layers=num_layers, rope_max_seq_len=32).eval()


def dummy_anyflow_far_transformer(seed: int = 0, num_layers: int = 2):
    """An ``AnyFlowFARTransformer3DModel`` of head dim 16: below that its processor pads the heads and sets a
    scale of its own, a call fastdit leaves to the model."""
    from diffusers import AnyFlowFARTransformer3DModel

    torch.manual_seed(seed)
    return AnyFlowFARTransformer3DModel(patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=3,
                                        num_attention_heads=2, attention_head_dim=16, in_channels=16,
                                        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=num_layers, rope_max_seq_len=32).eval()


_COGVIDEOX_TOY = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
                      text_embed_dim=32, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
                      temporal_compression_ratio=4, use_learned_positional_embeddings=False)


def dummy_cogvideox_transformer(seed: int = 0, patch_size_t: int | None = None, num_layers: int = 1,
                                max_text_seq_length: int = 16):
    """``CogVideoXTransformer3DModel`` (``patch_size_t=None``: CogVideoX 1.0; ``2``: 1.5, with RoPE)."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(**_COGVIDEOX_TOY, num_layers=num_layers, patch_size_t=patch_size_t,
                                       max_text_seq_length=max_text_seq_length,
                                       use_rotary_positional_embeddings=patch_size_t is not None).eval()


def dummy_consisid_transformer(seed: int = 0, num_layers: int = 1):
    """``ConsisIDTransformer3DModel`` at the toy width of the CogVideoX 1.0 dummy (no face branch)."""
    from diffusers import ConsisIDTransformer3DModel

    torch.manual_seed(seed)
    return ConsisIDTransformer3DModel(**_COGVIDEOX_TOY, num_layers=num_layers, max_text_seq_length=16,
                                      use_rotary_positional_embeddings=False).eval()


def dummy_cogvideox_pipeline(seed: int = 0):
    """``CogVideoXPipeline`` (1.0 layout) with a tiny T5 encoder and a 4-level CogVideoX VAE.

    Use ``max_sequence_length=16`` (the transformer's ``max_text_seq_length``).
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline

    tokenizer = dummy_tokenizer()
    text_encoder = dummy_t5_encoder(tokenizer, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                             transformer=dummy_cogvideox_transformer(seed), scheduler=CogVideoXDDIMScheduler())


def dummy_ltx_transformer(seed: int = 0, num_layers: int = 1):
    """``LTXVideoTransformer3DModel``: 2 heads × 8, cross-attention to 16-wide captions."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=num_layers, caption_channels=16,
    ).eval()


# diffusers' own LTX-2 test width; the Sana-WM refiner runs LTX-2's blocks, so its dummy shares it
_LTX2_TINY = dict(
    in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
    cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
    audio_attention_head_dim=4, audio_cross_attention_dim=8, qk_norm="rms_norm_across_heads", caption_channels=16,
    rope_double_precision=False)


def dummy_ltx2_transformer(seed: int = 0, num_layers: int = 2):
    """An ``LTX2VideoTransformer3DModel`` (video and audio streams) at diffusers' own test width."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(seed)
    return LTX2VideoTransformer3DModel(num_layers=num_layers, **_LTX2_TINY).eval()


def dummy_sana_wm_refiner_transformer(seed: int = 0, num_layers: int = 2):
    """A ``SanaWMLTX2RefinerTransformer3DModel`` (LTX-2's blocks, run video-only over a KV cache) at the width of
    :func:`dummy_ltx2_transformer`."""
    from diffusers import SanaWMLTX2RefinerTransformer3DModel

    torch.manual_seed(seed)
    return SanaWMLTX2RefinerTransformer3DModel(num_layers=num_layers, **_LTX2_TINY).eval()


def dummy_minimax_h3_transformer(seed: int = 0, num_layers: int = 2):
    """``MiniMaxH3Transformer3DModel`` at diffusers' own test width: 2 heads × 16 over a 24-wide residual stream
    (wider attention than stream, as in the real model), one text-refiner block, 12 of 16 head channels rotated."""
    from diffusers import MiniMaxH3Transformer3DModel

    torch.manual_seed(seed)
    return MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=num_layers, num_refiner_layers=1,
        ffn_dim=32, in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=16, freq_dim=8,
        time_embed_hidden_dim=24, time_embed_dim=16, rope_freq_dim=2).eval()


def dummy_mochi_transformer(seed: int = 0, num_layers: int = 2):
    """``MochiTransformer3DModel``: 2 heads × 8 (the last block's text stream is context-pre-only)."""
    from diffusers import MochiTransformer3DModel

    torch.manual_seed(seed)
    return MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=num_layers, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16,
    ).eval()


def dummy_cosmos_transformer(seed: int = 0, num_layers: int = 2):
    """``CosmosTransformer3DModel``: 2 heads × 12 (diffusers' own test size), patch 1×2×2; no padding-mask
    channel, whose resize needs torchvision."""
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(seed)
    return CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=num_layers,
        mlp_ratio=2, text_embed_dim=16, adaln_lora_dim=4, max_size=(8, 32, 32), patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False, extra_pos_embed_type="learnable",
    ).eval()


def dummy_hunyuan_video_framepack_transformer(seed: int = 0):
    """``HunyuanVideoFramepackTransformer3DModel``: ``dummy_hunyuan_video_transformer``'s size, with the image
    projection (16 wide) and the history patch embedders (diffusers' own test configuration)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None,
        has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True,
    ).eval()


def dummy_kandinsky5_transformer(seed: int = 0, num_layers: int = 2):
    """``Kandinsky5Transformer3DModel``: 2 heads × 16 (RoPE axes 4/6/6), one text block, Qwen-width text (16),
    CLIP-width pooled input (8), regular (dense) attention; random modulation."""
    from diffusers import Kandinsky5Transformer3DModel

    from diffusers.models.transformers.transformer_kandinsky import Kandinsky5Modulation

    torch.manual_seed(seed)
    model = Kandinsky5Transformer3DModel(in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8,
                                         time_dim=16, patch_size=(1, 2, 2), model_dim=32, ff_dim=32,
                                         num_text_blocks=1, num_visual_blocks=num_layers, axes_dims=(4, 6, 6))
    for module in model.modules():  # zero-initialised, which gates every attention's output to 0
        if isinstance(module, Kandinsky5Modulation):
            module.out_layer.reset_parameters()
    return model.eval()


def dummy_kandinsky6_transformer(seed: int = 0, num_layers: int = 2):
    """``Kandinsky6Transformer3DModel`` with the released checkpoints' flags (cross-modal RoPE and gates, fixed
    modulation): 2 heads × 16 for video and audio, one text block per stream, video conditioning channels."""
    from diffusers import Kandinsky6Transformer3DModel

    torch.manual_seed(seed)
    return Kandinsky6Transformer3DModel(in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8,
                                        time_dim=16, patch_size=(1, 2, 2), model_dim=32, ff_dim=32,
                                        num_text_blocks=1, num_visual_blocks=num_layers, axes_dims=(4, 6, 6),
                                        in_audio_dim=4, out_audio_dim=4, text_token_padding=True, ca_rope=True,
                                        cross_gates=True, fix_modulation=True).eval()


def dummy_allegro_transformer(seed: int = 0, num_layers: int = 2):
    """``AllegroTransformer3DModel``: 2 heads × 12 (its RoPE rotates three even thirds of the head: t, h, w),
    16-wide captions."""
    from diffusers import AllegroTransformer3DModel

    torch.manual_seed(seed)
    return AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, num_layers=num_layers,
        cross_attention_dim=24, sample_width=8, sample_height=8, sample_frames=8, caption_channels=16,
    ).eval()


def dummy_latte_transformer(seed: int = 0, num_layers: int = 2):
    """``LatteTransformer3DModel``: 2 heads × 8, spatial and temporal blocks, Wan-like inputs (16 latent
    channels, 32-wide captions), 3 frames (its temporal positions fix the count)."""
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(seed)
    return LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16, num_layers=num_layers,
        cross_attention_dim=16, sample_size=8, patch_size=2, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
        caption_channels=32, video_length=3,
    ).eval()


def dummy_easyanimate_transformer(seed: int = 0):
    """An ``EasyAnimateTransformer3DModel`` at toy width: one MM-DiT block, then one single-stream block, and a
    T5 prompt after the main one (head dim 16: its 3-D RoPE splits it 4 + 6 + 6)."""
    from diffusers import EasyAnimateTransformer3DModel

    torch.manual_seed(seed)
    return EasyAnimateTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                         patch_size=2, num_layers=2, mmdit_layers=1, time_embed_dim=16,
                                         text_embed_dim=16, text_embed_dim_t5=8).eval()
