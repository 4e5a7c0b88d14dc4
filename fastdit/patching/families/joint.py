"""The joint text+image attention of MM-DiT models whose stock processor calls SDPA itself: one processor for
SD3, AuraFlow, CogView4 and EasyAnimate, which differ only in where the text sits, where RoPE goes and what the
text output goes through; and the text length of models that give it only as the rest of the sequence.

The text stream is either projected by the module's own ``add_q/k/v_proj`` (the MM-DiT blocks) or, when the
module has none, joined with the image before ``to_q/k/v`` (CogView4, EasyAnimate's single-stream blocks). A call
without ``encoder_hidden_states`` is image-only (SD3.5's ``attn2``) or gets text and image already joined
(AuraFlow's single blocks): :attr:`JointSparseProcessor.joined_text` says which.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.patching.families.base import (Rotary, SparseProcessorMixin, added_projections, heads_first, heads_merged,
                                            qk_norm, qkv_projections, split_text)


def text_outside_grid(processor: SparseProcessorMixin, tokens: int) -> int:
    """The tokens of a joint sequence of ``tokens`` that are not the recorded grid's (0 without a grid), for
    models whose text length varies by call or by sample and is known only as the rest of the sequence."""
    grid = processor.grid
    return 0 if grid is None else max(tokens - grid.video_tokens, 0)


def joint_qkv(attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None,
              text_position: str) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k, v [B, H, S, D]`` of the joint sequence, text ``text_position`` the image, QK-normed as the stock
    processors do (over the whole sequence when the text shares the image's projections)."""
    def joined(image: Tensor, text: Tensor) -> Tensor:
        return torch.cat([text, image] if text_position == "before" else [image, text], dim=-2)

    if encoder_hidden_states is not None and attn.add_q_proj is None:
        hidden_states = joined(hidden_states, encoder_hidden_states)
    query, key, value = (heads_first(x, attn.heads) for x in qkv_projections(attn, hidden_states))
    query, key = qk_norm(attn, query, key)
    if encoder_hidden_states is None or attn.add_q_proj is None:
        return query, key, value
    text_q, text_k, text_v = (heads_first(x, attn.heads) for x in added_projections(attn, encoder_hidden_states))
    text_q, text_k = qk_norm(attn, text_q, text_k, added=True)
    return joined(query, text_q), joined(key, text_k), joined(value, text_v)


class JointSparseProcessor(SparseProcessorMixin):
    """Joint attention ``[image ; text]`` or ``[text ; image]``; a subclass sets the model's choices."""

    text_position = "after"  # where the model puts the text in the joint sequence
    joined_text = False  # a call without encoder_hidden_states holds the recorded text (True) or none (False)
    rope_unbind_dim = -1  # diffusers' ``use_real_unbind_dim`` for RoPE on the image part

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None,
                 image_rotary_emb: Rotary | None = None) -> Tensor | tuple[Tensor, Tensor]:
        query, key, value = joint_qkv(attn, hidden_states, encoder_hidden_states, self.text_position)
        text = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            image = slice(text, None) if self.text_position == "before" else slice(0, query.shape[2] - text)
            for x in (query, key):
                x[:, :, image] = apply_rotary_emb(x[:, :, image], image_rotary_emb,
                                                  use_real_unbind_dim=self.rope_unbind_dim)
        mask = self.mask(attention_mask, query, text)
        out = self.attend(query, key, value, attn_mask=mask, text_position=self.text_position,
                          text_tokens=None if encoder_hidden_states is None and self.joined_text else text)
        out = heads_merged(out).to(query.dtype)
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](out))
        out, text_out = split_text(out, text, self.text_position)
        return attn.to_out[1](attn.to_out[0](out)), self.text_output(attn, text_out)

    def mask(self, attention_mask: Tensor | None, query: Tensor, text: int) -> Tensor | None:
        """The SDPA mask of the call (the stock processors here take none)."""
        return None

    def text_output(self, attn: Module, text_out: Tensor) -> Tensor:
        """The text stream's attention output: through ``to_add_out`` where the module has one."""
        return text_out if attn.to_add_out is None else attn.to_add_out(text_out)
