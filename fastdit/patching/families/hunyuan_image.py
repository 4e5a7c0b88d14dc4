"""HunyuanImage 2.1 (``HunyuanImageTransformer2DModel``): joint attention, ``[image ; text]``, in
``transformer_blocks.N.attn`` and ``single_transformer_blocks.N.attn``, as in HunyuanVideo.

``HunyuanImageAttnProcessor`` appends the text (the LLM's tokens and, with a second text encoder, ByT5's)
after the image and calls ``dispatch_attention_fn`` with a key mask for padded tokens: fastdit takes the call
there (the generic path). The grid is ``hidden_states`` (``[B, C, H, W]``, or ``[B, C, F, H, W]``) divided by
``config.patch_size``. The text token refiner (``context_embedder``) is left alone.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, double_then_single, grid_with_conditioning


def _grid(model, args, kwargs) -> TokenGrid | None:
    patch = tuple(model.config.patch_size)
    patch = patch if len(patch) == 3 else (1, *patch)
    # ByT5's tokens join only when the model has its embedder
    text = ("encoder_hidden_states",) + (("encoder_hidden_states_2",) if model.context_embedder_2 is not None
                                         else ())
    return grid_with_conditioning(model, args, kwargs, patch, text)


HUNYUAN_IMAGE = Family(
    name="hunyuan_image",
    model_classes=("HunyuanImageTransformer2DModel",),
    self_attention=double_then_single,
    grid=_grid,
    processor=None,  # HunyuanImageAttnProcessor dispatches: the generic path
    stock_processors=("HunyuanImageAttnProcessor",),
    grid_inputs=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_2"),
    models="HunyuanImage 2.1",
    sparsified=("`transformer_blocks.N.attn`, `single_transformer_blocks.N.attn` (joint, text after; padded prompt "
                "keys stay masked)"),
    untouched="text token refiner",
    grid_rule="`hidden_states` ÷ patch; text length from `encoder_hidden_states` (and `encoder_hidden_states_2`)",
)
