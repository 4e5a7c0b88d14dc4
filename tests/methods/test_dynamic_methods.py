"""What pyramid and vmoba share: text blocks kept, a real pipeline patched end to end, options checked first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdit
from fastdit import TokenGrid, Tiling
from fastdit.pipelines.tiny import build_tiny_wan_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

DYNAMIC = ("pyramid", "vmoba")


@pytest.mark.parametrize("method", DYNAMIC)
def test_text_blocks_are_attended_and_attend_everything(method):
    grid = TokenGrid(2, 8, 8, text_tokens=5)
    tiling = Tiling.create(grid, 16)
    q, k = (tiling.to_tile_order(torch.randn(1, 2, grid.num_tokens, 16)) for _ in range(2))
    mask = fastdit.build_layout(method, grid, block_size=16, q=q, k=k).to_dense_block_mask()
    nv = tiling.video_blocks
    assert mask.shape == (2, nv + 1, nv + 1)
    assert bool(mask[:, :, nv:].all()) and bool(mask[:, nv:, :].all())
    assert not bool(mask[:, :nv, :nv].all())  # the video part is sparse


@pytest.mark.parametrize("method", DYNAMIC)
def test_padding_never_counts(method):
    grid = TokenGrid(3, 6, 10)  # tiles of 16 tokens leave a quarter of tile order as padding
    tiling = Tiling.create(grid, 16)
    q, k = (tiling.to_tile_order(torch.randn(1, 2, grid.num_tokens, 16)) for _ in range(2))
    noisy_q, noisy_k = q.clone(), k.clone()
    noisy_q[:, :, ~tiling.valid], noisy_k[:, :, ~tiling.valid] = 50.0, -50.0
    clean = fastdit.build_layout(method, grid, block_size=16, q=q, k=k).to_level_map()
    noisy = fastdit.build_layout(method, grid, block_size=16, q=noisy_q, k=noisy_k).to_level_map()
    assert tiling.padding_fraction > 0 and torch.equal(clean, noisy)


@pytest.mark.parametrize("method", DYNAMIC)
def test_wrongly_shaped_q_is_a_clear_error(method):
    grid = TokenGrid(2, 8, 8)
    q = torch.randn(1, 2, grid.num_tokens + 3, 16)
    with pytest.raises(ValueError, match="tile order"):
        fastdit.build_layout(method, grid, block_size=16, q=q, k=q)




@pytest.fixture(scope="module")
def pipe():
    return build_tiny_wan_pipeline()


def _generate(pipe) -> np.ndarray:
    return pipe(prompt="a red ball bouncing in a white room", height=64, width=96, num_frames=9,
                num_inference_steps=3, max_sequence_length=16, output_type="np",
                generator=torch.Generator().manual_seed(0)).frames


@pytest.fixture(scope="module")
def reference(pipe) -> np.ndarray:
    return _generate(pipe)


@pytest.mark.parametrize("method", DYNAMIC)
def test_tiny_wan_pipeline_end_to_end(pipe, reference, method):
    fastdit.apply(pipe, method=method, preset=None, dense_steps=1, block_size=16)
    try:
        sparse = _generate(pipe)
        stats = fastdit.stats(pipe)
    finally:
        fastdit.remove(pipe)
    assert np.isfinite(sparse).all() and sparse.shape == reference.shape
    assert any(not r.dense and r.density < 1.0 for r in stats.records)  # a layer really ran sparse
    assert all(r.dense for r in stats.records if r.step == 0)  # the dense warm-up step
    assert np.array_equal(_generate(pipe), reference)  # remove() restores the original exactly


@pytest.mark.parametrize("method, options", [
    ("pyramid", {"thresholds": (0.6, 0.5, 0.7, 0.8)}),
    ("pyramid", {"levels": 0, "thresholds": (0.5,)}),
    ("vmoba", {"threshold": 0.0}),
    ("vmoba", {"chunk_3d": (1, 1, 1.5)}),
])
def test_bad_options_fail_before_anything_is_patched(pipe, method, options):
    processors = [block.attn1.processor for block in pipe.transformer.blocks]
    with pytest.raises(ValueError):
        fastdit.apply(pipe, method=method, preset=None, **options)
    assert not fastdit.is_patched(pipe)
    assert [block.attn1.processor for block in pipe.transformer.blocks] == processors
