"""Krea 2 (``Krea2Transformer2DModel``): a single-stream MMDiT, joint attention ``[text ; image]`` in
``transformer_blocks.N.attn``.

The model fuses the tapped text-encoder layers into one text sequence (``text_fusion``: attention across the
layer axis, then across the tokens, text-only, left alone), puts it before the packed image and masks padded
text keys from ``encoder_attention_mask``. ``Krea2AttnProcessor`` repeats the grouped key/value heads to the
query heads and calls ``dispatch_attention_fn``: fastdit takes the call there (the generic path), with the text
first. The text length is ``encoder_hidden_states``' (``[B, L, layers, C]``); the grid is read from the image
rows of ``position_ids`` (``(t, row, col)`` per token, the text's rows first).
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input

_self_attention = attention_in_blocks("attn", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    ids = forward_input(model, args, kwargs, "position_ids")
    if not isinstance(text, torch.Tensor) or not isinstance(ids, torch.Tensor) or ids.shape[0] <= text.shape[1]:
        return None
    image = ids[text.shape[1]:]
    frames, rows, cols = (int(image[:, axis].max() - image[:, axis].min()) + 1 for axis in range(3))
    return TokenGrid(frames, rows, cols, text_tokens=text.shape[1], text_position="before")


KREA2 = Family(
    name="krea2",
    model_classes=("Krea2Transformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # Krea2AttnProcessor dispatches: the generic path
    stock_processors=("Krea2AttnProcessor",),
    grid_inputs=("encoder_hidden_states", "position_ids"),
    text_position="before",
    models="Krea 2",
    sparsified="`transformer_blocks.N.attn` (joint, text first, padded text masked)",
    untouched="text fusion blocks",
    grid_rule="image rows of `position_ids`; text length from `encoder_hidden_states`",
)
