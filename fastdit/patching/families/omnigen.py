"""OmniGen (``OmniGenTransformer2DModel``): one self-attention over ``[conditioning ; time token ; image]``.

``layers.N.self_attn`` attends over the multimodal prompt (text ids with input-image tokens spliced in, left-padded
to the batch's longest), the time token, then the output image. The pipeline's mask ``[B, S, S]`` is not a padding
mask: the conditioning is causal and blind to the image, while every image query sees every valid token. So the
image queries run through the engine with their own (shared) mask row, a key-padding mask, with everything before
the image as dense text; the conditioning queries are then recomputed densely over the conditioning keys alone,
with their own mask, which is what the stock processor computes for them. Padding queries see the image, but no
other token reads them, so their outputs may differ without changing the model's. A mask of another shape goes
to the engine whole and runs dense. The text length is the call's tokens minus the grid's.
``OmniGenAttnProcessor2_0`` calls SDPA itself. The grid is the latent ``[B, C, H, W]`` ÷ ``patch_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, SparseProcessorMixin, attention_in_blocks, forward_input, latent_grid
from fastdit.patching.families.joint import text_outside_grid


def split_mask(mask: Tensor | None, text: int) -> tuple[Tensor | None, Tensor | None]:
    """``(image queries' mask row, conditioning queries' own mask)`` for a ``[B, 1, S, S]`` mask of OmniGen's
    shape (every image query sees the same keys, and a conditioning query that sees image keys is read by no
    other token), else ``(mask, None)``."""
    if mask is None or not text or mask.ndim != 4 or mask.shape[1] != 1:
        return mask, None
    image_row = mask[:, :, -1:]
    visible = mask[:, 0] > torch.finfo(mask.dtype).min / 2 if mask.is_floating_point() else mask[:, 0]
    leaky = visible[:, :text, text:].any(-1)  # [B, text] conditioning queries that see the image
    others = torch.cat([~leaky, leaky.new_ones(leaky.shape[0], mask.shape[-2] - text)], dim=1)
    read = (visible[:, :, :text] & leaky[:, None, :] & others[:, :, None]).any()
    if read or not bool((mask[:, :, text:] == image_row).all()):
        return mask, None
    return image_row, mask[:, :, :text, :text]


class OmniGenSparseProcessor(SparseProcessorMixin):
    """Replaces ``OmniGenAttnProcessor2_0`` on ``layers.N.self_attn``."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor,
                 attention_mask: Tensor | None = None, image_rotary_emb: Tensor | None = None) -> Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query, key, value = (x.unflatten(2, (-1, head_dim)).transpose(1, 2) for x in
                             (query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real_unbind_dim=-2)
        text = text_outside_grid(self, query.shape[2])
        image_mask, text_mask = split_mask(attention_mask, text)
        out = self.attend(query, key, value, attn_mask=image_mask, text_tokens=text, text_position="before")
        if text_mask is not None:
            out[:, :, :text] = F.scaled_dot_product_attention(query[:, :, :text], key[:, :, :text],
                                                              value[:, :, :text], attn_mask=text_mask)
        out = out.transpose(1, 2).type_as(query).reshape(*hidden_states.shape[:2], attn.out_dim)
        return attn.to_out[0](out)


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))


OMNIGEN = Family(
    name="omnigen",
    model_classes=("OmniGenTransformer2DModel",),
    self_attention=attention_in_blocks("self_attn", "layers"),
    grid=_grid,
    processor=OmniGenSparseProcessor,
    stock_processors=("OmniGenAttnProcessor2_0",),
    models="OmniGen v1",
    sparsified="`layers.N.self_attn` (the image's queries; the causal prompt and time token first, dense)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch; text: the call's tokens minus the grid's",
)
