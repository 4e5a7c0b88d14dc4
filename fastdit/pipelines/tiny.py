"""Tiny random-weight diffusers pipelines, built offline in well under a second.

They exercise the exact code paths of the real models (same classes, same processors, same token order) at
toy sizes, so tests and the bundled demo model need no download. Their output is noise, not video.
"""

from __future__ import annotations

import torch

CORPUS = [
    "a cat walking on the grass in the sun",
    "a red car driving fast along a coastal road at sunset",
    "an astronaut riding a horse on the moon, cinematic lighting",
    "a dog playing with a ball in the park",
    "waves crashing on a rocky beach, slow motion, 4k",
    "a red ball bouncing in a white room",
]


def build_tokenizer(vocab_size: int = 256, model_max_length: int = 512):
    """A small BPE tokenizer trained in memory, wrapped as a T5-style ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length, padding_side="right")


def build_tiny_wan_transformer(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12):
    """A ``WanTransformer3DModel`` with the real architecture at toy width (diffusers' fast-test config)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def build_tiny_wan_pipeline(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12):
    """A text-to-video ``WanPipeline`` (UMT5 text encoder, Wan VAE, flow-matching scheduler), random weights."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    transformer = build_tiny_wan_transformer(seed, num_layers, heads, head_dim)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
