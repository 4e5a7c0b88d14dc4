"""AuraFlow (``AuraFlowTransformer2DModel``): MM-DiT blocks, then single-stream DiT blocks; ``[text ; image]``.

The model puts 8 learned register tokens before the prompt; together they are the text, first in the sequence.
``joint_transformer_blocks.N.attn`` gets them as ``encoder_hidden_states`` (own ``add_q/k/v_proj``);
``single_transformer_blocks.N.attn`` gets text and image already joined, so the pre-hook records the text length
(``register_tokens`` + prompt). ``AuraFlowAttnProcessor2_0`` calls SDPA itself: the shared joint processor
replaces it. The grid is the latent ``[B, C, H, W]`` ÷ ``patch_size``; no RoPE, no mask. Layers are numbered
joint blocks first, then single blocks.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid
from fastdit.patching.families.joint import JointSparseProcessor


class AuraFlowSparseProcessor(JointSparseProcessor):
    """Replaces ``AuraFlowAttnProcessor2_0`` on the joint and single blocks' ``attn``."""

    text_position = "before"
    joined_text = True


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))
    prompt = forward_input(model, args, kwargs, "encoder_hidden_states")
    if grid is None or not isinstance(prompt, torch.Tensor):
        return None
    text = model.register_tokens.shape[1] + prompt.shape[1]
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=text, text_position="before")


AURAFLOW = Family(
    name="auraflow",
    model_classes=("AuraFlowTransformer2DModel",),
    self_attention=attention_in_blocks("attn", "joint_transformer_blocks", "single_transformer_blocks"),
    grid=_grid,
    processor=AuraFlowSparseProcessor,
    stock_processors=("AuraFlowAttnProcessor2_0",),
    grid_inputs=("hidden_states", "encoder_hidden_states"),
    models="AuraFlow",
    sparsified="joint and single blocks' `attn` (text and 8 register tokens first)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch; text: registers + prompt",
)
