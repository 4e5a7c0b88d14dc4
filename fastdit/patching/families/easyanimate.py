"""EasyAnimate (``EasyAnimateTransformer3DModel``): joint attention, ``[text ; video]``.

``transformer_blocks.N.attn1`` puts the prompt (the main encoder's tokens, then T5's when given) before the
video: the first ``mmdit_layers`` blocks project it with their own ``add_q/k/v_proj`` and ``to_add_out``, the
others join it with the video before ``to_q/k/v`` and return its attention output unprojected. RoPE covers the
video part only; no mask. ``EasyAnimateAttnProcessor2_0`` calls SDPA itself: the shared joint processor replaces
it. The grid is the latent ``[B, C, F, H, W]`` with a spatial-only patch.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid
from fastdit.patching.families.joint import JointSparseProcessor


class EasyAnimateSparseProcessor(JointSparseProcessor):
    """Replaces ``EasyAnimateAttnProcessor2_0`` on ``transformer_blocks.N.attn1``."""

    text_position = "before"


def _grid(model, args, kwargs) -> TokenGrid | None:
    p = model.config.patch_size
    return latent_grid(forward_input(model, args, kwargs, "hidden_states"), (1, p, p))


EASYANIMATE = Family(
    name="easyanimate",
    model_classes=("EasyAnimateTransformer3DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=EasyAnimateSparseProcessor,
    stock_processors=("EasyAnimateAttnProcessor2_0",),
    models="EasyAnimate V5.1",
    sparsified="`transformer_blocks.N.attn1` (joint, text first)",
    grid_rule="`hidden_states [B,C,F,H,W]` ÷ patch",
)
