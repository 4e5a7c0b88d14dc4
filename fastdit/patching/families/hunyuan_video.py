"""HunyuanVideo (``HunyuanVideoTransformer3DModel``): joint attention, ``[video ; text]``.

Double-stream blocks (``transformer_blocks.N.attn``) project the text with ``add_q/k/v_proj`` and append it
after the video; single-stream blocks (``single_transformer_blocks.N.attn``) receive video and text as two
tensors and concatenate them. ``HunyuanVideoAttnProcessor2_0`` calls ``dispatch_attention_fn``: fastdit takes
the call there (the generic path); the text length comes from the pre-hook (``encoder_hidden_states``), and
the model's key mask (``[B, 1, 1, S]`` bool, padded prompt tokens ``False``) goes to the engine, which keeps
those keys masked when it runs sparse. The text token refiner
(``context_embedder.token_refiner``) is text-only self-attention and is left alone. Layers are numbered
double blocks first, then single blocks.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, double_then_single, grid_with_conditioning


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return grid_with_conditioning(model, args, kwargs, patch, ("encoder_hidden_states",))


HUNYUAN_VIDEO = Family(
    name="hunyuan_video",
    model_classes=("HunyuanVideoTransformer3DModel",),
    self_attention=double_then_single,
    grid=_grid,
    processor=None,  # HunyuanVideoAttnProcessor2_0 dispatches: the generic path
    grid_inputs=("hidden_states", "encoder_hidden_states"),
    stock_processors=("HunyuanVideoAttnProcessor2_0",),
    models="HunyuanVideo",
    sparsified=("`transformer_blocks.N.attn`, `single_transformer_blocks.N.attn` (joint, text after video; padded "
                "prompt keys stay masked)"),
    untouched="text token refiner",
    grid_rule="`hidden_states` ÷ patch; text length from `encoder_hidden_states`",
)
