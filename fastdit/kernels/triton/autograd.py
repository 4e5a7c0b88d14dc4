"""The Triton kernels as one differentiable operation: the forward saves its log-sum-exp, the backward kernels
recompute the probabilities from it (FlashAttention-2), so training through a sparse layout stores no score
matrix either."""

from __future__ import annotations

import torch

from fastdit.kernels.triton.backward import triton_block_attention_backward
from fastdit.kernels.triton.forward import triton_block_attention
from fastdit.layout.block import BlockLayout

__all__ = ["TritonBlockSparseAttention", "needs_grad"]


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will want gradients of a call on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class TritonBlockSparseAttention(torch.autograd.Function):
    """``(out, lse) = attention(q, k, v, layout, scale)`` with gradients for ``q, k, v`` (``lse`` has none)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = triton_block_attention(q, k, v, layout, scale, return_lse=True)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.scale = layout, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout: torch.Tensor, _dlse: torch.Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = triton_block_attention_backward(q, k, v, out, lse, dout, ctx.layout, ctx.scale)
        return dq, dk, dv, None, None
