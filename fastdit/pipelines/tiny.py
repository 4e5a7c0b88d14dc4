"""Tiny random-weight diffusers pipelines, built offline in well under a second.

They exercise the exact code paths of the real models (same classes, same processors, same token order) at
toy sizes, so tests and the bundled demo model need no download. Their output is noise, not video.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

CORPUS = [
    "a cat walking on the grass in the sun",
    "a red car driving fast along a coastal road at sunset",
    "an astronaut riding a horse on the moon, cinematic lighting",
    "a dog playing with a ball in the park",
    "waves crashing on a rocky beach, slow motion, 4k",
    "a red ball bouncing in a white room",
]


def build_tokenizer(vocab_size: int = 256, model_max_length: int = 512, corpus: Sequence[str] = CORPUS):
    """A small BPE tokenizer trained in memory on ``corpus``, wrapped as a T5-style ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length, padding_side="right")


def build_clip_tokenizer(vocab_size: int = 256, model_max_length: int = 77):
    """A small BPE tokenizer with CLIP's start/end tokens (end doubles as padding, as in CLIP)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE(unk_token=eos))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[bos, eos],
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=eos,
                                   pad_token=eos, model_max_length=model_max_length)


def build_tiny_clip_text_encoder(tokenizer, hidden_size: int = 32, seed: int = 0):
    """A 2-layer ``CLIPTextModel`` for ``tokenizer`` (EOS id set so the pooled output is read at the EOS)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
        hidden_act="gelu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )).eval()


def build_tiny_t5_encoder(tokenizer, d_model: int = 32, seed: int = 0, umt5: bool = False):
    """A 2-layer ``T5EncoderModel`` (or ``UMT5EncoderModel``) for ``tokenizer``."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    return model_cls(config_cls(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )).eval()


def build_tiny_wan_transformer(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12, *,
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


def build_tiny_wan_pipeline(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12,
                            **transformer_options: Any):
    """A text-to-video ``WanPipeline`` (UMT5 text encoder, Wan VAE, flow-matching scheduler), random weights.

    ``transformer_options`` go to :func:`build_tiny_wan_transformer` (``ffn_dim``, ``patch_size``, ...).
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer = build_tokenizer()
    text_encoder = build_tiny_t5_encoder(tokenizer, seed=seed, umt5=True)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    transformer = build_tiny_wan_transformer(seed, num_layers, heads, head_dim, **transformer_options)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)


def build_tiny_wan_i2v_transformer(seed: int = 0, num_layers: int = 2, image_dim: int = 4):
    """A Wan 2.1 image-to-video transformer: the image's CLIP tokens enter ``attn2`` through its added K/V
    (``encoder_hidden_states_image [B, N, image_dim]``), and the latent has 36 channels (noise + image + mask)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim, added_kv_proj_dim=24,
    ).eval()


def build_tiny_wan22_pipeline(seed: int = 0, boundary_ratio: float = 0.875):
    """A Wan 2.2 A14B-style ``WanPipeline``: two experts, ``transformer`` for the high-noise steps (timesteps at
    or above ``boundary_ratio`` of the schedule) and ``transformer_2`` for the rest."""
    from diffusers import WanPipeline

    pipe = build_tiny_wan_pipeline(seed)
    return WanPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                       scheduler=pipe.scheduler, transformer=pipe.transformer,
                       transformer_2=build_tiny_wan_transformer(seed + 1), boundary_ratio=boundary_ratio)
