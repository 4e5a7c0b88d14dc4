"""Joint-attention text handling: padded prompt tokens stay masked on the sparse path, text stays dense."""

from __future__ import annotations

import pytest
import torch

import fastdit

# criss-cross planes keep every group of these tiny grids; one-group surround leaves something to drop
SPARSE_GRAT = {"mode": "surround", "radius": 0}

GRID = (4, 8, 8)


def _trimmed(inputs: dict, sample: int, valid: int) -> dict:
    """Sample ``sample`` of ``inputs`` with its prompt cut to its ``valid`` tokens and no padding left."""
    out = {k: (v[sample:sample + 1] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] > 1 else v)
           for k, v in inputs.items()}
    out["encoder_hidden_states"] = out["encoder_hidden_states"][:, :valid]
    out["encoder_attention_mask"] = out["encoder_attention_mask"][:, :valid]
    return out


@pytest.mark.parametrize("family", ["hunyuan_video", "mochi"])
@pytest.mark.parametrize("method", ["radial", "grat"])
def test_padded_prompt_runs_sparse_and_equals_the_unpadded_prompt(cases, forward, family, method):
    case = cases[family]
    model = case.build()
    inputs = case.inputs(GRID, 2)  # the two samples have different numbers of valid prompt tokens
    fastdit.apply(model, method=method, preset=None, block_size=16, **(SPARSE_GRAT if method == "grat" else {}))
    try:
        padded = forward(model, inputs)
        records = fastdit.stats(model).records
        trimmed = [forward(model, _trimmed(inputs, i, int(n)))
                   for i, n in enumerate(inputs["encoder_attention_mask"].sum(1))]
    finally:
        fastdit.remove(model)
    assert records and all(not r.dense for r in records)
    torch.testing.assert_close(padded, torch.cat(trimmed), atol=2e-5, rtol=0)


def test_flux_single_stream_blocks_get_the_text_length_from_txt_ids(cases, forward):
    case = cases["flux"]
    model = case.build()
    fastdit.apply(model, method="grat", preset=None, block_size=16, **SPARSE_GRAT)
    try:
        forward(model, case.inputs((1, 16, 16), 1))
        records = fastdit.stats(model).records
        single = model.single_transformer_blocks[0].attn.processor
        assert single.grid.text_tokens == 7 and single.grid.text_position == "before"
    finally:
        fastdit.remove(model)
    assert sorted(r.layer for r in records) == [0, 1]  # double block, then single block
    assert all(not r.dense and r.tokens == 16 * 16 + 7 for r in records)
