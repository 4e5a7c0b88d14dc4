"""HiDream-I1 (``HiDreamImageTransformer2DModel``): double-stream, then single-stream blocks; ``[image ; text]``.

Every block's ``attn1`` (inside ``HiDreamBlock.block``) attends over the image, then the text: T5 and the last
Llama layer's tokens, then the block's own Llama layer's tokens, so ``t5 + 2 × llama`` tokens. A non-square
image is padded to ``max_resolution``'s token count (``model.max_seq``) before the text; the padding tokens
take part in attention (their keys are zeroed, not masked), so they count as text: dense, after the image.
Double-stream blocks get the text as ``encoder_hidden_states`` (their own ``*_t`` projections), single-stream
blocks already joined; both take the text length the pre-hook recorded. ``HiDreamAttnProcessor`` calls SDPA
itself: this processor replaces it. The grid is the latent ``[B, C, H, W]`` ÷ ``patch_size``; pre-patchified
``[B, S, C]`` inputs (with ``img_sizes``, possibly one per sample) run dense. Layers are numbered double blocks
first, then single blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, SparseProcessorMixin, forward_input, heads_merged, latent_grid


class HiDreamSparseProcessor(SparseProcessorMixin):
    """Replaces ``HiDreamAttnProcessor`` on every block's ``attn1``."""

    def __call__(self, attn: Module, hidden_states: Tensor, hidden_states_masks: Tensor | None = None,
                 encoder_hidden_states: Tensor | None = None,
                 image_rotary_emb: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        from diffusers.models.transformers.transformer_hidream_image import apply_rope

        dtype = hidden_states.dtype
        query = attn.q_rms_norm(attn.to_q(hidden_states)).to(dtype=dtype)
        key = attn.k_rms_norm(attn.to_k(hidden_states)).to(dtype=dtype)
        value = attn.to_v(hidden_states)
        if hidden_states_masks is not None:
            key = key * hidden_states_masks.view(key.shape[0], -1, 1)
        if not attn.single:
            image = query.shape[1]
            query = torch.cat([query, attn.q_rms_norm_t(attn.to_q_t(encoder_hidden_states)).to(dtype=dtype)], dim=1)
            key = torch.cat([key, attn.k_rms_norm_t(attn.to_k_t(encoder_hidden_states)).to(dtype=dtype)], dim=1)
            value = torch.cat([value, attn.to_v_t(encoder_hidden_states)], dim=1)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if query.shape[-1] == image_rotary_emb.shape[-3] * 2:
            query, key = apply_rope(query, key, image_rotary_emb)
        else:  # RoPE on the first half of each head
            (query, query_rest), (key, key_rest) = query.chunk(2, dim=-1), key.chunk(2, dim=-1)
            query, key = apply_rope(query, key, image_rotary_emb)
            query, key = torch.cat([query, query_rest], dim=-1), torch.cat([key, key_rest], dim=-1)

        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), text_tokens=None,
                          text_position="after")
        out = heads_merged(out).to(query.dtype)
        if attn.single:
            return attn.to_out(out)
        return attn.to_out(out[:, :image]), attn.to_out_t(out[:, image:])


def _self_attention(model):
    for i, wrapper in enumerate((*model.double_stream_blocks, *model.single_stream_blocks)):
        yield i, wrapper.block.attn1


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    t5 = forward_input(model, args, kwargs, "encoder_hidden_states_t5")
    llama = forward_input(model, args, kwargs, "encoder_hidden_states_llama3")
    if getattr(x, "ndim", 0) != 4 or t5 is None or llama is None:
        return None
    p = model.config.patch_size
    grid = latent_grid(x, (1, p, p))
    padding = model.max_seq - grid.h * grid.w if x.shape[-2] != x.shape[-1] else 0
    text = padding + t5.shape[1] + 2 * llama[0].shape[1]
    return TokenGrid(1, grid.h, grid.w, text_tokens=text, text_position="after")


HIDREAM = Family(
    name="hidream",
    model_classes=("HiDreamImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=HiDreamSparseProcessor,
    stock_processors=("HiDreamAttnProcessor",),
    timestep_arg="timesteps",
    grid_inputs=("hidden_states", "encoder_hidden_states_t5", "encoder_hidden_states_llama3"),
    models="HiDream-I1",
    sparsified="double- and single-stream `attn1` (joint, text after; a non-square image's padding counts as text)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch; text: padding + T5 + 2 × Llama",
)
