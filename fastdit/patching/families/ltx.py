"""LTX-Video (``LTXVideoTransformer3DModel``): video self-attention in ``transformer_blocks.N.attn1``.

The latent arrives already packed (``[B, S, C]``); the pipeline passes the token grid as the forward
arguments ``num_frames``, ``height`` and ``width``, which is where the grid is read. Text enters through
``attn2`` (cross-attention with a padding bias), which stays untouched. ``LTXVideoAttnProcessor`` calls
``dispatch_attention_fn``: fastdit takes the call there (the generic path).
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, forward_input


def _self_attention(model):
    for i, block in enumerate(model.transformer_blocks):
        yield i, block.attn1


def _grid(model, args, kwargs) -> TokenGrid | None:
    sizes = [forward_input(model, args, kwargs, name) for name in ("num_frames", "height", "width")]
    if any(not isinstance(s, int) or s < 1 for s in sizes):
        return None
    return TokenGrid(*sizes)


LTX = Family(
    name="ltx",
    model_classes=("LTXVideoTransformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # LTXVideoAttnProcessor dispatches: the generic path
    stock_processors=("LTXVideoAttnProcessor",),
    grid_inputs=("num_frames", "height", "width"),
)
