"""``with fastdit.sparse(model, ...)``: patched inside the block, restored exactly after it, also when it
raises; a model fastdit already patches is refused rather than unpatched on the way out."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_transformer
from fastdit.patching import patch_config


@pytest.fixture(scope="module")
def model():
    return dummy_wan_transformer(num_layers=2, patch_size=(1, 1, 1))


def _run(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model(torch.randn(1, 16, 4, 8, 8, generator=g), torch.tensor([500]),
                     torch.randn(1, 7, 32, generator=g), return_dict=False)[0]


def test_the_block_runs_sparse_and_leaves_the_model_as_it_was(model):
    processors = [block.attn1.processor for block in model.blocks]
    dense = _run(model)
    with fastdit.sparse(model, "radial", preset=None, block_size=16, dense_steps=0) as patched:
        assert patched is model and fastdit.is_patched(model)
        sparse = _run(model)
        assert fastdit.stats(model).sparse_fraction() > 0
    assert not fastdit.is_patched(model)
    assert [block.attn1.processor for block in model.blocks] == processors
    assert not torch.equal(sparse, dense) and torch.equal(_run(model), dense)


def test_an_exception_in_the_block_still_restores_the_model(model):
    with pytest.raises(RuntimeError, match="inside"):
        with fastdit.sparse(model, "grat", preset=None, block_size=16):
            raise RuntimeError("inside")
    assert not fastdit.is_patched(model)


def test_a_patched_model_is_refused_and_keeps_its_patch(model):
    fastdit.apply(model, "grat", preset=None, block_size=16)
    try:
        with pytest.raises(ValueError, match=r"already patched by fastdit \(grat\)"):
            with fastdit.sparse(model, "radial", preset=None, block_size=16):
                pass
        assert patch_config(model).method == "grat"
    finally:
        fastdit.remove(model)
