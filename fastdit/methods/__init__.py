"""Sparse attention methods: pure functions from a token grid (and, for dynamic methods, q and k) to a layout.

Each method lives in its own file and registers a :class:`Method`: a frozen options dataclass (the knobs,
with their defaults and validation) and a function that returns a block mask over the tiling's blocks. This
module turns that mask into a :class:`~fastdit.BlockLayout`, adds the text blocks every method keeps, and
caches static layouts per (grid, tile, options).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..grid import TokenGrid, Tiling
from ..layout import BlockLayout

__all__ = ["Method", "register", "get_method", "available_methods", "build_layout", "parse_options",
           "make_layout", "DEFAULT_BLOCK_SIZE"]

DEFAULT_BLOCK_SIZE = 128


@dataclass(frozen=True)
class Method:
    """A registered method.

    ``video_mask(tiling, options, q, k, layer)`` returns ``[heads, n_video_blocks, n_video_blocks]`` bool
    (``heads == 1`` for a pattern shared by all heads) and optionally a same-shaped int level map; text
    rows and columns are added here, so no method can forget them.
    """

    name: str
    options: type
    video_mask: Callable[..., Any]
    dynamic: bool = False
    summary: str = ""


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None


def parse_options(method: Method, options: dict[str, Any]):
    """Validate ``options`` against the method's options dataclass (unknown keys name the allowed ones)."""
    allowed = {f.name for f in dataclasses.fields(method.options)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {method.name!r}; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return method.options(**frozen)


def build_layout(
    method: str,
    grid: TokenGrid,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    tile: tuple[int, int, int] | None = None,
    q: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
    layer: int = 0,
    **options: Any,
) -> BlockLayout:
    """Build the block layout of ``method`` on ``grid``; with no options, the method's defaults.

    ``block_size`` is the kernel block (tokens per tile); ``tile`` fixes the ``(t, h, w)`` tile shape
    (chosen to minimise padding when ``None``). Dynamic methods (pyramid, vmoba) also need ``q`` and ``k``
    as ``[B, H, S, D]`` in tile order, and vmoba the transformer ``layer``.
    """
    spec = get_method(method)
    if not isinstance(grid, TokenGrid):
        raise TypeError(f"grid must be a fastdit.TokenGrid, got {type(grid).__name__}")
    return make_layout(spec, Tiling.create(grid, block_size, tile), parse_options(spec, options), q=q, k=k,
                       layer=layer)


def make_layout(spec: Method, tiling: Tiling, options: Any, *, q: torch.Tensor | None = None,
                k: torch.Tensor | None = None, layer: int = 0) -> BlockLayout:
    """Layout of an already validated method and options on ``tiling`` (static ones come from a cache)."""
    if not spec.dynamic:
        return _static_layout(spec.name, tiling, options)
    if q is None or k is None:
        raise ValueError(f"method {spec.name!r} chooses blocks from the data: pass q= and k= "
                         "([B, H, S, D], tile order)")
    return _assemble(tiling, *_as_pair(spec.video_mask(tiling, options, q=q, k=k, layer=layer)))


@functools.lru_cache(maxsize=128)
def _static_layout(name: str, tiling: Tiling, opts: Any) -> BlockLayout:
    return _assemble(tiling, *_as_pair(_REGISTRY[name].video_mask(tiling, opts)))


def _as_pair(result) -> tuple[torch.Tensor, torch.Tensor | None]:
    return result if isinstance(result, tuple) else (result, None)


def _assemble(tiling: Tiling, video: torch.Tensor, level: torch.Tensor | None) -> BlockLayout:
    """Embed the video-video block mask in the full mask, where text rows and columns are always kept."""
    if video.ndim == 2:
        video = video.unsqueeze(0)
    nv = tiling.video_blocks
    if tiling.text_blocks == 0:
        return BlockLayout.from_block_mask(video, tiling, level)
    heads, nb = video.shape[0], tiling.num_blocks
    mask = torch.ones(heads, nb, nb, dtype=torch.bool)
    mask[:, :nv, :nv] = video
    full_level = None
    if level is not None:
        full_level = torch.zeros(heads, nb, nb, dtype=level.dtype)
        full_level[:, :nv, :nv] = level
    return BlockLayout.from_block_mask(mask, tiling, full_level)


# Registration happens on import of each method module.
from . import dense, grat, pyramid, radial, vmoba  # noqa: E402,F401
