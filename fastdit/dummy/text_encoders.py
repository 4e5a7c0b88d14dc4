"""Dummy (random-weight) text encoders and tokenizers at toy width: T5/UMT5 and CLIP, as diffusers' pipelines
take them, built offline from a tiny corpus."""

from __future__ import annotations

from typing import Sequence

import torch

CORPUS = [
    "a cat walking on the grass in the sun",
    "a red car driving fast along a coastal road at sunset",
    "an astronaut riding a horse on the moon, cinematic lighting",
    "a dog playing with a ball in the park",
    "waves crashing on a rocky beach, slow motion, 4k",
    "a red ball bouncing in a white room",
]


def dummy_tokenizer(vocab_size: int = 256, model_max_length: int = 512, corpus: Sequence[str] = CORPUS):
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


def dummy_clip_tokenizer(vocab_size: int = 256, model_max_length: int = 77):
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


def dummy_clip_text_encoder(tokenizer, hidden_size: int = 32, seed: int = 0):
    """A 2-layer ``CLIPTextModel`` for ``tokenizer`` (EOS id set so the pooled output is read at the EOS)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
        hidden_act="gelu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )).eval()


def dummy_t5_encoder(tokenizer, d_model: int = 32, seed: int = 0, umt5: bool = False):
    """A 2-layer ``T5EncoderModel`` (or ``UMT5EncoderModel``) for ``tokenizer``."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    return model_cls(config_cls(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )).eval()
