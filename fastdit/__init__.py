"""fastdit: training-free sparse attention for diffusers video and image diffusion models.

    import fastdit
    fastdit.apply(pipe, method="radial")   # patch the pipeline's video self-attention
    video = pipe(prompt).frames
    print(fastdit.stats(pipe))             # what ran dense/sparse, at which density
    fastdit.remove(pipe)                   # restore the original processors exactly
"""

from .entropy import entropy_scale_factor
from .grid import TokenGrid
from .order import GilbertOrder, RasterOrder, TileOrder, TokenOrder
from .kernels import attention, available_backends
from .layout import BlockLayout
from .methods import available_methods, build_layout
from .patch import apply, is_patched, remove, stats
from .stats import AttentionStats

__version__ = "0.1.0"

__all__ = [
    "apply",
    "remove",
    "stats",
    "is_patched",
    "build_layout",
    "attention",
    "TokenGrid",
    "TokenOrder",
    "RasterOrder",
    "TileOrder",
    "GilbertOrder",
    "BlockLayout",
    "AttentionStats",
    "available_methods",
    "available_backends",
    "entropy_scale_factor",
    "__version__",
]
