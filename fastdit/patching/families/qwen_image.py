"""Qwen-Image (``QwenImageTransformer2DModel``): joint attention, ``[text ; image]``, in
``transformer_blocks.N.attn``.

``QwenDoubleStreamAttnProcessor2_0`` projects both streams, applies RoPE, joins text before the image and
calls ``dispatch_attention_fn`` with a key mask built from ``encoder_hidden_states_mask``: fastdit takes the
call there (the generic path). The image arrives packed (``[B, S, C]``); its token grid is the forward
argument ``img_shapes`` (one ``(frames, rows, cols)`` per image of each sample), and the text length is
``encoder_hidden_states``'. A sample with more than one image (Qwen-Image-Edit's reference images, appended
after the target) has non-video tokens on both sides of the target; fastdit doesn't map those yet, so such a
call runs dense on the user's backend and ``stats`` says "no grid".
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input


_self_attention = attention_in_blocks("attn", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    shapes = forward_input(model, args, kwargs, "img_shapes")
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if shapes is None or not isinstance(text, torch.Tensor):
        return None
    try:  # [B][images](frames, rows, cols); a traced call hands it over as a tensor
        table = torch.as_tensor(shapes, dtype=torch.int64).reshape(-1, 3)
    except (TypeError, ValueError, RuntimeError):
        return None  # samples with different numbers of images
    batch = text.shape[0]
    if table.shape[0] != batch or not bool((table == table[:1]).all()):
        return None  # reference images beside the target, or samples of different sizes
    frames, rows, cols = (int(n) for n in table[0])
    return TokenGrid(frames, rows, cols, text_tokens=text.shape[1], text_position="before")


QWEN_IMAGE = Family(
    name="qwen_image",
    model_classes=("QwenImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # QwenDoubleStreamAttnProcessor2_0 dispatches: the generic path
    stock_processors=("QwenDoubleStreamAttnProcessor2_0",),
    grid_inputs=("img_shapes", "encoder_hidden_states"),
    text_position="before",
    models="Qwen-Image; one image per sample: edit calls with reference images run dense",
    sparsified="`transformer_blocks.N.attn` (joint, text first)",
    grid_rule="forward arg `img_shapes`; text length from `encoder_hidden_states`",
)
