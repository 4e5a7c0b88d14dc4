"""DiT (``DiTTransformer2DModel``), PixArt-α/Σ (``PixArtTransformer2DModel``) and the legacy class both were
split from, ``Transformer2DModel`` (as a denoiser: VQ-Diffusion, or a DiT/PixArt built with the old class):
image self-attention over the patchified latent, no text in it.

Each ``BasicTransformerBlock`` runs self-attention (``attn1``) over the image tokens and, in PixArt, a
cross-attention to the prompt (``attn2``, untouched); the legacy ``AttnProcessor2_0`` calls SDPA itself, so
:class:`~fastdit.patching.families.attn_processor.AttnSparseProcessor` replaces it on ``attn1`` (on
``attn2`` too when a ``Transformer2DModel`` block is built ``double_self_attention``; never on an ``attn1``
built ``only_cross_attention``). The grid is ``hidden_states [B, C, H, W]`` ÷ ``patch_size``; a
``Transformer2DModel`` without a patch size takes one token per latent pixel, or, with discrete input
(``num_vector_embeds``), its ``sample_size × sample_size`` latent pixels. The models have no RoPE (absolute
positions are added at patchify).
"""

from __future__ import annotations

from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.attn_processor import AttnSparseProcessor, self_attention_in_blocks
from fastdit.patching.families.base import Family, forward_input, latent_grid


def _grid(model: Module, args: tuple, kwargs: dict) -> TokenGrid | None:
    config = model.config
    if getattr(config, "num_vector_embeds", None) is not None:  # VQ-Diffusion: [B, H·W] codebook indices
        return TokenGrid(1, config.sample_size, config.sample_size)
    x = forward_input(model, args, kwargs, "hidden_states")
    p = config.patch_size or 1
    return latent_grid(x, (1, p, p)) if getattr(x, "ndim", 0) == 4 else None


def _train_tokens(model: Module) -> int:
    """Image tokens at the training resolution: ``config.sample_size`` is the latent side it was trained at."""
    side = model.config.sample_size // model.config.patch_size
    return side * side


def _family(name: str, model_class: str, models: str, untouched: str, train_tokens=_train_tokens,
            sparsified: str = "`transformer_blocks.N.attn1` (image only)",
            grid_rule: str = "`hidden_states [B,C,H,W]` ÷ patch") -> Family:
    return Family(name=name, model_classes=(model_class,), self_attention=self_attention_in_blocks, grid=_grid,
                  processor=AttnSparseProcessor, stock_processors=("AttnProcessor2_0",), train_tokens=train_tokens,
                  models=models, sparsified=sparsified, untouched=untouched, grid_rule=grid_rule)


PIXART = _family("pixart", "PixArtTransformer2DModel", "PixArt-α, PixArt-Σ", "`attn2`")
DIT = _family("dit", "DiTTransformer2DModel", "DiT, class-conditional", "—")
TRANSFORMER_2D = _family("transformer_2d", "Transformer2DModel",
                         "legacy class: VQ-Diffusion, or DiT/PixArt built with it",
                         "cross-attention `attn1`/`attn2`", train_tokens=None,
                         sparsified="self-attention `attn1` (and `attn2` of `double_self_attention` blocks)",
                         grid_rule="`hidden_states [B,C,H,W]` ÷ patch (none: 1); discrete: `sample_size²`")
