"""Tokens permuted once per forward: into the layout's order at the first block, back after the last.

The engine's per-call path gathers q, k, v into the layout's token order and scatters the output back at every
self-attention call. When every layer runs in the same order (static orders: radial's raster, GRAT's tiles,
PSA's Gilbert curve) and the family's blocks treat tokens one by one outside self-attention
(:class:`~fastdit.patching.families.base.BlockTokens`), the hidden states and every per-token input of the
blocks (RoPE tables, a per-token timestep embedding) can be permuted once instead, as the official Sol-Attn
backend does: the first block's pre-hook permutes them and tells the engine (``RunContext.held``), the other
blocks' pre-hooks swap in the permuted per-token inputs, and the last block's hook restores the model's order.
Only the real tokens move; an order with padding between tokens (a tile that does not divide the grid) keeps
the per-call path, and one with padding only at its end gets it appended by the engine. A compiled or
context-parallel forward, and a model with diffusers hooks (a cache), keep the per-call path too. The moves
are timed into the step's ``StepTimes.permute`` (overhead, outside the attention calls).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from fastdit.layout.order import TokenOrder
from fastdit.patching.families.base import BlockTokens, forward_input, replace_input
from fastdit.patching.parallel import parallel_config

__all__ = ["PermuteOnce"]


@functools.lru_cache(maxsize=32)
def _permutation(order: TokenOrder) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(into, back)``: ``x.index_select(axis, into)`` puts the model's tokens in ``order`` (real tokens only,
    for an order whose padding is at its end), ``back`` undoes it; ``None`` when the order is the model's own
    (radial's raster order of a video-only model: nothing moves, the engine only skips its gathers)."""
    back = order.destination
    if torch.equal(back, torch.arange(back.numel())):
        return None
    return torch.argsort(back), back


def _moved(x: Any, index: torch.Tensor, ndim: int) -> Any:
    """``x`` (a tensor, or a tuple of tensors) with its tokens (axis 1) reordered by ``index`` where it has
    ``ndim`` dims; anything else unchanged."""
    if isinstance(x, tuple):
        return tuple(_moved(part, index, ndim) for part in x)
    if isinstance(x, torch.Tensor) and x.ndim == ndim:
        return x.index_select(1, index.to(x.device))  # RoPE tables may sit elsewhere
    return x


def _diffusers_hooks(model: torch.nn.Module) -> bool:
    """Whether diffusers hooks sit anywhere in ``model`` (``enable_cache``, before or after ``apply``). A cache
    keeps block outputs or residuals from one step for later ones, and a step in the dense warm-up runs in the
    model's order: a residual kept there and added to permuted tokens, or served past the last block's hook,
    mixes the orders (measured: FirstBlockCache and MagCache on the tiny Wan pipeline changed the output by up to
    10% of its range), so such a model keeps the per-call path."""
    return any(getattr(getattr(module, "_diffusers_hook", None), "hooks", None) for module in model.modules())


class PermuteOnce:
    """The hooks that permute one denoiser's tokens once per forward (see the module docstring).

    Args:
        tokens: where the family's blocks take their tokens.
        engine: the patch's :class:`~fastdit.runtime.engine.SparseAttention` (it says the order, and reads
            ``context.held``).
        model: the denoiser.
        handler: fastdit's handler of the first patched self-attention (its parallel config says whether the
            sequence is split over ranks).
    """

    def __init__(self, tokens: BlockTokens, engine: Any, model: torch.nn.Module, handler: Any) -> None:
        self.tokens, self.engine, self.handler, self.model = tokens, engine, handler, model
        self.index: tuple[torch.Tensor, torch.Tensor] | None = None  # this forward's (into, back), when moving
        self.swapped: list[tuple[Any, Any]] = []  # (per-token input as the model passed it, permuted), this forward
        blocks = list(getattr(model, tokens.blocks))
        self.first, self.last = blocks[0], blocks[-1]
        self.handles = [block.register_forward_pre_hook(self.enter, with_kwargs=True) for block in blocks]
        self.handles.append(self.last.register_forward_hook(self.leave))

    def remove(self) -> None:
        """Take the hooks off the blocks."""
        for handle in self.handles:
            handle.remove()

    def enter(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """A block's pre-hook: at the first block, choose this forward's order and permute the hidden states;
        at every block, hand the per-token inputs in that order."""
        if torch.compiler.is_compiling():  # traced: the engine's operator runs on the model's order
            return None
        if block is self.first:
            self._start(block, args, kwargs)
        if self.index is None:
            return None
        context = self.engine.context
        with context.clock.span(self.index[0].device, context.step_times(), "permute"):
            if block is self.first:
                args, kwargs = replace_input(block, args, kwargs, self.tokens.hidden_states,
                                             lambda x: _moved(x, self.index[0], 3))
            for name, ndim in self.tokens.per_token:
                args, kwargs = replace_input(block, args, kwargs, name, lambda x, ndim=ndim: self._swap(x, ndim))
        return args, kwargs

    def leave(self, block: torch.nn.Module, args: tuple, output: Any) -> Any:
        """The last block's hook: its output back in the model's order."""
        if torch.compiler.is_compiling() or self.engine.context.held is None:
            return None
        context = self.engine.context
        context.held = None
        self.swapped = []
        if self.index is None:
            return None
        with context.clock.span(self.index[1].device, context.step_times(), "permute"):
            return _moved(output, self.index[1], 3)

    def _start(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """This forward's order (``context.held``) and permutation, at its first block: ``None`` (the per-call
        path) when the engine has none, the sequence is split over ranks, diffusers hooks sit in the model, or
        the hidden states are not the grid's tokens."""
        self.swapped = []
        hooked = parallel_config(self.handler) is not None or _diffusers_hooks(self.model)
        order = None if hooked else self.engine.forward_order()
        hidden = forward_input(block, args, kwargs, self.tokens.hidden_states)
        if order is not None and (not isinstance(hidden, torch.Tensor) or hidden.ndim != 3
                                  or hidden.shape[1] != order.grid.num_tokens):
            order = None
        self.engine.context.held = order
        index = None if order is None else _permutation(order)
        # on the hidden states' device: the moves' times are taken there too
        self.index = None if index is None else (index[0].to(hidden.device), index[1].to(hidden.device))

    def _swap(self, x: Any, ndim: int) -> Any:
        """``x`` permuted, once per forward: every block gets the same RoPE tables, so permute them once."""
        for original, permuted in self.swapped:
            if original is x:
                return permuted
        permuted = _moved(x, self.index[0], ndim)
        self.swapped.append((x, permuted))
        return permuted
