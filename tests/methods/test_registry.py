"""A method is one file plus one line in a table: a method defined outside fastdit and registered is a method
like the built-in ones (layouts, text blocks, caching, ``apply``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fastdit
from fastdit.layout.order import TokenOrder
from fastdit.methods import Method, registry


@dataclass(frozen=True)
class WindowOptions:
    frames: int = 1


def window_mask(order: TokenOrder, options: WindowOptions) -> torch.Tensor:
    """Keep the key blocks whose first token lies within ``frames`` frames of the query block's first token."""
    per_frame = order.grid.h * order.grid.w
    first = torch.arange(order.video_blocks) * order.block_size // per_frame
    return ((first[:, None] - first[None, :]).abs() <= options.frames).unsqueeze(0)


@pytest.fixture
def window(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))  # leave the table as it was
    return fastdit.methods.register(Method("window", WindowOptions, window_mask, orders=("raster",),
                                           summary="local frames"))


def test_a_registered_method_builds_layouts_with_text_blocks(window):
    assert "window" in fastdit.available_methods()
    grid = fastdit.TokenGrid(8, 4, 8, text_tokens=32)
    layout = fastdit.build_layout("window", grid, block_size=32, frames=2)
    mask = layout.to_dense_block_mask()[0]
    assert mask[:, -1].all() and mask[-1].all()  # the text block: attended by all, attends all
    assert not mask[0, 7] and mask[0, 2] and 0 < layout.density() < 1
    with pytest.raises(ValueError, match="unknown option"):
        fastdit.build_layout("window", grid, block_size=32, radius=1)


def test_register_refuses_what_is_not_a_method():
    with pytest.raises(TypeError, match="takes a fastdit.methods.Method"):
        fastdit.methods.register(window_mask)
