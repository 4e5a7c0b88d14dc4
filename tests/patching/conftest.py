"""Every supported family as a tiny random-weight denoiser plus forward inputs for a chosen latent token grid.

``Case.inputs(grid, batch)`` builds the forward keyword arguments whose self-attention runs over exactly
``grid = (t, h, w)`` video/image tokens (after the family's patchify), so tests can assert the grid fastdit
detects. Joint-attention cases carry padded prompts with a different valid length per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from fastdit.dummy.image import (dummy_auraflow_transformer, dummy_bria_fibo2_transformer,
                                 dummy_cogview3plus_transformer, dummy_cogview4_transformer, dummy_dit_transformer,
                                 dummy_dreamlite_unet, dummy_ernie_image_transformer, dummy_flux_transformer,
                                 dummy_flux_variant, dummy_glm_image_transformer, dummy_hidream_transformer,
                                 dummy_hunyuan_image_transformer, dummy_ideogram4_transformer,
                                 dummy_joyimage_transformer, dummy_krea2_transformer, dummy_lumina2_transformer,
                                 dummy_nucleus_moe_image_transformer, dummy_omnigen_transformer,
                                 dummy_pixart_transformer, dummy_prx_transformer, dummy_qwen_image21_transformer,
                                 dummy_qwen_image_transformer, dummy_sd3_transformer, dummy_sdxl_unet,
                                 dummy_transformer_2d, dummy_unet, dummy_z_image_transformer)
from fastdit.dummy.video import (dummy_allegro_transformer, dummy_anyflow_far_transformer, dummy_anyflow_transformer,
                                 dummy_cogvideox_transformer, dummy_consisid_transformer, dummy_cosmos_transformer,
                                 dummy_easyanimate_transformer, dummy_hunyuan_video15_transformer,
                                 dummy_hunyuan_video_framepack_transformer, dummy_hunyuan_video_transformer,
                                 dummy_kandinsky5_transformer, dummy_kandinsky6_transformer, dummy_latte_transformer,
                                 dummy_ltx2_transformer, dummy_ltx_transformer, dummy_minimax_h3_transformer,
                                 dummy_mochi_transformer, dummy_motif_video_transformer,
                                 dummy_sana_wm_refiner_transformer)
from fastdit.dummy.wan import dummy_wan_transformer, dummy_wan_variant

TEXT = 7


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _padding(batch: int) -> torch.Tensor:
    """``[batch, TEXT]`` prompt masks: sample ``i`` has ``TEXT - 2 - i`` valid tokens (at least one)."""
    valid = torch.tensor([max(TEXT - 2 - i, 1) for i in range(batch)])
    return (torch.arange(TEXT) < valid[:, None]).long()


def _timestep(batch: int, value: float = 500.0) -> torch.Tensor:
    return torch.full((batch,), value)


def _wan(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 16, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 32))


def _wan_vace(grid, batch):
    t, h, w = grid
    return dict(**_wan(grid, batch), control_hidden_states=_randn(batch, 16, t, 2 * h, 2 * w))


def _wan_animate(grid, batch):
    """Latent frame 0 is the reference image; the face video's 77 frames compress to the 21 latent frames."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 12, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_hidden_states_image=_randn(batch, 5, 16),
                pose_hidden_states=_randn(batch, 4, t - 1, 2 * h, 2 * w),
                face_pixel_values=_randn(batch, 3, 77, 16, 16))


def _wan_animate2(grid, batch):
    """A denoising pass against a reference video of ``t - 1`` latent frames, its per-layer keys and values
    cached (random, as the reference pass would have left them), in a segment that fills the model's mask."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    t, h, w = grid
    g = torch.Generator().manual_seed(t * h * w)
    cache = WanAnimate2KVCache(2)
    for layer in cache.layer_caches:
        layer.store(*torch.randn(2, batch, (t - 1) * h * w, 2, 12, generator=g))
    latents = torch.randn(2, batch, 16, t, 2 * h, 2 * w, generator=g)
    return dict(hidden_states=list(latents[0]), condition_latents=list(latents[1]), timestep=_timestep(batch),
                encoder_hidden_states=list(_randn(batch, TEXT, 32)), kv_cache=cache, kv_cache_mode="cached",
                seq_len=t * h * w, reference_grid_sizes=torch.tensor([[t - 1, h, w]] * batch),
                origin_len=4 * (t - 2), origin_area=[16 * h, 16 * w])


def _anyflow_far(grid, batch):
    """An autoregressive step: the fourth chunk (``t`` latent frames) after chunks of 1, 2 and 2 frames, whose
    per-layer keys and values are cached (random, as the cache-writing passes would have left them): the first
    chunk's compressed to the ``compressed_patch_size`` grid, the other two at full resolution."""
    t, h, w = grid
    g = torch.Generator().manual_seed(t * h * w)
    compressed, full = (2 * h // 4) * (2 * w // 4), 4 * h * w
    cache = {layer: {"compressed_cache": torch.randn(2, batch, 2, compressed, 16, generator=g),
                     "full_cache": torch.randn(2, batch, 2, full, 16, generator=g)} for layer in range(2)}
    return dict(hidden_states=torch.randn(batch, t, 16, 2 * h, 2 * w, generator=g),
                timestep=torch.full((batch, t), 500.0), r_timestep=torch.full((batch, t), 400.0),
                encoder_hidden_states=_randn(batch, TEXT, 32), chunk_partition=[1, 2, 2, t], kv_cache=cache,
                kv_cache_flag={"num_cached_chunks": 3, "is_cache_step": False})


def _helios(grid, batch):
    """Video latents with one frame of short- and mid-range history and four of long-range history."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), indices_hidden_states=torch.ones(batch, t),
                latents_history_short=_randn(batch, 4, 1, 2 * h, 2 * w),
                indices_latents_history_short=torch.ones(batch, 1),
                latents_history_mid=_randn(batch, 4, 1, 2 * h, 2 * w), indices_latents_history_mid=torch.ones(batch, 1),
                latents_history_long=_randn(batch, 4, 4, 2 * h, 2 * w),
                indices_latents_history_long=torch.ones(batch, 4))


def _cosmos(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), attention_mask=torch.ones(batch, TEXT), fps=30)


def _hunyuan(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch),
                pooled_projections=_randn(batch, 8), guidance=torch.full((batch,), 3500.0))


def _hunyuan_framepack(grid, batch):
    """HunyuanVideo's inputs plus an image embedding, the next frame's index, two frames of clean and of 2×
    history and eight of 4× history."""
    t, h, w = grid
    history = {name: _randn(batch, 4, frames, 2 * h, 2 * w)
               for name, frames in (("latents_clean", 2), ("latents_history_2x", 2), ("latents_history_4x", 8))}
    return dict(_hunyuan(grid, batch), image_embeds=_randn(batch, 5, 16), indices_latents=torch.arange(t) + 11,
                **history, **{f"indices_{name}": torch.arange(x.shape[2]) for name, x in history.items()})


def _hunyuan15(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, h, w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch),
                encoder_hidden_states_2=_randn(batch, 5, 8), encoder_attention_mask_2=torch.ones(batch, 5),
                image_embeds=_randn(batch, 3, 8))


def _hunyuan_image(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, h, w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch))


def _anyflow(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, t, 16, 2 * h, 2 * w), timestep=torch.full((batch, t), 500.0),
                r_timestep=torch.full((batch, t), 400.0), encoder_hidden_states=_randn(batch, TEXT, 32))


def _kandinsky5(grid, batch):
    """A channels-last latent patchified 1×2×2, the prompt and the RoPE positions its pipeline passes."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, t, 2 * h, 2 * w, 4), encoder_hidden_states=_randn(batch, TEXT, 16),
                timestep=_timestep(batch), pooled_projections=_randn(batch, 8),
                visual_rope_pos=[torch.arange(n) for n in grid], text_rope_pos=torch.arange(TEXT))


def _kandinsky6(grid, batch):
    """A channels-last latent with its conditioning channels (2 × 4 + 1), a padded prompt and an audio latent."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, t, 2 * h, 2 * w, 9), encoder_hidden_states=_randn(batch, TEXT, 16),
                pooled_projections=_randn(batch, 8), timestep=_timestep(batch), audio_hidden_states=_randn(batch, 9, 4),
                encoder_attention_mask=_padding(batch).bool())


def _cogvideox(patch_t: int):
    def inputs(grid, batch):
        t, h, w = grid
        return dict(hidden_states=_randn(batch, t * patch_t, 4, 2 * h, 2 * w), timestep=_timestep(batch),
                    encoder_hidden_states=_randn(batch, 16, 32))

    return inputs


def _ltx(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, t * h * w, 4), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch),
                num_frames=t, height=h, width=w)


@dataclass(frozen=True)
class FromModel:
    """A forward input the pipeline makes with the denoiser itself right before each forward (the Sana-WM
    refiner's RoPE, which is where fastdit reads its grid): ``forward`` makes it on the model it runs."""

    make: Callable[[torch.nn.Module], Any]


def _sana_wm_refiner(grid, batch):
    """One block of ``t`` frames with no KV cache (its plain self-attention); its RoPE from the model, as the
    pipeline builds it for the block's absolute frames."""
    t, h, w = grid
    rope = FromModel(lambda model: model.build_rotary_emb_for_absolute_positions(
        batch_size=batch, frame_positions=list(range(2, 2 + t)), height=h, width=w, device="cpu", fps=24.0))
    return dict(hidden_states=_randn(batch, t * h * w, 4), encoder_hidden_states=_randn(batch, TEXT, 16),
                timestep=torch.full((batch, t * h * w), 500.0), video_rotary_emb=rope,
                encoder_attention_mask=_padding(batch))


def _ltx2(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, t * h * w, 4), audio_hidden_states=_randn(batch, 9, 4),
                encoder_hidden_states=_randn(batch, TEXT, 16), audio_encoder_hidden_states=_randn(batch, TEXT, 16),
                timestep=_timestep(batch), encoder_attention_mask=_padding(batch).bool(), num_frames=t, height=h,
                width=w, audio_num_frames=9, fps=25.0)


def _minimax_h3(grid, batch):
    """MiniMax-H3's packed sequence as its keyframe pipeline lays it out: ``[text | one keyframe condition frame |
    stereo audio (2 × 3 latents) | target video]``, with a row timestep per noise level (audio 0.5, video and
    text 0.6, keyframe 0.999) and the ``(t, h, w)`` rotary coordinates of every row."""
    t, h, w = grid
    frame, audio = h * w, 6
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    plane = torch.stack([rows.flatten(), cols.flatten()], -1).float()
    positions = torch.cat([
        torch.stack([torch.arange(TEXT).float(), torch.zeros(TEXT), torch.zeros(TEXT)], -1),
        torch.cat([torch.full((frame, 1), float(TEXT)), plane], -1),
        torch.stack([TEXT + torch.arange(audio // 2).float().repeat(2), torch.zeros(audio),
                     torch.tensor([0.0, float(w - 1)]).repeat_interleave(audio // 2)], -1),
        torch.cat([(TEXT + 2.0 * torch.arange(t).float()).repeat_interleave(frame)[:, None], plane.repeat(t, 1)], -1),
    ])
    start = TEXT + frame + audio  # the target video's first row
    tags = torch.cat([torch.ones(TEXT), torch.zeros(frame), torch.full((audio,), 2.0), torch.zeros(t * frame)]).long()
    timestep_indices = torch.ones(start + t * frame, dtype=torch.long)
    timestep_indices[TEXT:TEXT + frame], timestep_indices[TEXT + frame:start] = 2, 0
    return dict(hidden_states=_randn(batch, frame + t * frame, 16), audio_hidden_states=_randn(batch, audio, 6),
                encoder_hidden_states=_randn(batch, TEXT, 16), timestep=torch.tensor([0.5, 0.6, 0.999]),
                timestep_indices=timestep_indices, token_tags=tags, position_ids=positions,
                video_indices=torch.cat([torch.arange(TEXT, TEXT + frame), torch.arange(start, start + t * frame)]),
                audio_indices=torch.arange(TEXT + frame, start), text_indices=torch.arange(TEXT))


def _easyanimate(grid, batch):
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_hidden_states_t5=_randn(batch, 5, 8))


def _padded_prompt(grid, batch):
    """Mochi's and Motif-Video's inputs: a 4-channel latent patchified 1×2×2 and a padded prompt."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch))


def _allegro(grid, batch):
    """Mochi's inputs plus Allegro's 3-D RoPE, built as its pipeline builds it (head dim 12)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    t, h, w = grid
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=12, crops_coords=((0, 0), (h, w)), grid_size=(h, w), temporal_size=t)
    positions = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long()).T.reshape(3, 1, -1)
    return dict(_padded_prompt(grid, batch), image_rotary_emb=((freqs_t, freqs_h, freqs_w), tuple(positions)))


def _flux(grid, batch):
    _, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
    return dict(hidden_states=_randn(batch, h * w, 4), encoder_hidden_states=_randn(batch, TEXT, 32),
                pooled_projections=_randn(batch, 32), timestep=_timestep(batch, 0.5), img_ids=img_ids,
                txt_ids=torch.zeros(TEXT, 3))


def _flux_like(grid, batch):
    inputs = _flux(grid, batch)
    del inputs["pooled_projections"]
    return inputs


def _bria_fibo(grid, batch):
    """Flux's inputs plus one 16-wide text-encoder layer per block (one double, one single)."""
    return dict(_flux_like(grid, batch), text_encoder_layers=[_randn(batch, TEXT, 16), _randn(batch, TEXT, 16)])


def _flux2(grid, batch):
    _, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    zeros = torch.zeros_like(rows)
    img_ids = torch.stack([zeros, rows, cols, zeros], -1).reshape(1, -1, 4).expand(batch, -1, -1)
    txt_ids = torch.stack([torch.zeros(TEXT), torch.zeros(TEXT), torch.zeros(TEXT), torch.arange(TEXT)], -1)
    return dict(hidden_states=_randn(batch, h * w, 4), encoder_hidden_states=_randn(batch, TEXT, 32),
                timestep=_timestep(batch, 0.5), img_ids=img_ids, txt_ids=txt_ids[None].expand(batch, -1, -1),
                guidance=torch.full((batch,), 3.5))


def _flux3(grid, batch):
    """FLUX.2's inputs with 2-D ids (FLUX.3 reads ``[S, 4]`` only) and no guidance."""
    inputs = _flux2(grid, batch)
    del inputs["guidance"]
    return dict(inputs, img_ids=inputs["img_ids"][0], txt_ids=inputs["txt_ids"][0])


def _qwen_image(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, h * w, 16), encoder_hidden_states=_randn(batch, TEXT, 16),
                encoder_hidden_states_mask=_padding(batch), timestep=_timestep(batch, 0.5),
                img_shapes=[[(1, h, w)]] * batch)


def _qwen_image21(grid, batch):
    """A cached (decode) step of Qwen-Image 2.1, every step after the first: the target's row-major latents after
    a padded prompt (``img_mask``: one slot per 2 × 2 target tokens after it), with the prompt's keys and values
    already in the dummy's ``QwenImage21KVCache`` (2 layers, 2 heads × 16), so the model recomputes only the
    target's queries. (The first step, the cache's prefill, attends block-causally and runs as stock: it is not
    fastdit's, see test_qwen_image21.py.)"""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    _, h, w = grid
    cache = QwenImage21KVCache(2)
    for layer, (key, value) in zip(cache.layer_caches, _randn(2, 2, batch, TEXT, 2, 16)):
        layer.store(key, value)
    return dict(hidden_states=_randn(batch, h * w, 4), encoder_hidden_states=_randn(batch, TEXT, 16),
                encoder_hidden_states_mask=_padding(batch).bool(), timestep=_timestep(batch, 0.5),
                img_shapes=[[(1, h, w)]] * batch, img_mask=torch.arange(TEXT + h * w // 4).expand(batch, -1) >= TEXT,
                kv_cache=cache, kv_cache_mode="cached")


def _bria_fibo2(grid, batch):
    """The Perceiver's bundle and the injection block's, over a padded prompt whose samples get the same gist count."""
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch, 0.5),
                encoder_hidden_states=_randn(batch, 2, TEXT, 16), encoder_attention_mask=_padding(batch).bool())


def _glm_image(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), encoder_hidden_states=_randn(batch, TEXT, 32),
                prior_token_id=torch.arange(batch * h * w).reshape(batch, h * w) % 64,
                prior_token_drop=torch.zeros(batch, h * w, dtype=torch.bool), timestep=_timestep(batch),
                target_size=torch.tensor([[16.0 * h, 16.0 * w]] * batch), crop_coords=torch.zeros(batch, 2))


def _joyimage_edit(grid, batch):
    """A reference image and the target, last, as JoyImage-Edit's pipeline stacks them (the model moves it first)."""
    t, h, w = grid
    return dict(hidden_states=_randn(batch, 2, 4, t, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16))


def _joyimage_edit_plus(grid, batch):
    """The target's patches, then a reference image of its own size, smaller in each later sample, so that their
    patches end in padding, as JoyImage-Edit-Plus's pipeline packs them."""
    t, h, w = grid
    shapes = [[(t, h, w), (1, 3, max(4 - i, 1))] for i in range(batch)]
    patches = max(sum(a * b * c for a, b, c in sample) for sample in shapes)
    return dict(hidden_states=_randn(batch, patches, 4, 1, 2, 2), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_hidden_states_mask=_padding(batch),
                shape_list=shapes)


def _ernie_image(grid, batch):
    """A latent patchified 2×2 and a padded prompt (``text_lens``: sample ``i`` has ``TEXT - 2 - i`` tokens)."""
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch),
                text_bth=_randn(batch, TEXT, 16), text_lens=_padding(batch).sum(1))


def _krea2(grid, batch):
    """Packed image tokens after a padded prompt of 2 tapped text layers; ``position_ids`` as the pipeline makes
    them (text rows at the origin, then ``(0, row, col)`` per image token)."""
    _, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)
    return dict(hidden_states=_randn(batch, h * w, 4), encoder_hidden_states=_randn(batch, TEXT, 2, 16),
                timestep=_timestep(batch, 0.5), position_ids=torch.cat([torch.zeros(TEXT, 3), image_ids]).float(),
                encoder_attention_mask=_padding(batch).bool())


def _nucleus_moe_image(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, h * w, 16), img_shapes=[[(1, h, w)]] * batch,
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_hidden_states_mask=_padding(batch).bool(),
                timestep=_timestep(batch, 0.5))


def _prx(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch, 0.5),
                encoder_hidden_states=_randn(batch, TEXT, 16), attention_mask=_padding(batch).bool())


def _pixart(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def _dit(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch),
                class_labels=torch.arange(batch))


def _image_prompt(grid, batch):
    """An image latent patchified 2×2, a 32-wide prompt and the timestep: AuraFlow's inputs, the others' base."""
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), encoder_hidden_states=_randn(batch, TEXT, 32),
                timestep=_timestep(batch))


def _cogview(grid, batch):
    """CogView3-Plus's and CogView4's inputs: :func:`_image_prompt` and the SDXL-style size conditions."""
    _, h, w = grid
    size = torch.tensor([[2 * h, 2 * w]] * batch)
    return dict(_image_prompt(grid, batch), original_size=size, target_size=size,
                crop_coords=torch.zeros(batch, 2, dtype=torch.long))


def _sd3(grid, batch):
    return dict(_image_prompt(grid, batch), pooled_projections=_randn(batch, 64))


def _hidream(grid, batch):
    """T5 prompt and two Llama layers' tokens (the dummy's ``llama_layers``), and the pooled embedding."""
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timesteps=_timestep(batch),
                encoder_hidden_states_t5=_randn(batch, TEXT, 8), encoder_hidden_states_llama3=_randn(2, batch, 5, 4),
                pooled_embeds=_randn(batch, 8))


def _lumina2(grid, batch):
    _, h, w = grid
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch, 0.5),
                encoder_hidden_states=_randn(batch, TEXT, 16), encoder_attention_mask=_padding(batch))


def _omnigen(grid, batch):
    """Left-padded prompt ids (sample ``i``: ``TEXT - 2 - i`` valid), the time token, then the image, under the
    pipeline's mask: the prompt causal and blind to the image, the image seeing every valid token, padding queries
    seeing everything (no other token reads them)."""
    _, h, w = grid
    seq = TEXT + 1 + h * w
    mask = torch.zeros(batch, seq, seq)
    for i, valid in enumerate(_padding(batch).sum(1).tolist()):
        pad = TEXT - valid
        mask[i, :pad] = 1
        mask[i, pad:TEXT + 1, pad:TEXT + 1] = torch.tril(torch.ones(valid + 1, valid + 1))
        mask[i, TEXT + 1:, pad:] = 1
    return dict(hidden_states=_randn(batch, 4, 2 * h, 2 * w), timestep=_timestep(batch, 0.5),
                input_ids=torch.arange(1, TEXT + 1).repeat(batch, 1), input_img_latents=[], input_image_sizes={},
                attention_mask=mask, position_ids=torch.arange(seq).repeat(batch, 1))


def _z_image(grid, batch):
    """Lists, one item per sample: latents ``[C, 1, 2h, 2w]`` and a caption of ``TEXT - 2 + 31 i`` tokens (sample
    ``i``), so that two samples' captions pad to 32 and 64 tokens and the model masks the shorter one's end."""
    _, h, w = grid
    return dict(x=list(_randn(batch, 4, 1, 2 * h, 2 * w).unbind(0)), t=_timestep(batch, 0.5),
                cap_feats=[_randn(TEXT - 2 + 31 * i, 16) for i in range(batch)])


def _ideogram4(grid, batch):
    """The pipeline's packing: ``[left padding ; prompt ; image]`` (sample ``i``: ``TEXT - 2 - i`` prompt tokens),
    its indicator, segment ids (padding ``-1``) and position ids (the image row-major after an offset)."""
    _, h, w = grid
    seq = TEXT + h * w
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3) + 65536
    indicator = torch.zeros(batch, seq, dtype=torch.long)
    segments = torch.full((batch, seq), -1)
    positions = torch.zeros(batch, seq, 3, dtype=torch.long)
    for i, valid in enumerate(_padding(batch).sum(1).tolist()):
        pad = TEXT - valid
        indicator[i, pad:TEXT], indicator[i, TEXT:], segments[i, pad:] = 3, 2, 1
        positions[i, pad:TEXT], positions[i, TEXT:] = torch.arange(valid)[:, None], image
    return dict(hidden_states=_randn(batch, seq, 4), timestep=_timestep(batch, 0.5),
                encoder_hidden_states=_randn(batch, seq, 16), position_ids=positions, segment_ids=segments,
                indicator=indicator)


def _unet(grid, batch):
    _, h, w = grid
    return dict(sample=_randn(batch, 4, h, w), timestep=_timestep(batch), encoder_hidden_states=_randn(batch, TEXT, 32))


def _sdxl_unet(grid, batch):
    return dict(_unet(grid, batch), added_cond_kwargs={"text_embeds": _randn(batch, 32),
                                                        "time_ids": _randn(batch, 6)})


@dataclass(frozen=True)
class Case:
    """A family under test: how to build its tiny denoiser, its inputs, and the grids to try."""

    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[tuple[int, int, int], int], dict]
    grids: tuple[tuple[int, int, int], tuple[int, int, int]]  # tile-divisible, and not divisible by any tile
    cross_attention: tuple[str, ...] = ()  # modules that must keep their stock processor
    per_frame: bool = False  # its sparsified self-attention runs within each frame (frames folded into the batch)

    @property
    def image(self) -> bool:
        return self.grids[0][0] == 1

    @property
    def one_frame(self) -> bool:
        """Each sparsified attention sees a single frame: an image, or a video attended frame by frame."""
        return self.image or self.per_frame


_VIDEO_GRIDS = ((4, 8, 8), (5, 7, 9))
_IMAGE_GRIDS = ((1, 16, 16), (1, 14, 18))

CASES = {case.name: case for case in (
    Case("wan", lambda: dummy_wan_transformer(num_layers=2), _wan, _VIDEO_GRIDS, ("blocks.0.attn2",)),
    Case("skyreels_v2", lambda: dummy_wan_variant("SkyReelsV2Transformer3DModel"), _wan, _VIDEO_GRIDS,
         ("blocks.0.attn2",)),
    Case("chronoedit", lambda: dummy_wan_variant("ChronoEditTransformer3DModel"), _wan, _VIDEO_GRIDS,
         ("blocks.0.attn2",)),
    Case("wan_vace", lambda: dummy_wan_variant("WanVACETransformer3DModel", vace_layers=[0], vace_in_channels=16),
         _wan_vace, _VIDEO_GRIDS, ("blocks.0.attn2", "vace_blocks.0.attn2")),
    Case("wan_animate", lambda: dummy_wan_variant(
        "WanAnimateTransformer3DModel", in_channels=12, latent_channels=4, out_channels=4, text_dim=16, image_dim=16,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
        motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
        inject_face_latents_blocks=2), _wan_animate, ((21, 4, 4), (21, 3, 5)), ("blocks.0.attn2",)),
    Case("wan_animate2", lambda: dummy_wan_variant("WanAnimate2Transformer3DModel", dim=24, num_heads=2, in_dim=32,
                                                   out_dim=16, text_len=TEXT, use_img_emb=False),
         _wan_animate2, _VIDEO_GRIDS, ("blocks.0.cross_attn",)),
    Case("helios", lambda: dummy_wan_variant(
        "HeliosTransformer3DModel", in_channels=4, out_channels=4, text_dim=16, rope_dim=(4, 4, 4),
        has_multi_term_memory_patch=True, guidance_cross_attn=True, zero_history_timestep=True,
        is_amplify_history=False, cross_attn_norm=True), _helios, _VIDEO_GRIDS, ("blocks.0.attn2",)),
    Case("cosmos", dummy_cosmos_transformer, _cosmos, _VIDEO_GRIDS, ("transformer_blocks.0.attn2",)),
    Case("hunyuan_video", dummy_hunyuan_video_transformer, _hunyuan, _VIDEO_GRIDS,
         ("context_embedder.token_refiner.refiner_blocks.0.attn",)),
    Case("hunyuan_video_framepack", dummy_hunyuan_video_framepack_transformer, _hunyuan_framepack, _VIDEO_GRIDS,
         ("context_embedder.token_refiner.refiner_blocks.0.attn",)),
    Case("hunyuan_video15", dummy_hunyuan_video15_transformer, _hunyuan15, _VIDEO_GRIDS,
         ("context_embedder.token_refiner.refiner_blocks.0.attn",)),
    Case("motif_video", dummy_motif_video_transformer, _padded_prompt, _VIDEO_GRIDS),
    Case("anyflow", dummy_anyflow_transformer, _anyflow, _VIDEO_GRIDS, ("blocks.0.attn2",)),
    Case("anyflow_far", dummy_anyflow_far_transformer, _anyflow_far, _VIDEO_GRIDS, ("blocks.0.attn2",)),
    Case("kandinsky5", dummy_kandinsky5_transformer, _kandinsky5, _VIDEO_GRIDS,
         ("visual_transformer_blocks.0.cross_attention", "text_transformer_blocks.0.self_attention")),
    Case("kandinsky6", dummy_kandinsky6_transformer, _kandinsky6, _VIDEO_GRIDS,
         ("visual_transformer_blocks.0.video_dec_block.cross_attention", "video_text_transformer_blocks.0.attn",
          "visual_transformer_blocks.0.audio_dec_block.self_attention",
          "visual_transformer_blocks.0.va_cross_attention", "visual_transformer_blocks.0.av_cross_attention")),
    Case("cogvideox", dummy_cogvideox_transformer, _cogvideox(1), _VIDEO_GRIDS),
    Case("consisid", dummy_consisid_transformer, _cogvideox(1), _VIDEO_GRIDS),
    Case("cogvideox_1.5", lambda: dummy_cogvideox_transformer(patch_size_t=2), _cogvideox(2), _VIDEO_GRIDS),
    Case("easyanimate", dummy_easyanimate_transformer, _easyanimate, _VIDEO_GRIDS),
    Case("ltx", dummy_ltx_transformer, _ltx, _VIDEO_GRIDS, ("transformer_blocks.0.attn2",)),
    Case("ltx2", dummy_ltx2_transformer, _ltx2, _VIDEO_GRIDS, ("transformer_blocks.0.attn2",
                                                             "transformer_blocks.0.audio_attn1")),
    Case("sana_wm_refiner", dummy_sana_wm_refiner_transformer, _sana_wm_refiner, _VIDEO_GRIDS,
         ("transformer_blocks.0.attn2", "transformer_blocks.0.audio_attn1")),
    Case("minimax_h3", dummy_minimax_h3_transformer, _minimax_h3, _VIDEO_GRIDS,
         ("token_refiner.refiner_blocks.0.attn",)),
    Case("mochi", dummy_mochi_transformer, _padded_prompt, _VIDEO_GRIDS),
    Case("allegro", dummy_allegro_transformer, _allegro, _VIDEO_GRIDS, ("transformer_blocks.0.attn2",)),
    Case("latte", dummy_latte_transformer, _wan, ((3, 16, 16), (3, 14, 18)),
         ("transformer_blocks.0.attn2", "temporal_transformer_blocks.0.attn1"), per_frame=True),
    Case("flux", dummy_flux_transformer, _flux, _IMAGE_GRIDS),
    Case("chroma", lambda: dummy_flux_variant("ChromaTransformer2DModel", approximator_num_channels=8,
                                              approximator_hidden_dim=16, approximator_layers=1),
         _flux_like, _IMAGE_GRIDS),
    Case("longcat_image", lambda: dummy_flux_variant("LongCatImageTransformer2DModel", pooled_projection_dim=32),
         _flux_like, _IMAGE_GRIDS),
    Case("ovis_image", lambda: dummy_flux_variant("OvisImageTransformer2DModel", out_channels=4), _flux_like,
         _IMAGE_GRIDS),
    Case("bria", lambda: dummy_flux_variant("BriaTransformer2DModel", pooled_projection_dim=32), _flux_like,
         _IMAGE_GRIDS),
    Case("bria_fibo", lambda: dummy_flux_variant("BriaFiboTransformer2DModel", text_encoder_dim=16), _bria_fibo,
         _IMAGE_GRIDS),
    Case("flux2", lambda: dummy_flux_variant("Flux2Transformer2DModel", patch_size=1, out_channels=4,
                                             timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4)),
         _flux2, _IMAGE_GRIDS),
    Case("bria_fibo2", dummy_bria_fibo2_transformer, _bria_fibo2, _IMAGE_GRIDS,
         ("layers.1.cross_attention", "noise_refiner.0.attention", "perceiver.layers.0.self_attention")),
    Case("flux3", lambda: dummy_flux_variant("Flux3Transformer2DModel", cond_in_channels=4, timestep_channels=32,
                                             axes_dims_rope=(4, 4, 4, 4)),
         _flux3, _IMAGE_GRIDS, ("mode_blocks.image.0.attn", "txt_mode_blocks.0.attn")),
    Case("qwen_image", dummy_qwen_image_transformer, _qwen_image, _IMAGE_GRIDS),
    Case("qwen_image21", dummy_qwen_image21_transformer, _qwen_image21, _IMAGE_GRIDS),
    Case("nucleus_moe_image", dummy_nucleus_moe_image_transformer, _nucleus_moe_image, _IMAGE_GRIDS),
    Case("prx", dummy_prx_transformer, _prx, _IMAGE_GRIDS),
    Case("glm_image", dummy_glm_image_transformer, _glm_image, _IMAGE_GRIDS),
    Case("hunyuan_image", dummy_hunyuan_image_transformer, _hunyuan_image, _IMAGE_GRIDS,
         ("context_embedder.token_refiner.refiner_blocks.0.attn",)),
    Case("joyimage_edit", dummy_joyimage_transformer, _joyimage_edit, _IMAGE_GRIDS),
    Case("joyimage_edit_plus", lambda: dummy_joyimage_transformer("JoyImageEditPlusTransformer3DModel"),
         _joyimage_edit_plus, _IMAGE_GRIDS),
    Case("ernie_image", dummy_ernie_image_transformer, _ernie_image, _IMAGE_GRIDS),
    Case("krea2", dummy_krea2_transformer, _krea2, _IMAGE_GRIDS, ("text_fusion.refiner_blocks.0.attn",)),
    Case("z_image", dummy_z_image_transformer, _z_image, _IMAGE_GRIDS, ("noise_refiner.0.attention",
                                                                        "context_refiner.0.attention")),
    Case("ideogram4", dummy_ideogram4_transformer, _ideogram4, _IMAGE_GRIDS),
    Case("pixart", dummy_pixart_transformer, _pixart, _IMAGE_GRIDS, ("transformer_blocks.0.attn2",)),
    Case("dit", dummy_dit_transformer, _dit, ((1, 16, 16), (1, 14, 14))),  # DiT unpatchifies square images only
    Case("transformer_2d", dummy_transformer_2d, _hunyuan_image, _IMAGE_GRIDS, ("transformer_blocks.0.attn2",)),
    Case("cogview3plus", dummy_cogview3plus_transformer, _cogview, _IMAGE_GRIDS),
    Case("sd3", lambda: dummy_sd3_transformer(dual_attention_layers=(0,)), _sd3, _IMAGE_GRIDS),
    Case("auraflow", dummy_auraflow_transformer, _image_prompt, _IMAGE_GRIDS),
    Case("cogview4", dummy_cogview4_transformer, _cogview, _IMAGE_GRIDS),
    Case("hidream", dummy_hidream_transformer, _hidream, _IMAGE_GRIDS),
    Case("lumina2", dummy_lumina2_transformer, _lumina2, _IMAGE_GRIDS, ("context_refiner.0.attn",)),
    Case("omnigen", dummy_omnigen_transformer, _omnigen, _IMAGE_GRIDS),
    Case("unet", dummy_unet, _unet, _IMAGE_GRIDS,
         ("down_blocks.0.attentions.0.transformer_blocks.0.attn2",)),
    Case("sdxl_unet", dummy_sdxl_unet, _sdxl_unet, _IMAGE_GRIDS,
         ("down_blocks.1.attentions.0.transformer_blocks.1.attn2",)),
    Case("dreamlite", dummy_dreamlite_unet, _unet, _IMAGE_GRIDS,
         ("down_blocks.0.attentions.0.transformer_blocks.0.attn2",
          "down_blocks.1.attentions.0.transformer_blocks.0.attn2")),
)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every processor test runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def model(case):
    return case.build()


@pytest.fixture(scope="session")
def forward() -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """Run a denoiser on keyword inputs without autograd and return its output tensor."""

    def run(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
        kwargs = {name: x.make(model) if isinstance(x, FromModel) else x for name, x in kwargs.items()}
        with torch.no_grad():
            out = model(**kwargs, return_dict=False)
        out = out[0] if isinstance(out, tuple) else out  # Kandinsky 5 returns its bare sample
        return torch.stack(out) if isinstance(out, list) else out  # Z-Image returns one tensor per sample

    return run


@pytest.fixture(scope="session")
def cases() -> dict[str, Case]:
    """All family cases by name, for tests about one family."""
    return CASES
