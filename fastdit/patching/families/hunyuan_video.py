"""HunyuanVideo (``HunyuanVideoTransformer3DModel``): joint attention, ``[video ; text]``.

Double-stream blocks (``transformer_blocks.N.attn``) project the text with ``add_q/k/v_proj`` and append it
after the video; single-stream blocks (``single_transformer_blocks.N.attn``) receive video and text as two
tensors and concatenate them. ``HunyuanVideoAttnProcessor2_0`` calls ``dispatch_attention_fn``: fastdit takes
the call there (the generic path); the text length comes from the pre-hook (``encoder_hidden_states``), and
the model's key mask (``[B, 1, 1, S]`` bool, padded prompt tokens ``False``) goes to the engine, which keeps
those keys masked when it runs sparse. The text token refiner
(``context_embedder.token_refiner``) is text-only self-attention and is left alone. Layers are numbered
double blocks first, then single blocks.

HunyuanVideo-Framepack (``HunyuanVideoFramepackTransformer3DModel``) runs the same blocks and processor on
``[4× history ; 2× history ; clean latents ; video ; image ; text]``: its packed past goes before the video and
its conditioning after, so its grid puts non-video tokens around the video (``text_position="around"``); all of
them stay dense. For a batch of one the model drops the padded prompt tokens (fastdit counts the valid ones);
for larger batches it masks them.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, double_then_single, forward_input, grid_with_conditioning,
                                            history_tokens, latent_grid)

# Framepack's packed past: (latents, indices, stride of the patchify as a multiple of the patch)
_FRAMEPACK_HISTORY = (("latents_clean", "indices_latents_clean", 1),
                      ("latents_history_2x", "indices_latents_history_2x", 2),
                      ("latents_history_4x", "indices_latents_history_4x", 4))


def _grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    return grid_with_conditioning(model, args, kwargs, patch, ("encoder_hidden_states",))


def _framepack_grid(model, args, kwargs) -> TokenGrid | None:
    config = model.config
    patch = (config.patch_size_t, config.patch_size, config.patch_size)
    grid = latent_grid(forward_input(model, args, kwargs, "hidden_states"), patch)
    text, mask, image = (forward_input(model, args, kwargs, name)
                         for name in ("encoder_hidden_states", "encoder_attention_mask", "image_embeds"))
    if grid is None or not all(isinstance(x, torch.Tensor) for x in (text, mask, image)):
        return None
    prompt = int(mask[0].sum()) if text.shape[0] == 1 else text.shape[1]  # one sample: padding dropped
    history = history_tokens(model, args, kwargs, patch, _FRAMEPACK_HISTORY)
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=history + image.shape[1] + prompt,
                     text_position="around", text_before=history)


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

HUNYUAN_VIDEO_FRAMEPACK = Family(
    name="hunyuan_video_framepack",
    model_classes=("HunyuanVideoFramepackTransformer3DModel",),
    self_attention=double_then_single,
    grid=_framepack_grid,
    processor=None,  # HunyuanVideoAttnProcessor2_0 dispatches: the generic path
    grid_inputs=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "image_embeds",
                 *(name for entry in _FRAMEPACK_HISTORY for name in entry[:2])),
    stock_processors=("HunyuanVideoAttnProcessor2_0",),
    text_position="around",
    models="HunyuanVideo-Framepack; its packed history before the video and image and prompt after stay dense",
    sparsified="`transformer_blocks.N.attn`, `single_transformer_blocks.N.attn` (the video's tokens)",
    untouched="text token refiner",
    grid_rule=("`hidden_states` ÷ patch; history from `latents_clean`, `latents_history_2x/4x`; image and "
               "prompt from `image_embeds`, `encoder_hidden_states`"),
)
