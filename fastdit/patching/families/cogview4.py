"""CogView4 (``CogView4Transformer2DModel``): joint attention, ``[text ; image]``.

``transformer_blocks.N.attn1`` joins the prompt (first) and the image before its ``to_q/k/v`` and applies RoPE
to the image part only; it returns ``(image, text)``, both through ``to_out``. ``CogView4AttnProcessor`` calls
SDPA itself: the shared joint processor replaces it. A text ``attention_mask [B, L]`` becomes, as in the stock
processor, an additive 0/1 bias over the whole sequence (not a padding mask), so such calls run dense; the
pipeline passes none. The grid is the latent ``[B, C, H, W]`` ÷ ``patch_size``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid
from fastdit.patching.families.joint import JointSparseProcessor


class CogView4SparseProcessor(JointSparseProcessor):
    """Replaces ``CogView4AttnProcessor`` on ``transformer_blocks.N.attn1``."""

    text_position = "before"
    rope_unbind_dim = -2

    def mask(self, attention_mask: Tensor | None, query: Tensor, text: int) -> Tensor | None:
        """The stock processor's mask: the outer product of ``[text mask ; ones]`` with itself, as an additive
        float (kept as diffusers builds it, so dense stays the stock processor)."""
        if attention_mask is None:
            return None
        joint = torch.ones(query.shape[0], query.shape[2], device=query.device)
        joint[:, :text] = attention_mask.float().to(query.device)
        joint = joint.unsqueeze(2)
        return ((joint @ joint.transpose(1, 2)) > 0).unsqueeze(1).to(query.dtype)

    def text_output(self, attn: Module, text_out: Tensor) -> Tensor:
        """CogView4 projects the text output with ``to_out`` too."""
        return attn.to_out[1](attn.to_out[0](text_out))


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))


COGVIEW4 = Family(
    name="cogview4",
    model_classes=("CogView4Transformer2DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=CogView4SparseProcessor,
    stock_processors=("CogView4AttnProcessor",),
    models="CogView4",
    sparsified="`transformer_blocks.N.attn1` (joint, text first)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch",
)
