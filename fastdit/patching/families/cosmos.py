"""Cosmos (``CosmosTransformer3DModel``, Predict/Transfer 2 and 2.5): video self-attention in
``transformer_blocks.N.attn1``, text (and, for 2.5, image context) through ``attn2``.

``CosmosAttnProcessor2_0`` applies its norms and RoPE and calls ``dispatch_attention_fn`` without ``backend=``
(it always runs on the active backend), so fastdit takes the call one level down: the generic path wraps the
``dispatch_attention_fn`` that diffusers' Cosmos module imported, while a Cosmos model is patched, and hands it
each patched module's own call (see :mod:`fastdit.patching.dispatch`). The self-attention sequence is the video
alone, patchified ``(t, h, w)``-major, so there are no text tokens to keep dense.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


def _grid(model, args, kwargs) -> TokenGrid | None:
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), tuple(model.config.patch_size))


COSMOS = Family(
    name="cosmos",
    model_classes=("CosmosTransformer3DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=None,  # CosmosAttnProcessor2_0 dispatches (on the active backend): the generic path, wrapped
    stock_processors=("CosmosAttnProcessor2_0",),
    models="Cosmos Predict/Transfer 2 and 2.5",
    sparsified="`transformer_blocks.N.attn1`",
    untouched="`attn2`",
    grid_rule="`hidden_states [B,C,F,H,W]` ÷ `config.patch_size`",
)
