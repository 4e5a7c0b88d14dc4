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

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.attn_processor import AttnSparseProcessor
from fastdit.patching.families.base import Family, forward_input, latent_grid


def level_grid(grid: TokenGrid, tokens: int) -> TokenGrid | None:
    """The grid of the UNet level with ``tokens`` tokens below input grid ``grid``, or ``None``."""
    h, w = grid.h, grid.w
    while h * w > tokens and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    return TokenGrid(1, h, w) if h * w == tokens else None


class UNetSparseProcessor(AttnSparseProcessor):
    """Replaces ``AttnProcessor2_0`` on the self-attention (``attn1``) of every transformer block."""

    def call_grid(self, tokens: int) -> TokenGrid | None:
        """This level's grid: the one below the input grid with ``tokens`` tokens."""
        return None if self.grid is None else level_grid(self.grid, tokens)


def level_self_attention(model):
    """``(layer, attn1)`` of every self-attention of the down, mid and up blocks, in execution order (a block
    built without self-attention, or with ``attn1`` as cross-attention, has none)."""
    blocks = [*model.down_blocks, *([model.mid_block] if model.mid_block is not None else []), *model.up_blocks]
    layer = 0
    for block in blocks:
        for name, module in block.named_modules():
            if name.endswith("attn1") and not getattr(module, "is_cross_attention", True):
                yield layer, module
                layer += 1


def sample_grid(model, args, kwargs) -> TokenGrid | None:
    """The grid of the UNet input ``sample [B, C, H, W]``: one token per latent pixel."""
    x = forward_input(model, args, kwargs, "sample")
    return latent_grid(x, (1, 1, 1)) if getattr(x, "ndim", 0) == 4 else None


def sample_size_tokens(model) -> int:
    """Tokens of the UNet input at the training resolution (``config.sample_size`` is that latent size)."""
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    return h * w


UNET = Family(
    name="unet",
    model_classes=("UNet2DConditionModel",),
    self_attention=level_self_attention,
    grid=sample_grid,
    processor=UNetSparseProcessor,
    stock_processors=("AttnProcessor2_0",),
    train_tokens=sample_size_tokens,
    grid_inputs=("sample",),
    models="SD 1.x/2.x, SDXL",
    sparsified="every `attn1` of the down, mid and up blocks, each on its own level grid",
    untouched="`attn2`",
    grid_rule="`sample [B,C,H,W]`; level l: `ceil(H/2^l) × ceil(W/2^l)`",
)
