"""The Wan architecture: Wan 2.1 / 2.2 (``WanTransformer3DModel``) and the models built on it, SkyReels-V2,
ChronoEdit, Wan-VACE, Wan-Animate and Wan-Animate 2; video self-attention in ``blocks.N.attn1``
(``blocks.N.self_attn`` in Wan-Animate 2).

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

Wan-Animate 2 first runs a reference pass (``kv_cache_mode="extract"``) over a driving-video segment, whose
self-attention is plain video attention on the generic path, and caches each layer's keys and values; each
denoising pass (``"cached"``) then attends, through the flex backend its processor names and a ``BlockMask`` of
the model's own, over keys packed ``[video | reference]``, each part zero-padded to 128 tokens: every video
token attends every video token, and video frame ``f >= 1`` also attends reference frame ``f - 1``. fastdit
takes that call as side keys (:class:`~fastdit.patching.families.base.SideKeys`): the video part sparse, the
reference frames dense, merged by their log-sum-exp. The mask also lets queries see the zero padding inside
the video's and reference's frames when the segment is smaller than the one the mask was built for
(``origin_len``, ``origin_area``); the grid is read only when nothing is padded (the pipeline's calls), and
other calls run as the model sends them.
"""

from __future__ import annotations

import math

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (BlockTokens, Family, SideKeys, attention_in_blocks, forward_input,
                                            latent_grid)


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


def _animate2_grid(model, args, kwargs) -> TokenGrid | None:
    """The grid of ``hidden_states``, a list of ``[C, F, H, W]`` latents (one per sample); for a denoising pass
    only when its segment fills the packed buffers the model's mask is built for: ``F`` is
    ``origin_len // 4 + 2`` latent frames of ``origin_area / 256`` tokens, and each sample's reference grid
    ``F - 1`` frames of as many tokens."""
    x = forward_input(model, args, kwargs, "hidden_states")
    if not isinstance(x, (list, tuple)) or not x or any(getattr(u, "shape", None) != x[0].shape for u in x) \
            or x[0].ndim != 4:
        return None
    grid = latent_grid(x[0][None], tuple(model.config.patch_size))
    if forward_input(model, args, kwargs, "kv_cache_mode") != "cached":
        return grid
    length, area = (forward_input(model, args, kwargs, name) for name in ("origin_len", "origin_area"))
    reference = forward_input(model, args, kwargs, "reference_grid_sizes")
    if length is None or area is None or reference is None:
        return None
    tokens = area[0] * area[1] // 256
    filled = grid.t == length // 4 + 2 and grid.h * grid.w == tokens and all(
        f == grid.t - 1 and h * w == tokens for f, h, w in reference.tolist())
    return grid if filled else None


def _reference_keys(grid: TokenGrid, queries: int, keys: int) -> SideKeys | None:
    """A denoising call's keys packed ``[video | reference]``, each padded to a multiple of 128 tokens: video
    frame ``f >= 1`` also attends reference frame ``f - 1`` (``WanAnimate2Transformer3DModel.create_mask``)."""
    frame, video = grid.h * grid.w, grid.video_tokens
    packed, reference = math.ceil(video / 128) * 128, (grid.t - 1) * frame
    if grid.t < 2 or queries != packed or keys != packed + math.ceil(reference / 128) * 128:
        return None
    return SideKeys(video, rows=slice(frame, video), keys=slice(packed, packed + reference), groups=grid.t - 1)


WAN_ANIMATE2 = Family(
    name="wan_animate2", model_classes=("WanAnimate2Transformer3DModel",),
    self_attention=attention_in_blocks("self_attn", "blocks"), grid=_animate2_grid,
    processor=None,  # the stock processor dispatches: the generic path, the denoising call as side keys
    stock_processors=("WanAnimate2AttnProcessor",), side_keys=_reference_keys,
    grid_inputs=("hidden_states", "kv_cache_mode", "origin_len", "origin_area", "reference_grid_sizes"),
    models="Wan-Animate 2", sparsified="`blocks.N.self_attn` (video to video; reference frames dense)",
    untouched="`cross_attn`",
    grid_rule="`hidden_states[i] [C,F,H,W]` ÷ `config.patch_size`")
