"""The Flux architecture: Flux.1 (``FluxTransformer2DModel``), FLUX.2, FLUX.3 and the image models built like them,
Chroma, LongCat-Image, Ovis-Image, Bria and Bria FIBO; joint attention, ``[text ; image]``, RoPE over the whole
sequence.

Double-stream blocks (``transformer_blocks.N.attn``) get the text as ``encoder_hidden_states``; single-stream
blocks (``single_transformer_blocks.N.attn``) get text and image already concatenated and can't tell the text
length, so the pre-hook reads it from ``txt_ids`` and stores it in the grid's ``text_tokens``. The image grid
comes from ``img_ids`` (``(0, row, col)`` per packed 2×2 latent patch, raster order). An ``attention_mask``
passed through ``joint_attention_kwargs`` reaches the engine like any other key mask. ``FluxAttnProcessor``
calls ``dispatch_attention_fn``: fastdit takes the call there (the generic path), with the text first. Layers
are numbered double blocks first, then single blocks. The others keep Flux's blocks, ids and text-first
order, each with its own dispatching processor (Bria FIBO also writes one text-encoder layer per block into
half of the text tokens' channels: the same tokens). FLUX.2's ids have a fourth coordinate (``(t, row, col,
layer)``); an edit call appends its reference images to the image stream, which the grid then doesn't match, so
such a call runs dense and ``stats`` says "grid mismatch".

FLUX.3 (``Flux3Transformer2DModel``) has FLUX.2's ids and joint single-stream blocks (``[text ; image]``), but
instead of double-stream blocks each token mode first runs its own blocks (``mode_blocks.<mode>.N.attn``,
``txt_mode_blocks.N.attn``), attending within that mode only. Only the single-stream blocks are sparsified: the
grid a call records carries one text length, and the image-mode blocks see no text, so they stay on their
stock processor. Reference images (``image_cond_hidden_states``) join after the image in the single-stream
blocks; such a call runs dense ("grid mismatch") as FLUX.2's edit calls do.
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, double_then_single, forward_input


def _ids(x) -> torch.Tensor | None:
    if not isinstance(x, torch.Tensor):
        return None
    return x[0] if x.ndim == 3 else x  # 3-D ids are deprecated by diffusers but still accepted


def _grid(model, args, kwargs) -> TokenGrid | None:
    img_ids = _ids(forward_input(model, args, kwargs, "img_ids"))
    txt_ids = _ids(forward_input(model, args, kwargs, "txt_ids"))
    if img_ids is None or img_ids.numel() == 0:
        return None
    rows, cols = (int(img_ids[:, axis].max() - img_ids[:, axis].min()) + 1 for axis in (1, 2))
    return TokenGrid(1, rows, cols, text_tokens=0 if txt_ids is None else txt_ids.shape[0], text_position="before")


def _family(name: str, model_class: str, models: str, *stock: str,
            grid_rule: str = "`img_ids`; text length from `txt_ids`", self_attention=double_then_single,
            sparsified: str = "double- and single-stream `attn` (joint, text first)", untouched: str = "—") -> Family:
    return Family(name=name, model_classes=(model_class,), self_attention=self_attention, grid=_grid,
                  processor=None,  # the stock processor dispatches: the generic path
                  stock_processors=stock, grid_inputs=("img_ids", "txt_ids"), text_position="before", models=models,
                  sparsified=sparsified, untouched=untouched, grid_rule=grid_rule)


FLUX = _family("flux", "FluxTransformer2DModel", "FLUX.1", "FluxAttnProcessor", "FluxAttnProcessor2_0")
CHROMA = _family("chroma", "ChromaTransformer2DModel", "Chroma, Flux architecture", "FluxAttnProcessor",
                 "FluxAttnProcessor2_0")
LONGCAT_IMAGE = _family("longcat_image", "LongCatImageTransformer2DModel", "LongCat-Image, Flux architecture",
                        "LongCatImageAttnProcessor")
OVIS_IMAGE = _family("ovis_image", "OvisImageTransformer2DModel", "Ovis-Image, Flux architecture",
                     "OvisImageAttnProcessor")
BRIA = _family("bria", "BriaTransformer2DModel", "Bria, Flux architecture", "BriaAttnProcessor")
# BriaAttnProcessor first: the single blocks' legacy ``Attention`` names no default processor, so ``force=True``
# takes the first stock class for them (the double blocks' ``BriaFiboAttention`` names its own)
BRIA_FIBO = _family("bria_fibo", "BriaFiboTransformer2DModel", "Bria FIBO, Flux architecture", "BriaAttnProcessor",
                    "BriaFiboAttnProcessor")
FLUX2 = _family("flux2", "Flux2Transformer2DModel", "FLUX.2; edit calls with reference images run dense",
                "Flux2AttnProcessor", "Flux2ParallelSelfAttnProcessor",
                grid_rule="`img_ids` (4 coordinates); text length from `txt_ids`")
FLUX3 = _family("flux3", "Flux3Transformer2DModel", "FLUX.3; calls with reference images run dense",
                "Flux3AttnProcessor", grid_rule="`img_ids` (4 coordinates); text length from `txt_ids`",
                self_attention=attention_in_blocks("attn", "single_transformer_blocks"),
                sparsified="`single_transformer_blocks.N.attn` (joint, text first)",
                untouched="per-mode blocks (`mode_blocks`, `txt_mode_blocks`)")
