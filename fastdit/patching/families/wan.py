"""The Wan architecture: Wan 2.1 / 2.2 (``WanTransformer3DModel``) and the models built on it, SkyReels-V2,
ChronoEdit, Wan-VACE and Wan-Animate; video self-attention in ``blocks.N.attn1``.

Token order is frame-major ``(f, h, w)``; the grid is the latent ``[B, C, F, H, W]`` divided by
``config.patch_size``. Self-attention has no text (text enters through ``attn2``, cross-attention, which is
left untouched, as is the image context of image-to-video models, which also enters through ``attn2``).
Wan 2.2 A14B's two experts (``transformer`` and ``transformer_2``) are both pipeline components, so both are
patched. ``WanAttnProcessor`` calls ``dispatch_attention_fn``, so fastdit takes the call there (the generic
path): projections, norms and RoPE stay diffusers' own. SkyReels-V2 and ChronoEdit keep Wan's blocks, grid and
processor (under their own class names); Wan-VACE adds ``vace_blocks``, whose ``attn1`` attends the control
video's tokens on the same grid (numbered after the main blocks); Wan-Animate's reference image is latent frame
0 of ``hidden_states`` (so radial's frame-0 sink is the reference), and its face adapter, which attends the
face video's motion features, is left untouched.
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import BlockTokens, Family, attention_in_blocks, forward_input, latent_grid


_self_attention = attention_in_blocks("attn1", "blocks", "vace_blocks")
# WanTransformerBlock(hidden_states, encoder_hidden_states, temb, rotary_emb): RoPE's (cos, sin) [1, S, 1, D]
# is applied per token inside the stock processor, Wan 2.2 TI2V's temb is [B, S, 6, C]; the text is attn2's keys
_BLOCK_TOKENS = BlockTokens("blocks", per_token=(("temb", 4), ("rotary_emb", 4)))


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    return latent_grid(x, tuple(model.config.patch_size)) if getattr(x, "ndim", 0) == 5 else None


def _family(name: str, model_class: str, models: str, *stock: str, sparsified: str = "`blocks.N.attn1`",
            untouched: str = "`attn2`", block_tokens: BlockTokens | None = None) -> Family:
    return Family(name=name, model_classes=(model_class,), self_attention=_self_attention, grid=_grid,
                  block_tokens=block_tokens,
                  processor=None,  # the stock processor dispatches: the generic path
                  stock_processors=stock or ("WanAttnProcessor", "WanAttnProcessor2_0"), models=models,
                  sparsified=sparsified, untouched=untouched,
                  grid_rule="`hidden_states [B,C,F,H,W]` ÷ `config.patch_size`")


WAN = _family("wan", "WanTransformer3DModel",
              "Wan 2.1, Wan 2.2 A14B (`transformer` + `transformer_2`), T2V and I2V",
              untouched="`attn2` (text, I2V image tokens)", block_tokens=_BLOCK_TOKENS)
SKYREELS_V2 = _family("skyreels_v2", "SkyReelsV2Transformer3DModel", "SkyReels-V2, Wan architecture",
                      "SkyReelsV2AttnProcessor", "SkyReelsV2AttnProcessor2_0")
CHRONOEDIT = _family("chronoedit", "ChronoEditTransformer3DModel", "ChronoEdit, Wan architecture")
WAN_VACE = _family("wan_vace", "WanVACETransformer3DModel", "Wan-VACE",
                   sparsified="`blocks.N.attn1`, then `vace_blocks.N.attn1` (the control video's tokens, same grid)")
WAN_ANIMATE = _family("wan_animate", "WanAnimateTransformer3DModel",
                      "Wan-Animate; the reference image is latent frame 0", untouched="`attn2`, the face adapter")
