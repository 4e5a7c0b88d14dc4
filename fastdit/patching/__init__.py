"""Running sparse attention inside diffusers: ``apply`` / ``remove`` / ``stats`` on a pipeline or a model
(``with sparse(...)``: for one block).

``patch.py`` installs and removes the patch; ``components.py`` is the one place that finds a pipeline's
denoisers; ``presets.py`` the published settings and sizes of real models; ``families/`` what fastdit knows of
each model family (one file each, and a table); ``ops.py`` the custom operators that keep ``torch.compile``
and ``torch.export`` graphs whole; ``parallel/`` diffusers' context parallelism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastdit._lazy import make_lazy

__all__ = ["apply", "remove", "sparse", "stats", "is_patched", "patch_config", "set_observer", "denoisers"]
# imported on first use, so the light modules here (``presets``) import without torch
make_lazy(__name__, {**{name: "patch" for name in __all__}, "denoisers": "components"})

if TYPE_CHECKING:
    from fastdit.patching.components import denoisers
    from fastdit.patching.patch import apply, is_patched, patch_config, remove, set_observer, sparse, stats
