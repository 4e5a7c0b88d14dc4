"""The generic path: the stock processor stays installed and fastdit takes its call where diffusers dispatches
it, on video self-attention modules only, handing back the user's backend choice on ``remove``."""

from __future__ import annotations

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_transformer
from fastdit.patching import dispatch

INPUTS = dict(hidden_states=torch.randn(1, 16, 4, 16, 16, generator=torch.Generator().manual_seed(0)),
              timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 7, 32), return_dict=False)


def test_the_users_backend_stays_for_cross_attention_and_comes_back_on_remove():
    from diffusers.models.attention_dispatch import AttentionBackendName

    model = dummy_wan_transformer(num_layers=2)
    for block in model.blocks:
        block.attn1.processor._attention_backend = AttentionBackendName.NATIVE
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0)
    try:
        assert all(b.attn1.processor._attention_backend == "fastdit" for b in model.blocks)
        assert all(b.attn2.processor._attention_backend is None for b in model.blocks)  # cross: untouched
        with torch.no_grad():
            model(**INPUTS)
        assert all(not r.dense for r in fastdit.stats(model).records)
    finally:
        fastdit.remove(model)
    assert all(b.attn1.processor._attention_backend is AttentionBackendName.NATIVE for b in model.blocks)


def test_a_call_fastdit_cannot_take_goes_to_the_users_backend():
    """Dropout or a causal flag isn't sparse attention's to drop: such a call runs as the user asked."""
    model = dummy_wan_transformer(num_layers=1)
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0)
    try:
        handler = model._fastdit_state.dispatched[0]  # fastdit's side of blocks.0.attn1
        q, k, v = (torch.randn(1, 64, 2, 12) for _ in range(3))
        causal = handler.backend(q, k, v, None, 0.0, True, None, False, None)
        expected = torch.nn.functional.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)),
                                                                    is_causal=True).transpose(1, 2)
        torch.testing.assert_close(causal, expected)
    finally:
        fastdit.remove(model)


def test_a_diffusers_without_the_registry_fastdit_expects_is_one_clear_error(monkeypatch):
    from diffusers.models import attention_dispatch

    monkeypatch.delattr(attention_dispatch, "_AttentionBackendRegistry")
    with pytest.raises(RuntimeError, match=r"diffusers \S+ has no attention backend registry .* tested with"):
        dispatch.check_registry()


def test_the_backend_outside_a_patched_module_says_so():
    with pytest.raises(RuntimeError, match="outside a module fastdit patched"):
        dispatch._CURRENT.handler = None
        dispatch._dispatched(*(torch.randn(1, 8, 2, 4) for _ in range(3)))


def test_a_processor_that_dispatches_without_backend_is_taken_by_a_wrapper_that_leaves_other_models_alone():
    """Cosmos's processor calls ``dispatch_attention_fn`` without ``backend=``: fastdit wraps the function of
    diffusers' Cosmos module while a Cosmos model is patched; an unpatched one beside it runs exactly as before,
    and the last ``remove`` puts the module's own function back."""
    from diffusers.models.transformers import transformer_cosmos

    from fastdit.dummy.video import dummy_cosmos_transformer

    stock = transformer_cosmos.dispatch_attention_fn
    patched, bystander = dummy_cosmos_transformer(), dummy_cosmos_transformer()
    inputs = dict(hidden_states=torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0)),
                  timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 7, 16), fps=30,
                  return_dict=False)
    with torch.no_grad():
        before = bystander(**inputs)[0]
        fastdit.apply(patched, method="radial", preset=None, block_size=16, dense_steps=0)
        try:
            assert transformer_cosmos.dispatch_attention_fn is not stock
            sparse = patched(**inputs)[0]
            beside = bystander(**inputs)[0]
            records = fastdit.stats(patched).records
        finally:
            fastdit.remove(patched)
    assert transformer_cosmos.dispatch_attention_fn is stock
    assert records and all(not r.dense for r in records)
    assert not torch.equal(sparse, before)
    assert torch.equal(beside, before)


def test_a_block_mask_goes_to_the_users_backend():
    """A model that hands its self-attention a flex ``BlockMask`` (Kandinsky 5 set to its own NABLA attention)
    runs as its user asked: fastdit passes the call on to the user's backend instead of reading the mask."""
    from diffusers.models.attention_dispatch import AttentionBackendName
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    model = dummy_wan_transformer(num_layers=1)
    model.blocks[0].attn1.processor._attention_backend = AttentionBackendName.FLEX
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0)
    try:
        handler = model._fastdit_state.dispatched[0]
        q, k, v = (torch.randn(1, 64, 2, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
        mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, 64, 64, device="cpu")
        out = handler.backend(q, k, v, mask, 0.0, False, None, False, None)
    finally:
        fastdit.remove(model)
    expected = flex_attention(*(x.transpose(1, 2) for x in (q, k, v)), block_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def _side_calls(model, inputs, monkeypatch):
    """Run ``model`` sparse on ``inputs`` and record each side-keys call: ``(query, key, value, mask, out,
    layout)``, with the engine's layout of its video part; and the stats' records."""
    from fastdit.patching.dispatch import DispatchedAttention

    calls, side = [], DispatchedAttention.side

    def recorded(handler, query, key, value, backend, parallel_config, call):
        out = side(handler, query, key, value, backend, parallel_config, call)
        layout = handler.engine.context.stats.last_layout
        calls.append((query, key, value, call["attn_mask"], out, layout))
        return out

    monkeypatch.setattr(DispatchedAttention, "side", recorded)
    fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0, dense_layers=0)
    try:
        with torch.no_grad():
            model(**inputs)
        records = fastdit.stats(model).records
    finally:
        fastdit.remove(model)
    return calls, records


def _video_mask(layout, video: int) -> torch.Tensor:
    """The ``[video, video]`` token mask of the engine's block ``layout``, in the model's token order."""
    tokens = layout.to_dense_block_mask()[0].repeat_interleave(16, 0).repeat_interleave(16, 1)
    destination = layout.order.destination
    return tokens[destination][:, destination][:video, :video]


def test_side_keys_are_attended_as_the_models_own_block_mask_says(cases, monkeypatch):
    """Wan-Animate 2 sends its denoising self-attention to flex with its own ``BlockMask`` over keys packed
    ``[video | reference]``: fastdit runs the video part sparse and each frame's reference frame dense. Each
    call's output is exactly the attention under the model's mask with its video-to-video part narrowed to
    fastdit's layout (video frame ``f`` attends reference frame ``f - 1``, and only that); the padded rows stay
    zero."""
    case = cases["wan_animate2"]
    calls, records = _side_calls(case.build(), case.inputs(case.grids[1], 2), monkeypatch)
    assert len(calls) == 2 and records and all(not r.dense and r.density < 1 for r in records)
    t, h, w = case.grids[1]
    video = t * h * w
    for query, key, value, mask, out, layout in calls:
        q_idx, kv_idx = torch.arange(query.shape[1])[:, None], torch.arange(key.shape[1])[None]
        allowed = mask.mask_mod(torch.tensor(0), torch.tensor(0), q_idx, kv_idx).clone()
        assert allowed[:video, video:query.shape[1]].sum() == 0  # the 128-token padding is never attended
        allowed[:video, :video] = _video_mask(layout, video)
        expected = torch.nn.functional.scaled_dot_product_attention(
            *(x.transpose(1, 2) for x in (query[:, :video], key, value)), attn_mask=allowed[:video]).transpose(1, 2)
        torch.testing.assert_close(out[:, :video], expected, atol=1e-5, rtol=1e-5)
        assert not out[:, video:].any()
        frame = h * w  # the mask itself: frame f >= 1 over reference frame f - 1, frame 0 over none
        reference = allowed[:video, query.shape[1]:].view(t, frame, -1).any(1)
        each = torch.cat([torch.zeros(1, t - 1, dtype=torch.bool), torch.eye(t - 1, dtype=torch.bool)])
        assert torch.equal(reference[:, :(t - 1) * frame].view(t, t - 1, frame).any(-1), each)
        assert not reference[:, (t - 1) * frame:].any()


@pytest.mark.parametrize("cached", [True, False])
def test_a_kv_cache_before_the_video_keys_is_attended_as_the_model_says(cases, monkeypatch, cached):
    """AnyFlow-FAR's autoregressive step sends its chunk's queries, padded to 128 tokens, to flex with no mask
    over keys ``[KV cache | chunk | zero keys]``: every query sees every key, the zero keys too. fastdit keeps the
    processor's own backend (any other raises) and runs the chunk over itself sparse, the cache and zero keys
    dense: each call's output is exactly the attention over all keys with the chunk-to-chunk part narrowed to
    fastdit's layout; the padded rows stay zero. The first chunk (nothing cached, here 256 tokens: no padding)
    has no side keys at all."""
    case = cases["anyflow_far"]
    model = case.build()
    t, h, w = case.grids[1 if cached else 0]
    inputs = case.inputs((t, h, w), 2)
    if not cached:
        inputs.update(chunk_partition=[t], kv_cache_flag={"num_cached_chunks": 0, "is_cache_step": False})
    video = t * h * w
    cache = (2 * h // 4) * (2 * w // 4) + 4 * h * w if cached else 0  # the case's compressed and full keys
    calls, records = _side_calls(model, inputs, monkeypatch)
    assert all(block.attn1.processor._attention_backend == "flex" for block in model.blocks)
    assert len(calls) == 2 and records and all(not r.dense and r.density < 1 for r in records)
    for query, key, value, mask, out, layout in calls:
        assert mask is None and key.shape[1] == cache + query.shape[1] >= cache + video
        assert query.shape[1] > video if cached else query.shape[1] == video
        assert key[:, cache:cache + video].any(-1).all() and not key[:, cache + video:].any()
        allowed = torch.ones(video, key.shape[1], dtype=torch.bool)
        allowed[:, cache:cache + video] = _video_mask(layout, video)
        expected = torch.nn.functional.scaled_dot_product_attention(
            *(x.transpose(1, 2) for x in (query[:, :video], key, value)), attn_mask=allowed).transpose(1, 2)
        torch.testing.assert_close(out[:, :video], expected, atol=1e-5, rtol=1e-5)
        assert not out[:, video:].any()


def test_a_kv_cache_writing_pass_runs_as_the_model_sends_it(cases):
    """AnyFlow-FAR's cache-writing pass attends chunk-causally through its own ``BlockMask`` over every chunk
    so far (the first compressed, the next two at full resolution): fastdit reads no grid for it, the engine
    serves none of its calls, and the cache it writes is the unpatched model's, bit for bit."""
    case = cases["anyflow_far"]
    model = case.build()
    _, h, w = case.grids[0]
    step, latents = case.inputs(case.grids[0], 1), torch.randn(1, 5, 16, 2 * h, 2 * w)
    written = []
    for patched in (False, True):
        cache = {layer: {name: torch.zeros_like(x) for name, x in parts.items()}
                 for layer, parts in step["kv_cache"].items()}
        inputs = dict(step, hidden_states=latents,
                      timestep=torch.zeros(1, 5), r_timestep=torch.zeros(1, 5), chunk_partition=[1, 2, 2],
                      kv_cache=cache, kv_cache_flag={"num_cached_chunks": 2, "is_cache_step": True})
        if patched:
            fastdit.apply(model, method="radial", preset=None, block_size=16, dense_steps=0, dense_layers=0)
        try:
            with torch.no_grad():
                model(**inputs, return_dict=False)
            if patched:
                records = fastdit.stats(model).records
                assert model._fastdit_state.context.grid is None and not any(r.calls for r in records)
        finally:
            if patched:
                fastdit.remove(model)
        written.append(torch.cat([x.flatten() for parts in cache.values() for x in parts.values()]))
    assert written[0].any() and torch.equal(*written)
