"""fastdit: training-free sparse attention for diffusers video and image diffusion models.

    import fastdit
    fastdit.apply(pipe, method="radial")   # patch the pipeline's video self-attention
    video = pipe(prompt).frames
    print(fastdit.stats(pipe))             # what ran dense/sparse, at which density
    fastdit.remove(pipe)                   # restore the original processors exactly
    with fastdit.sparse(pipe, "radial"):   # or for one block only
        video = pipe(prompt).frames

The names below are imported on first use, so ``import fastdit`` (and the command line's start) doesn't load
torch until something needs it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fastdit._lazy import make_lazy

__version__ = "0.1.0"

_EXPORTS = {
    "apply": "patching", "remove": "patching", "sparse": "patching", "stats": "patching", "is_patched": "patching",
    "SparseConfig": "runtime", "LayerPlan": "runtime", "AttentionStats": "runtime",
    "entropy_scale_factor": "runtime",
    "build_layout": "methods", "available_methods": "methods",
    "attention": "kernels", "available_backends": "kernels",
    "TokenGrid": "layout", "BlockLayout": "layout", "TokenOrder": "layout", "RasterOrder": "layout",
    "TileOrder": "layout", "GilbertOrder": "layout", "ChunkOrder": "layout",
    "calibrate": "calibration", "Calibration": "calibration", "load_calibration": "calibration",
}
make_lazy(__name__, _EXPORTS)

# A process that has torch may be about to ``torch.export.load`` a patched model: its graph calls fastdit's
# operators, which must be registered first, with what rebuilds their patch (fastdit.patching.ops; 0.1 s once
# torch is loaded, and without torch there is nothing to load yet).
if "torch" in sys.modules:
    import fastdit.patching.patch  # noqa: F401

if TYPE_CHECKING:
    from fastdit.calibration import Calibration, calibrate, load_calibration
    from fastdit.kernels import attention, available_backends
    from fastdit.layout import BlockLayout, ChunkOrder, GilbertOrder, RasterOrder, TileOrder, TokenGrid, TokenOrder
    from fastdit.methods import available_methods, build_layout
    from fastdit.patching import apply, is_patched, remove, sparse, stats
    from fastdit.runtime import AttentionStats, LayerPlan, SparseConfig, entropy_scale_factor

__all__ = [
    "apply",
    "remove",
    "sparse",
    "stats",
    "is_patched",
    "build_layout",
    "attention",
    "TokenGrid",
    "TokenOrder",
    "RasterOrder",
    "TileOrder",
    "GilbertOrder",
    "ChunkOrder",
    "BlockLayout",
    "SparseConfig",
    "LayerPlan",
    "AttentionStats",
    "available_methods",
    "available_backends",
    "entropy_scale_factor",
    "calibrate",
    "Calibration",
    "load_calibration",
    "__version__",
]
