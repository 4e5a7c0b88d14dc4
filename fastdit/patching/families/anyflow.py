"""AnyFlow (``AnyFlowTransformer3DModel``): bidirectional flow-map video model on Wan's blocks; video
self-attention in ``blocks.N.attn1``.

The latent arrives frames first, ``[B, F, C, H, W]`` (per-frame latents, with a timestep per frame), and is
patchified by ``config.patch_size``; ``AnyFlowAttnProcessor`` calls ``dispatch_attention_fn``, so fastdit takes
the call there (the generic path). Text enters through ``attn2``, left untouched. The causal variant
(``AnyFlowFARTransformer3DModel``) attends with a frame-causal rule of its own and is not covered.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


_self_attention = attention_in_blocks("attn1", "blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, tuple(model.config.patch_size), frames_dim=1) if getattr(x, "ndim", 0) == 5 else None


ANYFLOW = Family(
    name="anyflow",
    model_classes=("AnyFlowTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # AnyFlowAttnProcessor dispatches: the generic path
    stock_processors=("AnyFlowAttnProcessor",),
    models="AnyFlow, bidirectional; the causal FAR variant is not covered",
    sparsified="`blocks.N.attn1`",
    untouched="`attn2`",
    grid_rule="`hidden_states [B,F,C,H,W]` ÷ `config.patch_size`",
)
