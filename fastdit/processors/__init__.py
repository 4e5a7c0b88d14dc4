"""Diffusers integration: one processor per attention convention, and a table of model families.

A :class:`Family` says how to recognise a denoiser (transformer or UNet), which of its attention modules are
video self-attention, how to read the latent grid and the timestep from its forward inputs, and which
processor replaces the stock one. Processors read only public attention-module attributes (``to_q``,
``norm_q``, ``to_out`` ...) and never touch a model's ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..grid import TokenGrid

__all__ = ["Family", "register_family", "families", "detect_family", "SparseProcessorMixin"]


@dataclass(frozen=True)
class Family:
    """How fastdit patches one model family.

    ``self_attention(model)`` yields ``(layer, module)`` for every attention module to sparsify;
    ``grid(model, args, kwargs)`` reads the latent token grid from the denoiser's forward inputs;
    ``processor(original, engine, layer, model_name)`` builds the replacement processor;
    ``stock_processors`` names the processor classes diffusers installs by default (anything else was set
    by the user and is only replaced with ``force=True``).
    """

    name: str
    model_classes: tuple[str, ...]
    self_attention: Callable[[torch.nn.Module], Iterator[tuple[int, torch.nn.Module]]]
    grid: Callable[[torch.nn.Module, tuple, dict], TokenGrid | None]
    processor: Callable[..., Any]
    stock_processors: tuple[str, ...]
    timestep_arg: str = "timestep"
    timestep_position: int = 1


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    return dict(_FAMILIES)


def detect_family(model: Any) -> Family | None:
    """The family whose model classes include ``model``'s class (or one of its bases)."""
    names = {cls.__name__ for cls in type(model).__mro__}
    for family in _FAMILIES.values():
        if names & set(family.model_classes):
            return family
    return None


def read_timestep(family: Family, args: tuple, kwargs: dict) -> float | None:
    """The denoising timestep of a forward call, as one float (the largest, for per-token timesteps)."""
    t = kwargs.get(family.timestep_arg)
    if t is None and len(args) > family.timestep_position:
        t = args[family.timestep_position]
    if t is None:
        return None
    return float(t.detach().float().max()) if isinstance(t, torch.Tensor) else float(t)


class SparseProcessorMixin:
    """Shared state of fastdit processors: the stock processor they replace, the engine, their layer."""

    def __init__(self, original: Any, engine: Any, layer: int, model_name: str) -> None:
        self.original = original
        self.engine = engine
        self.layer = layer
        self.model_name = model_name

    # diffusers reads these on processors (attention backend dispatch, context parallelism)
    _attention_backend = None
    _parallel_config = None


def qkv_projections(attn: torch.nn.Module, hidden_states: torch.Tensor):
    """``to_q/to_k/to_v`` (or the fused ``to_qkv``) of self-attention, as diffusers' processors do it."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
        return attn.to_qkv(hidden_states).chunk(3, dim=-1)
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


from . import wan  # noqa: E402,F401  (registers the family)
