"""Helios (``HeliosTransformer3DModel``): long-video generation on Wan's blocks, with the past as context; video
self-attention in ``blocks.N.attn1``.

Before the video tokens the model puts its history: the short-range latents patchified like the video, the
mid-range ones at twice the patch and the long-range ones at four times (each only when its latents and
indices are given). fastdit keeps those history tokens dense, as it does text (every query attends them and
they attend everything), and sparsifies the video's own attention; ``HeliosAttnProcessor`` calls
``dispatch_attention_fn``, so fastdit takes the call there (the generic path). Text enters through ``attn2``.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, history_tokens, latent_grid

# (latents, indices, stride of the patchify as a multiple of the patch): short, mid, long range
_HISTORY = (("latents_history_short", "indices_latents_history_short", 1),
            ("latents_history_mid", "indices_latents_history_mid", 2),
            ("latents_history_long", "indices_latents_history_long", 4))


_self_attention = attention_in_blocks("attn1", "blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    patch = tuple(model.config.patch_size)
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch)
    if grid is None:
        return None
    history = history_tokens(model, args, kwargs, patch, _HISTORY)
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=history, text_position="before")


HELIOS = Family(
    name="helios",
    model_classes=("HeliosTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # HeliosAttnProcessor dispatches: the generic path
    stock_processors=("HeliosAttnProcessor",),
    grid_inputs=("hidden_states", *(name for entry in _HISTORY for name in entry[:2])),
    text_position="before",
    context_parallel_joined=True,  # its plan splits [history ; video] at attn1 in one piece
    models="Helios; its short-, mid- and long-range history tokens before the video stay dense",
    sparsified="`blocks.N.attn1` (the video's tokens)",
    untouched="`attn2`",
    grid_rule="`hidden_states [B,C,F,H,W]` ÷ `config.patch_size`; history count from the `latents_history_*` inputs",
)
