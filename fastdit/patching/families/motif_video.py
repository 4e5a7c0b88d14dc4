"""Motif-Video (``MotifVideoTransformer3DModel``): joint attention, ``[video ; image ; text]``, in
``transformer_blocks.N.attn`` and ``single_transformer_blocks.N.attn``, as in HunyuanVideo.

``MotifVideoAttnProcessor2_0`` appends the conditioning (the image embedding's tokens, when given, then the
text) after the video and calls ``dispatch_attention_fn`` with a key mask for padded prompt tokens: fastdit
takes the call there (the generic path). The grid is ``hidden_states [B, C, F, H, W]`` divided by the patch.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, double_then_single, grid_with_conditioning


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return grid_with_conditioning(model, args, kwargs, patch, ("image_embeds", "encoder_hidden_states"))


MOTIF_VIDEO = Family(
    name="motif_video",
    model_classes=("MotifVideoTransformer3DModel",),
    self_attention=double_then_single,
    grid=_grid,
    processor=None,  # MotifVideoAttnProcessor2_0 dispatches: the generic path
    stock_processors=("MotifVideoAttnProcessor2_0",),
    grid_inputs=("hidden_states", "image_embeds", "encoder_hidden_states"),
    models="Motif-Video",
    sparsified=("`transformer_blocks.N.attn`, `single_transformer_blocks.N.attn` (joint: video, then image and text "
                "tokens, padded ones masked)"),
    grid_rule="`hidden_states` ÷ patch; conditioning count from `image_embeds`, `encoder_hidden_states`",
)
