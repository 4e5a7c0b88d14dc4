"""Qwen-Image 2.1 (``QwenImage21Transformer2DModel``): single-stream, block-causal attention over ``[prefix ;
target]``, in ``transformer_blocks.N.attn``.

The joint sequence is the prompt with any condition images' latents in the vision-language encoder's image slots
(each slot 2 × 2 latent tokens), then the target image's latents, row-major (the pipeline flattens them over
``(rows, cols)`` and the model's RoPE lays them out so); everything before the target is the prefix, dense to
fastdit. The first step (``kv_cache_mode="extract"``, or every step without a cache) attends block-causally:
``QwenImage21AttnProcessor`` makes one ``dispatch_attention_fn(..., backend=None)`` call per prefix segment and one
for the target, ``QwenImage21FlexAttnProcessor`` one with ``backend="flex"`` and a ``BlockMask``; fastdit takes
none of these, so that step runs as stock. Later steps (``kv_cache_mode="cached"``) recompute the target's
queries only, over ``[cached prefix ; target]`` keys with the padded prompt's key mask, through
``dispatch_attention_fn(..., backend=self._attention_backend)`` (both processors): fastdit takes that call (the
generic path), the prefix keys dense before the target's (``text_keys_only``), the target's own sparse. As no
call of the first step reaches fastdit, ``stats`` lists that step's layers as it lists calls a diffusers cache
served (``reason="cached"``, ``calls=0``): run as stock, nothing skipped.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input

_SLOT = 4  # latent tokens per image slot of img_mask (_IMG_TOKENS_PER_SLOT in transformer_qwenimage21.py)


def _grid(model, args, kwargs) -> TokenGrid | None:
    """The target image, last of ``img_shapes[0]`` (samples share one layout), after the prefix: ``img_mask``'s
    positions, each image slot grown to its 2 × 2 tokens (``hidden_states`` holds every image's tokens)."""
    shapes = forward_input(model, args, kwargs, "img_shapes")
    latents = forward_input(model, args, kwargs, "hidden_states")
    slots = forward_input(model, args, kwargs, "img_mask")
    if shapes is None or not isinstance(latents, torch.Tensor) or not isinstance(slots, torch.Tensor):
        return None
    frames, rows, cols = (int(n) for n in shapes[0][-1])
    tokens = slots.shape[-1] + (_SLOT - 1) * (latents.shape[1] // _SLOT)
    return TokenGrid(frames, rows, cols, text_tokens=tokens - frames * rows * cols, text_position="before")


QWEN_IMAGE21 = Family(
    name="qwen_image21",
    model_classes=("QwenImage21Transformer2DModel",),
    self_attention=attention_in_blocks("attn", "transformer_blocks"),
    grid=_grid,
    processor=None,  # both processors dispatch the cached steps with self._attention_backend: the generic path
    stock_processors=("QwenImage21AttnProcessor", "QwenImage21FlexAttnProcessor"),
    grid_inputs=("img_shapes", "hidden_states", "img_mask"),
    text_position="before",
    text_keys_only=True,
    models="Qwen-Image 2.1; the block-causal first step (KV-cache prefill) runs as stock, the cached steps sparse",
    sparsified="`transformer_blocks.N.attn` on cached steps (target queries; cached prompt and condition-image "
               "keys before the target's)",
    grid_rule="forward arg `img_shapes` (last image); prefix: `img_mask` (4 tokens per image slot) less the target",
)
