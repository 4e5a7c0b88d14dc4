"""fastdit: training-free sparse attention for diffusers video and image diffusion models.

    import fastdit
    fastdit.apply(pipe, method="radial")   # patch the pipeline's video self-attention
    video = pipe(prompt).frames
    print(fastdit.stats(pipe))             # what ran dense/sparse, at which density
    fastdit.remove(pipe)                   # restore the original processors exactly

The names below are imported on first use, so ``import fastdit`` (and the command line's start) doesn't load
torch until something needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import make_lazy

__version__ = "0.1.0"

_EXPORTS = {
    "apply": "patch", "remove": "patch", "stats": "patch", "is_patched": "patch",
    "build_layout": "methods", "available_methods": "methods",
    "attention": "kernels", "available_backends": "kernels",
    "TokenGrid": "grid", "BlockLayout": "layout", "AttentionStats": "stats",
    "TokenOrder": "order", "RasterOrder": "order", "TileOrder": "order", "GilbertOrder": "order",
    "entropy_scale_factor": "entropy",
    "calibrate": "calibration", "Calibration": "calibration", "load_calibration": "calibration",
}
make_lazy(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .calibration import Calibration, calibrate, load_calibration
    from .entropy import entropy_scale_factor
    from .grid import TokenGrid
    from .kernels import attention, available_backends
    from .layout import BlockLayout
    from .methods import available_methods, build_layout
    from .order import GilbertOrder, RasterOrder, TileOrder, TokenOrder
    from .patch import apply, is_patched, remove, stats
    from .stats import AttentionStats

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
    "calibrate",
    "Calibration",
    "load_calibration",
    "__version__",
]
