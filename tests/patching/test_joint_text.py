"""Joint-attention text handling: padded prompt tokens stay masked on the sparse path, text stays dense."""

from __future__ import annotations

import dataclasses
from typing import Callable

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


def test_flux3_calls_with_reference_images_run_dense_and_say_why(cases, forward):
    """FLUX.3 appends reference-image tokens after the image in its single-stream blocks, so non-video tokens sit
    on both sides of it, which fastdit doesn't map: such a call runs dense, as the stock model, with the reason."""
    case = cases["flux3"]
    model = case.build()
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    cond_ids = torch.stack([torch.ones_like(rows), rows, cols, torch.zeros_like(rows)], -1).reshape(-1, 4)
    inputs = dict(case.inputs((1, 16, 16), 1), image_cond_hidden_states=torch.randn(1, 16, 4), image_cond_ids=cond_ids)
    _runs_as_stock_and_says_why(model, inputs, forward, "grid mismatch")


def _runs_as_stock_and_says_why(model, inputs: dict, forward, reason: str) -> None:
    """Under grat, a call fastdit can't map runs dense, equal to the stock model, and every record says ``reason``."""
    stock = forward(model, inputs)
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, **SPARSE_GRAT)
    try:
        out = forward(model, inputs)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert records and all(r.dense and r.reason == reason for r in records)
    torch.testing.assert_close(out, stock, atol=1e-6, rtol=0)


# Mochi is left out: its caption also modulates the video tokens (the time embedding pools it), so a new prompt
# moves every key; its text handling is covered by the padded-prompt test above.
@pytest.mark.parametrize("family", ["hunyuan_video", "hunyuan_video15", "motif_video", "hunyuan_image", "flux",
                                    "chroma", "longcat_image", "ovis_image", "bria", "bria_fibo", "flux2", "bria_fibo2",
                                    "qwen_image", "glm_image", "cogvideox", "cogview3plus", "sd3", "joyimage_edit",
                                    "joyimage_edit_plus", "minimax_h3", "flux3", "krea2", "cogview4", "auraflow",
                                    "easyanimate", "hunyuan_video_framepack", "nucleus_moe_image", "prx",
                                    "ideogram4"])
def test_text_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch, family):
    """Change only the prompt: the key positions that change in the first block's joint self-attention all lie
    where fastdit puts the text (HunyuanVideo-1.5 also appends image and ByT5 tokens, which stay the same)."""
    _check_context_positions(cases[family], forward, monkeypatch, "encoder_hidden_states")


def test_bria_fibo2_prompts_with_different_gist_counts_run_dense(cases, forward):
    """Prompts of 16 and 2 tokens get 8 and 4 gist tokens: the model pads the gist and moves it after the image,
    which fastdit doesn't map, so every call runs dense (as the stock model) and says why."""
    case = cases["bria_fibo2"]
    model = case.build()
    inputs = dict(case.inputs((1, 16, 16), 2), encoder_hidden_states=torch.randn(2, 2, 16, 16),
                  encoder_attention_mask=torch.arange(16) < torch.tensor([[16], [2]]))
    _runs_as_stock_and_says_why(model, inputs, forward, "no grid")


def test_ernie_image_text_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """ERNIE-Image's prompt is ``text_bth``, appended after the image: changing it moves keys there only."""
    _check_context_positions(cases["ernie_image"], forward, monkeypatch, "text_bth")


def test_lumina2_text_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Lumina 2's first joint layer is layer 1, after its image-only noise refiner: its valid prompt tokens come
    first."""
    _check_context_positions(cases["lumina2"], forward, monkeypatch, "encoder_hidden_states", layer=1)


def test_omnigen_prompt_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """OmniGen's prompt ids (and the time token) come before the image."""
    _check_context_positions(cases["omnigen"], forward, monkeypatch, "input_ids")


def test_z_image_caption_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Z-Image's caption comes after the image and the image's padding to 32 tokens."""
    _check_context_positions(cases["z_image"], forward, monkeypatch, "cap_feats", lambda caps: [c + 1 for c in caps])


def _z_image_omni(grid, batch: int) -> dict:
    """Omni-mode inputs: two captions, a reference image and the target, SigLIP features of both (sample ``i``'s
    target SigLIP grid is ``(2 + 4 i) x 6``, so two samples differ in length after the target only)."""
    _, h, w = grid
    g = torch.Generator().manual_seed(0)
    return dict(x=[[torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 2 * h, 2 * w, generator=g)]
                   for _ in range(batch)],
                t=torch.full((batch,), 0.5),
                cap_feats=[[torch.randn(5, 16, generator=g), torch.randn(3, 16, generator=g)] for _ in range(batch)],
                siglip_feats=[[torch.randn(3, 3, 8, generator=g), torch.randn(2 + 4 * i, 6, 8, generator=g)]
                              for i in range(batch)],
                image_noise_mask=[[0, 1] for _ in range(batch)])


def _z_image_omni_case(cases):
    """The Z-Image case as the omni model (with SigLIP) on omni inputs."""
    from dataclasses import replace

    from fastdit.dummy.image import dummy_z_image_transformer

    return replace(cases["z_image"], build=lambda: dummy_z_image_transformer(siglip_feat_dim=8), inputs=_z_image_omni)


def test_z_image_omni_runs_sparse_with_references_before_and_siglip_after(cases, forward):
    """Omni mode joins ``[captions ; reference ; target ; padding ; SigLIP]``: the grid is the target's, with 32 + 32
    caption and 32 reference tokens before it, and a batch whose samples differ after the target runs sparse."""
    case = _z_image_omni_case(cases)
    model = case.build()
    inputs = case.inputs((1, 14, 18), 2)
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, **SPARSE_GRAT)
    try:
        out = forward(model, inputs)
        grid = model._fastdit_state.context.grid
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    assert (grid.t, grid.h, grid.w, grid.text_position, grid.text_before) == (1, 14, 18, "around", 96)
    assert grid.text_tokens == 96 + 4 + 32 + 64  # then the target's padding and the longer sample's SigLIP
    assert records and all(not r.dense for r in records) and torch.isfinite(out).all()


@pytest.mark.parametrize("changed, change", [
    ("cap_feats", lambda c: [[a + 1, b + 1] for a, b in c]),  # the captions: before the target
    ("siglip_feats", lambda s: [[a + 1, b + 1] for a, b in s]),  # SigLIP features: after it
])
def test_z_image_omni_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch, changed, change):
    """(The reference image can't be changed alone: the noise refiner attends it with the target.)"""
    _check_context_positions(_z_image_omni_case(cases), forward, monkeypatch, changed, change)


def test_ideogram4_padded_prompt_runs_sparse_and_equals_the_unpadded_prompt(cases, forward):
    """Ideogram 4 left-pads its prompt and keeps the padding apart with its segment mask: that runs sparse, and
    every prompt and image token equals the same sample packed without padding (padding outputs are dropped by
    the pipeline)."""
    case = cases["ideogram4"]
    model = case.build()
    inputs = case.inputs(GRID, 2)
    pads = (inputs["segment_ids"] < 0).sum(1).tolist()
    fastdit.apply(model, method="grat", preset=None, block_size=16, dense_steps=0, **SPARSE_GRAT)
    try:
        padded = forward(model, inputs)
        records = fastdit.stats(model).records
        trimmed = [forward(model, {k: v[i:i + 1, pad:] if k != "timestep" else v[i:i + 1] for k, v in inputs.items()})
                   for i, pad in enumerate(pads)]
    finally:
        fastdit.remove(model)
    assert records and all(not r.dense for r in records)
    for i, pad in enumerate(pads):
        torch.testing.assert_close(padded[i:i + 1, pad:], trimmed[i], atol=2e-5, rtol=0)


def test_hidream_t5_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """HiDream's prompt comes as T5 (and Llama) tokens after the image: changing only the T5 ones moves keys
    there only."""
    _check_context_positions(cases["hidream"], forward, monkeypatch, "encoder_hidden_states_t5")


def test_helios_history_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Helios puts its history before the video: changing only the short-range history moves keys there only."""
    _check_context_positions(cases["helios"], forward, monkeypatch, "latents_history_short")


def test_minimax_h3_audio_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """MiniMax-H3 packs its audio between the conditioning frames and the target video: changing only the audio
    moves keys among the tokens fastdit keeps dense before the video."""
    _check_context_positions(cases["minimax_h3"], forward, monkeypatch, "audio_hidden_states")


# what changes only the reference images in each JoyImage case's hidden_states (grid (1, 16, 16)): JoyImage-Edit's
# items before the last (the target), JoyImage-Edit-Plus's patches after the target's 16 x 16
_REFERENCES = {"joyimage_edit": lambda x: torch.cat([x[:, :-1] + 1.0, x[:, -1:]], 1),
               "joyimage_edit_plus": lambda x: torch.cat([x[:, :256], x[:, 256:] + 1.0], 1)}


@pytest.mark.parametrize("family", list(_REFERENCES))
def test_joyimage_reference_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch, family):
    """JoyImage puts its reference images after the target: changing only them moves keys in the dense part."""
    _check_context_positions(cases[family], forward, monkeypatch, "hidden_states", _REFERENCES[family])


def test_qwen_image_edit_reference_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """Qwen-Image-Edit appends a reference image after the target (the prompt is before it): changing only the
    reference moves keys among the tokens fastdit keeps dense after the target."""
    case = cases["qwen_image"]
    reference = (1, 4, 4)

    def with_reference(grid, batch):
        inputs = case.inputs(grid, batch)
        extra = torch.randn(batch, 16, inputs["hidden_states"].shape[-1], generator=torch.Generator().manual_seed(1))
        return dict(inputs, hidden_states=torch.cat([inputs["hidden_states"], extra], 1),
                    img_shapes=[[(1, *grid[1:]), reference]] * batch)

    edit = dataclasses.replace(case, inputs=with_reference)
    records = _check_context_positions(edit, forward, monkeypatch, "hidden_states",
                                       lambda x: torch.cat([x[:, :-16], x[:, -16:] + 1], 1))
    # the grid holds (radial keeps a one-frame image whole, so it says "full layout", not "grid mismatch")
    assert records and all(r.reason == "full layout" and r.tokens == 7 + 16 * 16 + 16 for r in records)


def test_qwen_image21_cached_prefix_keys_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """On a cached step Qwen-Image 2.1 takes the prompt's keys from its KV cache and puts them before the target's:
    changing only the cached keys moves keys there only."""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    def shifted(cache):
        other = QwenImage21KVCache(len(cache.layer_caches))
        for layer, (key, value) in zip(other.layer_caches, (c.get() for c in cache.layer_caches)):
            layer.store(key + 1, value)
        return other

    _check_context_positions(cases["qwen_image21"], forward, monkeypatch, "kv_cache", shifted)


def test_framepack_history_tokens_are_where_the_model_puts_them(cases, forward, monkeypatch):
    """HunyuanVideo-Framepack packs its history before the video (and its prompt after it, checked above):
    changing only the clean latents moves keys among the tokens fastdit keeps dense before the video."""
    _check_context_positions(cases["hunyuan_video_framepack"], forward, monkeypatch, "latents_clean")


def _check_context_positions(case, forward, monkeypatch, changed_input: str,
                             change: Callable[[torch.Tensor], torch.Tensor] = lambda x: x + 1,
                             layer: int = 0) -> list:
    """Run ``case`` twice, the second time with ``change`` applied to input ``changed_input`` only: every key
    position of layer ``layer``'s self-attention that moves is one fastdit keeps dense (text, or other
    non-video tokens), where the grid says they sit. Returns the calls' ``stats`` records."""
    from fastdit.runtime.engine import SparseAttention

    model = case.build()
    grid = case.grids[0]
    seen = []
    call = SparseAttention.__call__

    def spy(self, q, k, v, **kwargs):
        if kwargs["layer"] == layer:
            seen.append((k.detach().clone(), kwargs["text_tokens"], kwargs["text_position"], self.context.grid))
        return call(self, q, k, v, **kwargs)

    monkeypatch.setattr(SparseAttention, "__call__", spy)
    inputs = case.inputs(grid, 1)
    other = dict(inputs, **{changed_input: change(inputs[changed_input])})
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0)
    try:
        forward(model, inputs)
        forward(model, other)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    (k1, text, position, grid), (k2, *_) = seen[0], seen[len(seen) // 2]  # the same call in each forward
    changed = (k1 != k2).any(-1).any(1)[0].nonzero().flatten()  # key positions [S] that the prompt moved
    tokens = k1.shape[2]
    before = {"before": text, "after": 0, "around": grid.text_before}[position]
    expected = torch.cat([torch.arange(before), torch.arange(tokens - (text - before), tokens)])
    assert text > 0 and changed.numel() and set(changed.tolist()) <= set(expected.tolist()), \
        (case.name, text, position, changed)
    return records
