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


@pytest.mark.parametrize("family", ["hunyuan_video", "hunyuan_video15", "motif_video", "hunyuan_image", "mochi",
                                    "lumina2"])
@pytest.mark.parametrize("method", ["radial", "grat"])
def test_padded_prompt_runs_sparse_and_equals_the_unpadded_prompt(cases, forward, family, method):
    case = cases[family]
    if case.image and method == "radial":
        pytest.skip("radial keeps a single image whole (its only frame distance is 0): nothing runs sparse")
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
        grid = model._fastdit_state.context.grid  # what the pre-hook recorded for the forward call
        assert grid.text_tokens == 7 and grid.text_position == "before"
    finally:
        fastdit.remove(model)
    assert sorted(r.layer for r in records) == [0, 1]  # double block, then single block
    assert all(not r.dense and r.tokens == 16 * 16 + 7 for r in records)


# Mochi is left out: its caption also modulates the video tokens (the time embedding pools it), so a new prompt
# moves every key; its text handling is covered by the padded-prompt test above.
@pytest.mark.parametrize("family", ["hunyuan_video", "hunyuan_video15", "motif_video", "hunyuan_image", "flux",
                                    "chroma", "longcat_image", "ovis_image", "bria", "flux2", "qwen_image", "cogvideox",
                                    "cogview3plus", "sd3", "cogview4", "auraflow",
                                    "easyanimate"])
def test_text_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch, family):
    """Change only the prompt: the key positions that change in the first block's joint self-attention all lie
    where fastdit puts the text (HunyuanVideo-1.5 also appends image and ByT5 tokens, which stay the same)."""
    _check_context_positions(cases[family], forward, monkeypatch, "encoder_hidden_states")


def test_lumina2_text_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Lumina 2's first joint layer is layer 1, after its image-only noise refiner: its valid prompt tokens come
    first."""
    _check_context_positions(cases["lumina2"], forward, monkeypatch, "encoder_hidden_states", layer=1)


def test_omnigen_prompt_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """OmniGen's prompt ids (and the time token) come before the image."""
    _check_context_positions(cases["omnigen"], forward, monkeypatch, "input_ids")


def test_hidream_t5_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """HiDream's prompt comes as T5 (and Llama) tokens after the image: changing only the T5 ones moves keys
    there only."""
    _check_context_positions(cases["hidream"], forward, monkeypatch, "encoder_hidden_states_t5")


def test_helios_history_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Helios puts its history before the video: changing only the short-range history moves keys there only."""
    _check_context_positions(cases["helios"], forward, monkeypatch, "latents_history_short")


def _check_context_positions(case, forward, monkeypatch, changed_input: str, layer: int = 0) -> None:
    from fastdit.runtime.engine import SparseAttention

    model = case.build()
    grid = case.grids[0]
    seen = []
    call = SparseAttention.__call__

    def spy(self, q, k, v, **kwargs):
        if kwargs["layer"] == layer:
            seen.append((k.detach().clone(), kwargs["text_tokens"], kwargs["text_position"]))
        return call(self, q, k, v, **kwargs)

    monkeypatch.setattr(SparseAttention, "__call__", spy)
    inputs = case.inputs(grid, 1)
    other = dict(inputs, **{changed_input: inputs[changed_input] + 1})
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0)
    try:
        forward(model, inputs)
        forward(model, other)
    finally:
        fastdit.remove(model)
    (k1, text, position), (k2, *_) = seen[0], seen[len(seen) // 2]  # the same call in each forward
    changed = (k1 != k2).any(-1).any(1)[0].nonzero().flatten()  # key positions [S] that the prompt moved
    tokens = k1.shape[2]
    expected = torch.arange(text) if position == "before" else torch.arange(tokens - text, tokens)
    assert text > 0 and changed.numel() and set(changed.tolist()) <= set(expected.tolist()), \
        (case.name, text, position, changed)
