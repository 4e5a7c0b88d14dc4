"""PRX (``PRXTransformer2DModel``): image self-attention with the prompt as extra keys, in
``blocks.N.attention``.

``PRXAttnProcessor2_0`` projects q, k, v of the image and k, v of the text, and lets the image queries attend
``[text ; image]`` keys (the text has no queries: ``text_keys_only``), with a key mask for the padded prompt,
through ``dispatch_attention_fn``: fastdit takes the call there (the generic path) and keeps the text keys
dense. The image is patchified row-major from ``hidden_states [B, C, H, W]``.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


def _grid(model, args, kwargs) -> TokenGrid | None:
    patch = model.config.patch_size
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, patch, patch))
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if grid is None or not isinstance(text, torch.Tensor):
        return None
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=text.shape[1], text_position="before")


PRX = Family(
    name="prx",
    model_classes=("PRXTransformer2DModel",),
    self_attention=attention_in_blocks("attention", "blocks"),
    grid=_grid,
    processor=None,  # PRXAttnProcessor2_0 dispatches: the generic path
    stock_processors=("PRXAttnProcessor2_0",),
    grid_inputs=("hidden_states", "encoder_hidden_states"),
    text_position="before",
    text_keys_only=True,
    models="PRX; the image queries attend the prompt's keys (kept dense), then the image's",
    sparsified="`blocks.N.attention` (image queries; text keys before the image's)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ `config.patch_size`; text length from `encoder_hidden_states`",
)
