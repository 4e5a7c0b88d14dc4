"""Qwen-Image (``QwenImageTransformer2DModel``): joint attention, ``[text ; image]``, in
``transformer_blocks.N.attn``.

``QwenDoubleStreamAttnProcessor2_0`` projects both streams, applies RoPE, joins text before the image and
calls ``dispatch_attention_fn`` with a key mask built from ``encoder_hidden_states_mask``: fastdit takes the
call there (the generic path). The image arrives packed (``[B, S, C]``); its token grid is the forward
argument ``img_shapes`` (one ``(frames, rows, cols)`` per image of each sample), and the text length is
``encoder_hidden_states``'. Qwen-Image-Edit appends its reference images after the target, so the target has
text before it and references after it (``text_position="around"``): both stay dense, the target's own
attention is sparse. Samples of different sizes run dense ("no grid").

Nucleus-MoE-Image (``NucleusMoEImageTransformer2DModel``) reads its grid the same way, but its text enters the
self-attention of ``transformer_blocks.N.attn`` as keys and values only: the image queries attend ``[image ;
text]`` keys (the text's own keys may come from a cache) and the text has no queries there
(``text_keys_only``); ``NucleusMoEAttnProcessor2_0`` dispatches with the key mask of the padded prompt.
"""

from __future__ import annotations

import functools

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input


_self_attention = attention_in_blocks("attn", "transformer_blocks")


def _image_grid(model, args, kwargs, text_position: str) -> TokenGrid | None:
    """The grid of the first image of forward arg ``img_shapes`` (the one being generated), with
    ``encoder_hidden_states``' tokens ``"around"`` it (before, with any further images' tokens — references,
    which the model appends after the first — after it), or ``"after"`` it (one image per sample only)."""
    shapes = forward_input(model, args, kwargs, "img_shapes")
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if shapes is None or not isinstance(text, torch.Tensor):
        return None
    try:  # [B][images](frames, rows, cols); a traced call hands it over as a tensor
        table = torch.as_tensor(shapes, dtype=torch.int64).reshape(text.shape[0], -1, 3)
    except (TypeError, ValueError, RuntimeError):
        return None  # samples with different numbers of images
    if not bool((table == table[:1]).all()):
        return None  # samples of different sizes
    frames, rows, cols = (int(n) for n in table[0, 0])
    references = int(table[0, 1:].prod(-1).sum())
    if text_position == "after":
        return None if references else TokenGrid(frames, rows, cols, text_tokens=text.shape[1])
    return TokenGrid(frames, rows, cols, text_tokens=text.shape[1] + references, text_position="around",
                     text_before=text.shape[1])


QWEN_IMAGE = Family(
    name="qwen_image",
    model_classes=("QwenImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=functools.partial(_image_grid, text_position="around"),
    processor=None,  # QwenDoubleStreamAttnProcessor2_0 dispatches: the generic path
    stock_processors=("QwenDoubleStreamAttnProcessor2_0",),
    grid_inputs=("img_shapes", "encoder_hidden_states"),
    text_position="around",
    models="Qwen-Image, Qwen-Image-Edit (its reference images after the target stay dense)",
    sparsified="`transformer_blocks.N.attn` (joint: text, target, references)",
    grid_rule="forward arg `img_shapes` (first image); text from `encoder_hidden_states`, references from the rest",
)

NUCLEUS_MOE_IMAGE = Family(
    name="nucleus_moe_image",
    model_classes=("NucleusMoEImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=functools.partial(_image_grid, text_position="after"),
    processor=None,  # NucleusMoEAttnProcessor2_0 dispatches: the generic path
    stock_processors=("NucleusMoEAttnProcessor2_0",),
    grid_inputs=("img_shapes", "encoder_hidden_states"),
    text_position="after",
    text_keys_only=True,
    models="Nucleus-MoE-Image; the image queries attend image keys, then the prompt's (kept dense)",
    sparsified="`transformer_blocks.N.attn` (image queries; text keys after the image's)",
    grid_rule="forward arg `img_shapes`; text length from `encoder_hidden_states`",
)
