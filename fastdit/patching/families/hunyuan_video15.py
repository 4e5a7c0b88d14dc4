"""HunyuanVideo-1.5 (``HunyuanVideo15Transformer3DModel``): joint attention, ``[video ; conditioning]``, in
``transformer_blocks.N.attn``.

The conditioning tokens after the video are the image embedding's, ByT5's and the multimodal LLM's (valid ones
first, then the padding, which the model's key mask keeps masked): ``HunyuanVideo15AttnProcessor2_0`` appends
them and calls ``dispatch_attention_fn``, so fastdit takes the call there (the generic path). Their count is
read from the three forward inputs; the grid is ``hidden_states [B, C, F, H, W]`` divided by the patch. The
text token refiner (``context_embedder``) is text-only attention and is left alone.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, grid_with_conditioning

_CONDITIONING = ("encoder_hidden_states", "encoder_hidden_states_2", "image_embeds")


_self_attention = attention_in_blocks("attn", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return grid_with_conditioning(model, args, kwargs, patch, _CONDITIONING)


HUNYUAN_VIDEO15 = Family(
    name="hunyuan_video15",
    model_classes=("HunyuanVideo15Transformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # HunyuanVideo15AttnProcessor2_0 dispatches: the generic path
    stock_processors=("HunyuanVideo15AttnProcessor2_0",),
    grid_inputs=("hidden_states", *_CONDITIONING),
    models="HunyuanVideo-1.5",
    sparsified="`transformer_blocks.N.attn` (joint: video, then image, ByT5 and LLM tokens, padded ones masked)",
    untouched="text token refiner",
    grid_rule=("`hidden_states` ÷ patch; conditioning count from `encoder_hidden_states`, `encoder_hidden_states_2`, "
               "`image_embeds`"),
)
