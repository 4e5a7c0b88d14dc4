"""Ulysses: sparse attention over the whole sequence for this rank's heads.

diffusers' own Ulysses attention (``TemplatedUlyssesAttention``, or ``TemplatedUlyssesAnythingAttention`` for
sequences and head counts that don't split evenly) swaps sequence shards for head shards with an all-to-all,
calls a backend's ``forward_op`` on the whole sequence for ``H / N`` heads, and swaps back. fastdit hands it
a ``forward_op`` that runs fastdit's engine there, so the communication is diffusers' own and only the
attention in between changes. On the whole sequence the layout is the single-process one: built from the
global grid, per-head settings and per-head random draws sliced to this rank's heads, text tokens of a joint
model moved back where the model puts them (the ranks' sequences laid end to end interleave text and video).
Dense steps and layers run the user's diffusers backend on the same tensors, which is exactly what diffusers'
Ulysses path computes.
"""

from __future__ import annotations

from typing import Any

import torch

from fastdit.methods import HeadSlice
from fastdit.patching.parallel.shards import gathered_order

__all__ = ["ulysses_attention"]


def ulysses_attention(processor: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      attn_mask: torch.Tensor | None, text_tokens: int | None, text_position: str,
                      config: Any) -> torch.Tensor:
    """``processor``'s self-attention of this rank's sequence shard ``q, k, v [B, H, S_local, D]`` under a
    Ulysses ``config`` (a diffusers ``ParallelConfig``); returns ``[B, H, S_local, D]``."""
    from diffusers.models.attention_dispatch import _templated_context_parallel_attention

    op = _UlyssesOp(processor, q.shape[1], q.shape[2], text_tokens, text_position)
    out = _templated_context_parallel_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask,
        forward_op=op.forward, backward_op=op.backward, _parallel_config=config)
    return out.transpose(1, 2)


class _UlyssesOp:
    """The ``forward_op`` / ``backward_op`` pair diffusers' templated Ulysses attention calls between its
    all-to-alls, on ``[B, S, H_local, D]`` tensors."""

    def __init__(self, processor: Any, heads: int, local_tokens: int, text_tokens: int | None,
                 text_position: str) -> None:
        self.processor = processor
        self.heads = heads
        self.local_tokens = local_tokens
        self.text_tokens = text_tokens
        self.text_position = text_position

    def forward(self, ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None, dropout_p: float, is_causal: bool, scale: float | None,
                enable_gqa: bool, return_lse: bool, _save_ctx: bool = True,
                _parallel_config: Any = None) -> torch.Tensor:
        if return_lse:
            raise ValueError("fastdit's Ulysses attention returns no log-sum-exp (combining Ulysses with ring "
                             "attention is not supported)")
        if _save_ctx:  # diffusers' backward calls backward_op with this ctx
            ctx.save_for_backward(query, key, value)
            ctx.fastdit_call = (attn_mask, _parallel_config)
        return self._attend(query, key, value, attn_mask, _parallel_config)

    def backward(self, ctx: Any, grad_out: torch.Tensor, *args: Any, **kwargs: Any):
        """Gradients by recomputing the forward with autograd (as activation checkpointing would)."""
        inputs = [x.detach().requires_grad_() for x in ctx.saved_tensors]
        attn_mask, config = ctx.fastdit_call
        with torch.enable_grad(), self.processor.engine.context.unrecorded():
            out = self._attend(*inputs, attn_mask, config)
        return torch.autograd.grad(out, inputs, grad_out)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None, config: Any) -> torch.Tensor:
        cp = config.context_parallel_config
        ranks, rank = cp.ulysses_degree, cp._ulysses_local_rank
        per_rank = -(-self.heads // ranks)  # diffusers pads the heads to a multiple of the ranks
        heads = HeadSlice(rank * per_rank, rank * per_rank + query.shape[2], self.heads)
        _, text, positions = gathered_order(self.processor, self.text_tokens, self.local_tokens,
                                            self.text_position, cp._ulysses_mesh.get_group(), ranks, rank,
                                            sizes=False)
        if positions is not None:  # into the model's order: [t0 v0 t1 v1 ...] -> [t0 t1 ... v0 v1 ...]
            source = torch.empty_like(positions).scatter_(0, positions, torch.arange(positions.numel()))
            source = source.to(query.device)
            query, key, value = (x.index_select(1, source) for x in (query, key, value))
            if attn_mask is not None and attn_mask.shape[-1] == source.numel():
                attn_mask = attn_mask.index_select(-1, source.to(attn_mask.device))
        dense = self._dense(attn_mask)
        mask = attn_mask
        if mask is not None and mask.ndim == 2 and mask.shape == (query.shape[0], key.shape[1]):
            mask = mask[:, None, None, :]
        processor = self.processor
        out = processor.engine(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                               layer=processor.layer, model=processor.model_name, text_tokens=text,
                               text_position=self.text_position, attn_mask=mask,
                               grid=processor.call_grid(query.shape[1]), dense=dense, heads=heads).transpose(1, 2)
        if positions is not None:
            out = out.index_select(1, positions.to(out.device))
        return out

    def _dense(self, attn_mask: torch.Tensor | None):
        """The dense attention of this rank's heads over the whole sequence with the processor's diffusers
        backend: what diffusers' Ulysses runs between its all-to-alls."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        backend = self.processor.user_backend()

        def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
            return dispatch_attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=attn_mask, scale=scale, backend=backend).transpose(1, 2)

        return dense
