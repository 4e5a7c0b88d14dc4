"""Mochi 1 (``MochiTransformer3DModel``): joint attention, ``[video ; valid text]``, one sample at a time.

``MochiAttnProcessor2_0`` drops each sample's padded prompt tokens (``attention_mask [B, L]``) and runs
attention per sample, zero-padding the output back; this processor does the same, so each sample reaches the
engine with its own text length and no mask. ``MochiAttention`` has no ``set_processor`` and the model no
``attn_processors``: the processor is assigned directly. The grid is the latent ``[B, C, F, H, W]`` with a
spatial-only patch (``patch_size``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, Rotary, SparseProcessorMixin, added_projections,
                                            attention_in_blocks, forward_input, latent_grid, qk_norm, qkv_projections)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Mochi's RoPE on interleaved pairs of ``x [B, S, H, D]``, computed in fp32 as the stock processor does."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    real = (even * cos - odd * sin).to(x.dtype)
    imag = (even * sin + odd * cos).to(x.dtype)
    return torch.stack([real, imag], dim=-1).flatten(-2)


class MochiSparseProcessor(SparseProcessorMixin):
    """Replaces ``MochiAttnProcessor2_0`` on ``transformer_blocks.N.attn1``."""

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor,
                 attention_mask: Tensor, image_rotary_emb: Rotary | None = None) -> tuple[Tensor, Tensor]:
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)
        text_q, text_k, text_v = (x.unflatten(2, (attn.heads, -1))
                                  for x in added_projections(attn, encoder_hidden_states))
        text_q, text_k = qk_norm(attn, text_q, text_k, added=True)
        if image_rotary_emb is not None:
            query, key = _apply_rope(query, *image_rotary_emb), _apply_rope(key, *image_rotary_emb)
        query, key, value, text_q, text_k, text_v = (x.transpose(1, 2) for x in
                                                     (query, key, value, text_q, text_k, text_v))
        video_len, text_len = query.size(2), text_q.size(2)
        outputs = []
        for i in range(query.shape[0]):
            valid = torch.nonzero(attention_mask[i][None, :].flatten(), as_tuple=False).flatten()
            q, k, v = (torch.cat([x[i:i + 1], t[i:i + 1, :, valid, :]], dim=2)
                       for x, t in ((query, text_q), (key, text_k), (value, text_v)))
            out = self.attend(q, k, v, text_tokens=valid.numel(), text_position="after")
            outputs.append(F.pad(out, (0, 0, 0, video_len + text_len - out.size(2))))
        out = torch.cat(outputs, dim=0).transpose(1, 2).flatten(2, 3)
        out, text_out = out.split_with_sizes((video_len, text_len), dim=1)
        out = attn.to_out[1](attn.to_out[0](out))
        if hasattr(attn, "to_add_out"):
            text_out = attn.to_add_out(text_out)
        return out, text_out


_self_attention = attention_in_blocks("attn1", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))


MOCHI = Family(
    name="mochi",
    model_classes=("MochiTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=MochiSparseProcessor,
    stock_processors=("MochiAttnProcessor2_0",),
    models="Mochi 1",
    sparsified=("`transformer_blocks.N.attn1` (joint; padded prompt tokens dropped per sample, as the stock processor "
                "does)"),
    grid_rule="`hidden_states` ÷ patch",
)
