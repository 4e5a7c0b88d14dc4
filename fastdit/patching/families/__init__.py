"""Model families: how fastdit recognises a denoiser, finds its video self-attention and reads its latent grid.

``base.py`` defines :class:`Family` and the helpers processors share; one file per family (``wan.py``,
``hunyuan_video.py``, ...) defines its :class:`Family` and processor; ``registry.py`` is the table.
"""

from fastdit.patching.families.base import Family, SparseProcessorMixin, forward_input, read_timestep, unwrap_model
from fastdit.patching.families.registry import (UNSUPPORTED, detect_family, families, register_family,
                                                unsupported_reason)

__all__ = ["Family", "SparseProcessorMixin", "forward_input", "read_timestep", "unwrap_model", "register_family",
           "families", "detect_family", "UNSUPPORTED", "unsupported_reason"]
