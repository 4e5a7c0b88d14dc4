"""The web demo: the same prompt and seed generated dense and sparse, side by side (``fastdit app``).

Imported lazily, so ``python -m fastdit.app`` checks its arguments before torch and gradio load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastdit._lazy import make_lazy

__all__ = ["DemoRequest", "DemoResult", "DemoSession", "Limits"]
make_lazy(__name__, {name: "session" for name in __all__})

if TYPE_CHECKING:
    from fastdit.app.session import DemoRequest, DemoResult, DemoSession, Limits
