"""Stable Diffusion 1.x / 2.x and SDXL UNets (``UNet2DConditionModel``): ``attn1`` at every resolution level.

Each ``Transformer2DModel`` of the down, mid and up blocks runs self-attention (``attn1``) over the pixels of
its level and cross-attention to the prompt (``attn2``, untouched). The pre-hook records the grid of the UNet
input (``sample [B, C, H, W]``, one token per latent pixel); a level ``l`` below it has
``ceil(H / 2^l) × ceil(W / 2^l)`` tokens (each down-sampler is a stride-2 convolution with padding 1, and the
up path restores the same sizes), so the processor finds its level as the one whose token count matches its
sequence and hands that grid to the engine. The engine scales the training token count by the same ratio, so
entropy scaling uses each level's own ``N`` and ``N_train``. Layers are numbered in execution order: down
blocks, mid block, up blocks.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import (Family, SparseProcessorMixin, forward_input, heads_first, heads_merged,
                                            latent_grid, qk_norm, qkv_projections)


def level_grid(grid: TokenGrid, tokens: int) -> TokenGrid | None:
    """The grid of the UNet level with ``tokens`` tokens below input grid ``grid``, or ``None``."""
    h, w = grid.h, grid.w
    while h * w > tokens and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    return TokenGrid(1, h, w) if h * w == tokens else None


class UNetSparseProcessor(SparseProcessorMixin):
    """Replaces ``AttnProcessor2_0`` on the self-attention (``attn1``) of every transformer block."""

    def call_grid(self, tokens: int) -> TokenGrid | None:
        """This level's grid: the one below the input grid with ``tokens`` tokens."""
        return None if self.grid is None else level_grid(self.grid, tokens)

    def __call__(self, attn: Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None) -> Tensor:
        if encoder_hidden_states is not None:  # only self-attention is ours
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = (heads_first(x, attn.heads) for x in qkv_projections(attn, hidden_states))
        query, key = qk_norm(attn, query, key)

        out = self.attend(query, key, value, attn_mask=attention_mask)
        out = attn.to_out[1](attn.to_out[0](heads_merged(out).to(query.dtype)))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _self_attention(model):
    blocks = [*model.down_blocks, *([model.mid_block] if model.mid_block is not None else []), *model.up_blocks]
    layer = 0
    for block in blocks:
        for name, module in block.named_modules():
            if name.endswith("attn1") and not getattr(module, "is_cross_attention", True):
                yield layer, module
                layer += 1


def _grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "sample")
    return latent_grid(x, (1, 1, 1)) if getattr(x, "ndim", 0) == 4 else None


def _train_tokens(model) -> int:
    """Tokens of the UNet input at the training resolution (``config.sample_size`` is that latent size)."""
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    return h * w


UNET = Family(
    name="unet",
    model_classes=("UNet2DConditionModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=UNetSparseProcessor,
    stock_processors=("AttnProcessor2_0",),
    train_tokens=_train_tokens,
    grid_inputs=("sample",),
    models="SD 1.x/2.x, SDXL",
    sparsified="every `attn1` of the down, mid and up blocks, each on its own level grid",
    untouched="`attn2`",
    grid_rule="`sample [B,C,H,W]`; level l: `ceil(H/2^l) × ceil(W/2^l)`",
)
