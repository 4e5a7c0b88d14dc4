"""The web demo: the same prompt and seed generated dense and sparse, side by side (``fastdit app``)."""

from .session import DemoRequest, DemoResult, DemoSession, Limits

__all__ = ["DemoRequest", "DemoResult", "DemoSession", "Limits"]
