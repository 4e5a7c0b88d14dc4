"""DreamLite (``DreamLiteUNetModel``): a mobile ``UNet2DConditionModel`` whose transformers are
``DreamLiteTransformer2DModel``; ``attn1`` in the levels built with self-attention.

It is laid out as the SD/SDXL UNet (:mod:`~fastdit.patching.families.unet`): self-attention (``attn1``) over the
pixels of each level, cross-attention to the prompt (``attn2``, untouched), and blocks built "no self-attention"
(``DreamLiteCrossAttnNoSelfAttn*Block2D``) have no ``attn1`` at all. Its attention has fewer key/value heads than
query heads (``num_kv_heads``, 1 by default) and RMS ``qk_norm``; ``DreamLiteAttnProcessor2_0`` repeats the key
and value heads up to the query heads itself and then calls ``dispatch_attention_fn``, so fastdit takes the call
there (the generic path) with as many key/value heads as query heads, and hands each call its level's grid from
the recorded input grid and the call's token count (:func:`~fastdit.patching.families.unet.level_grid`). There
are no text tokens in the self-attention.
"""

from __future__ import annotations

from fastdit.patching.families.base import Family
from fastdit.patching.families.unet import level_grid, level_self_attention, sample_grid, sample_size_tokens

DREAMLITE = Family(
    name="dreamlite",
    model_classes=("DreamLiteUNetModel",),
    self_attention=level_self_attention,
    grid=sample_grid,
    processor=None,
    stock_processors=("DreamLiteAttnProcessor2_0",),
    train_tokens=sample_size_tokens,
    grid_inputs=("sample",),
    call_grid=level_grid,
    models="DreamLite, its `DreamLiteTransformer2DModel`s",
    sparsified="every `attn1` of the down, mid and up blocks that have one, each on its own level grid",
    untouched="`attn2`",
    grid_rule="`sample [B,C,H,W]`; level l: `ceil(H/2^l) × ceil(W/2^l)`",
)
