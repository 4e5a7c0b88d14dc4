"""Bria FIBO 2 (``BriaFibo2Transformer2DModel``): Z-Image's single-stream blocks over ``[gist ; image]``,
self-attention in ``layers.N.attention``.

A Perceiver squeezes the prompt into gist tokens (their number grows with the prompt's length, see diffusers'
``compute_gist_count``), which the model puts before the image; fastdit keeps them dense, as it does text, and
counts them from ``encoder_hidden_states`` (and ``encoder_attention_mask``) like the model. ``BriaFibo2AttnProcessor``
calls ``dispatch_attention_fn``: fastdit takes the call there (the generic path). The injection blocks'
``cross_attention`` and the Perceiver's own attentions (over gist tokens only) are untouched, and so is the noise
refiner (``noise_refiner.N.attention``, over the image alone: a text count of 0 where the main blocks' is the gist
count, and fastdit has one count per call). Two layouts fastdit doesn't map run dense: an edit call
(``context_latents``, whose tokens follow the image while the gist precedes it: "grid mismatch") and a batch whose
prompts get different gist counts (the model then puts the gist after the image: "no grid").
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


def _gist_count(model, text: torch.Tensor, mask: torch.Tensor | None) -> int | None:
    """The gist tokens of every sample when all samples get the same number (``None`` when they don't)."""
    from diffusers.models.transformers.transformer_bria_fibo2 import compute_gist_count

    cfg = model.config
    lengths = mask.sum(dim=1).tolist() if isinstance(mask, torch.Tensor) else [text.shape[2]] * text.shape[0]
    counts = set(compute_gist_count(lengths, min_gist=cfg.min_num_gist_tokens, max_gist=cfg.max_num_gist_tokens,
                                    gist_step=cfg.gist_step, min_text_len=cfg.gist_min_text_len,
                                    max_text_len=cfg.gist_max_text_len))
    return counts.pop() if len(counts) == 1 else None


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if grid is None or not isinstance(text, torch.Tensor):
        return None
    gist = _gist_count(model, text, forward_input(model, args, kwargs, "encoder_attention_mask"))
    if gist is None:
        return None
    return TokenGrid(1, grid.h, grid.w, text_tokens=gist, text_position="before")


BRIA_FIBO2 = Family(
    name="bria_fibo2",
    model_classes=("BriaFibo2Transformer2DModel",),
    self_attention=attention_in_blocks("attention", "layers"),
    grid=_grid,
    processor=None,  # BriaFibo2AttnProcessor dispatches: the generic path
    stock_processors=("BriaFibo2AttnProcessor",),
    grid_inputs=("hidden_states", "encoder_hidden_states", "encoder_attention_mask"),
    text_position="before",
    models="Bria FIBO 2; its gist tokens before the image stay dense; edit calls and batches of unequal gist "
           "counts run dense",
    sparsified="`layers.N.attention` (gist tokens first)",
    untouched="`noise_refiner`, `cross_attention`, the Perceiver",
    grid_rule="`hidden_states [B,C,H,W]` ÷ `config.patch_size`; gist count from the prompt's length, as the model "
              "computes it",
)
