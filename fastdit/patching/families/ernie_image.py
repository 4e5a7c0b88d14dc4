"""ERNIE-Image (``ErnieImageTransformer2DModel``): single-stream joint attention, ``[image ; text]``, in
``layers.N.self_attention``.

The model joins the patchified image and the projected text (``text_bth``, padded to its longest prompt) into
one sequence, image first, and masks the padded text keys from ``text_lens``.
``ErnieImageSingleStreamAttnProcessor`` calls ``dispatch_attention_fn``: fastdit takes the call there (the
generic path), with the text after the image. The grid is ``hidden_states [B, C, H, W]`` divided by
``config.patch_size``; the text length is ``text_bth``'s.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, grid_with_conditioning

_self_attention = attention_in_blocks("self_attention", "layers")


def _grid(model, args, kwargs) -> TokenGrid | None:
    patch = model.config.patch_size
    return grid_with_conditioning(model, args, kwargs, (1, patch, patch), ("text_bth",))


ERNIE_IMAGE = Family(
    name="ernie_image",
    model_classes=("ErnieImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # ErnieImageSingleStreamAttnProcessor dispatches: the generic path
    stock_processors=("ErnieImageSingleStreamAttnProcessor",),
    grid_inputs=("hidden_states", "text_bth"),
    models="ERNIE-Image",
    sparsified="`layers.N.self_attention` (joint, text after, padded text masked)",
    grid_rule="`hidden_states [B,C,H,W]` ÷ patch; text length from `text_bth`",
)
