"""What pyramid, vmoba and sol share: text blocks kept, a real pipeline patched end to end, options checked first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdit
from fastdit import TokenGrid
from fastdit.dummy.wan import dummy_wan_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

DYNAMIC = ("pyramid", "vmoba", "sol")


@pytest.mark.parametrize("method", DYNAMIC)
def test_text_blocks_are_attended_and_attend_everything(method):
    grid = TokenGrid(2, 8, 8, text_tokens=5)
    q, k = (torch.randn(1, 2, grid.num_tokens, 16) for _ in range(2))
    layout = fastdit.build_layout(method, grid, block_size=16, q=q, k=k, layer=1)
    mask, nv = layout.to_dense_block_mask(), layout.order.video_blocks
    assert mask.shape == (2, nv + 1, nv + 1)
    assert bool(mask[:, :, nv:].all()) and bool(mask[:, nv:, :].all())
    assert not bool(mask[:, :nv, :nv].all())  # the video part is sparse


@pytest.mark.parametrize("method", ("pyramid", "vmoba"))  # sol's statistics include the text blocks, as upstream's
def test_text_never_enters_the_video_choice(method):
    grid = TokenGrid(3, 6, 10, text_tokens=7)
    q, k = (torch.randn(1, 2, grid.num_tokens, 16) for _ in range(2))
    loud_q, loud_k = q.clone(), k.clone()
    loud_q[:, :, -7:], loud_k[:, :, -7:] = 50.0, -50.0
    quiet = fastdit.build_layout(method, grid, block_size=16, q=q, k=k, layer=2).to_level_map()
    loud = fastdit.build_layout(method, grid, block_size=16, q=loud_q, k=loud_k, layer=2).to_level_map()
    assert torch.equal(quiet, loud)


@pytest.mark.parametrize("method", DYNAMIC)
def test_wrongly_shaped_q_is_a_clear_error(method):
    grid = TokenGrid(2, 8, 8)
    q = torch.randn(1, 2, grid.num_tokens + 3, 16)
    with pytest.raises(ValueError, match="expected 128 tokens"):
        fastdit.build_layout(method, grid, block_size=16, q=q, k=q)


@pytest.fixture(scope="module")
def pipe():
    return dummy_wan_pipeline()


def _generate(pipe, height: int = 64, width: int = 96, num_frames: int = 9) -> np.ndarray:
    return pipe(prompt="a red ball bouncing in a white room", height=height, width=width, num_frames=num_frames,
                num_inference_steps=3, max_sequence_length=16, output_type="np",
                generator=torch.Generator().manual_seed(0)).frames


# VMoBA keys a query block by the union of its 16 queries' chunks: on random weights that union covers a tiny
# grid whole, so it gets a 5 x 8 x 12 token grid and chunks smaller than the published ones
SETTINGS = {"pyramid": ({}, {}), "sol": ({}, {}),
            "vmoba": ({"chunk_1d": 1, "chunk_2d": (4, 4), "chunk_3d": (1, 4, 4)},
                      {"height": 128, "width": 192, "num_frames": 17})}


@pytest.mark.parametrize("method", DYNAMIC)
def test_tiny_wan_pipeline_end_to_end(pipe, method):
    options, size = SETTINGS[method]
    reference = _generate(pipe, **size)
    fastdit.apply(pipe, method=method, preset=None, dense_steps=1, block_size=16, **options)
    try:
        sparse = _generate(pipe, **size)
        stats = fastdit.stats(pipe)
    finally:
        fastdit.remove(pipe)
    assert np.isfinite(sparse).all() and sparse.shape == reference.shape
    assert any(not r.dense and r.density < 1.0 for r in stats.records)  # a layer really ran sparse
    assert all(r.dense for r in stats.records if r.step == 0)  # the dense warm-up step
    assert np.array_equal(_generate(pipe, **size), reference)  # remove() restores the original exactly


@pytest.mark.parametrize("method, options", [
    ("pyramid", {"thresholds": (0.6, 0.5, 0.7, 0.8)}),
    ("pyramid", {"levels": 0, "thresholds": (0.5,)}),
    ("vmoba", {"threshold": 0.0}),
    ("vmoba", {"chunk_3d": (1, 1, 1.5)}),
    ("sol", {"topk_ratio": 1.5}),
    ("radial", {"order": "tiles"}),
    ("grat", {"tile": (1, 8, 8)}),
])
def test_bad_options_fail_before_anything_is_patched(pipe, method, options):
    processors = [block.attn1.processor for block in pipe.transformer.blocks]
    with pytest.raises(ValueError):
        fastdit.apply(pipe, method=method, preset=None, **options)
    assert not fastdit.is_patched(pipe)
    assert [block.attn1.processor for block in pipe.transformer.blocks] == processors
