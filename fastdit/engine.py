"""The sparse self-attention engine that every patched processor calls.

Processors do the model-specific work (projections, norms, RoPE, where text tokens sit) and hand this engine
``q, k, v [B, H, S, D]`` in the model's token order. The engine decides dense or sparse for this step and
layer, applies entropy scaling, builds (or reuses) the layout, moves tokens to tile order and back, runs the
kernel, and records what it did.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from .config import SparseConfig
from .context import RunContext
from .entropy import entropy_scale_factor
from .grid import Tiling, TokenGrid
from .kernels import attention
from .methods import get_method, make_layout
from .stats import LayerRecord


class SparseAttention:
    def __init__(self, config: SparseConfig, context: RunContext) -> None:
        self.config = config
        self.context = context
        self.method = get_method(config.method)
        self._warned: set[str] = set()

    def scale(self, num_tokens: int, head_dim: int) -> float | None:
        """Softmax scale for a self-attention over ``num_tokens`` keys (``None``: the usual ``1/sqrt(D)``)."""
        if not self.config.entropy_scaling:
            return None
        return head_dim**-0.5 * entropy_scale_factor(num_tokens, self.config.n_train)

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        layer: int,
        model: str,
        text_tokens: int = 0,
        text_position: str = "after",
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention of ``q, k, v [B, H, S, D]`` in the model's token order; returns ``[B, H, S, D]``.

        ``attn_mask`` is the model's own mask (e.g. padded text); a call that carries one runs dense, since
        dropping masked keys is not something a block layout can express exactly.
        """
        S = q.shape[2]
        scale = self.scale(S, q.shape[-1])
        reason = self._dense_reason(layer, S, text_tokens, attn_mask)
        if reason is None:
            grid = dataclasses.replace(self.context.grid, text_tokens=text_tokens, text_position=text_position)
            tiling = Tiling.create(grid, self.config.block_size, self.config.tile)
            if self.method.dynamic:
                qt, kt = tiling.to_tile_order(q), tiling.to_tile_order(k)
                layout = make_layout(self.method, tiling, self.config.options, q=qt, k=kt, layer=layer)
            else:
                layout = make_layout(self.method, tiling, self.config.options, layer=layer)
            density = layout.density()
            if density >= 1.0:
                reason = "grid too small"
                self._warn_once(f"grid {grid.t}x{grid.h}x{grid.w} is too small for any sparsity with "
                                f"{self.config.block_size}-token blocks; running dense")
        if reason is not None:
            self._record(layer, model, True, 1.0, reason, S)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        if not self.method.dynamic:
            qt, kt = tiling.to_tile_order(q), tiling.to_tile_order(k)
        out = attention(qt, kt, tiling.to_tile_order(v), layout.to(q.device), scale=scale,
                        backend=self.config.backend)
        self._record(layer, model, False, density, self.config.method, S)
        return tiling.from_tile_order(out)

    def _dense_reason(self, layer: int, tokens: int, text_tokens: int, attn_mask) -> str | None:
        """Why this call must run dense, or ``None`` when it runs sparse."""
        cfg, grid = self.config, self.context.grid
        if cfg.method == "dense":
            return "method"
        if self.context.step < cfg.dense_steps:
            return "dense_steps"
        if layer < cfg.dense_layers:
            return "dense_layers"
        if grid is None:
            self._warn_once("the latent grid of this model call is unknown; running dense")
            return "no grid"
        if grid.video_tokens + text_tokens != tokens:
            self._warn_once(f"self-attention has {tokens} tokens but the grid {grid.t}x{grid.h}x{grid.w} plus "
                            f"{text_tokens} text tokens has {grid.video_tokens + text_tokens}; running dense")
            return "grid mismatch"
        if attn_mask is not None:
            self._warn_once("this call carries an attention mask the block layout can't express; running dense")
            return "attention mask"
        return None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"fastdit: {message}", stacklevel=4)

    def _record(self, layer: int, model: str, dense: bool, density: float, reason: str, tokens: int) -> None:
        self.context.record(LayerRecord(step=max(self.context.step, 0), layer=layer, model=model, dense=dense,
                                        density=density, reason=reason, tokens=tokens))
