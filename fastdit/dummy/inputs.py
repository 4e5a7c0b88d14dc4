"""Forward inputs of a random-weight denoiser at a chosen latent size, laid out as each family's pipeline lays
them out (``fastdit.dummy.configs`` names one builder per published config).

A builder takes the built denoiser (widths are read from its config, so a scaled-down ``--quick`` model gets
matching inputs), the latent grid ``(frames, height, width)`` after the VAE and before the patchify, and the
prompt length; it returns the keyword arguments of one batch-1 forward. Prompts are random embeddings with
every token valid: the text encoders' work is not part of a transformer step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["INPUTS", "Latent", "build_inputs"]

Latent = tuple[int, int, int]


class _Random:
    """Seeded random tensors on one device and dtype (the same inputs on every rank and every run)."""

    def __init__(self, device: torch.device | str, dtype: torch.dtype):
        self.device, self.dtype = torch.device(device), dtype
        self.gen = torch.Generator(self.device).manual_seed(0)

    def __call__(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.device, dtype=self.dtype)

    def full(self, value: float, *shape: int) -> torch.Tensor:
        return torch.full(shape, value, device=self.device)


def _positions(frames: int, rows: int, cols: int, axes: int, device: torch.device) -> torch.Tensor:
    """``[frames * rows * cols, axes]`` positions ``(0.., frame, row, col)`` as Flux-style pipelines pass them
    (``axes`` 3: ``(0, row, col)`` for one image; 4: ``(frame, row, col, 0)``)."""
    f, r, c = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    zeros = torch.zeros_like(f)
    ids = (zeros, r, c) if axes == 3 else (f, r, c, zeros)
    return torch.stack(ids, -1).reshape(-1, axes).float().to(device)


def _wan(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    c = model.config
    return dict(hidden_states=rnd(1, c.in_channels, *latent), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.text_dim))


def _hunyuan_video(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """Embedded guidance (the pipeline passes ``guidance_scale * 1000``), LLaMA prompt and CLIP pooled vector."""
    c = model.config
    return dict(hidden_states=rnd(1, c.in_channels, *latent), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.text_embed_dim),
                encoder_attention_mask=torch.ones(1, text, device=rnd.device),
                pooled_projections=rnd(1, c.pooled_projection_dim), guidance=rnd.full(6000.0, 1))


def _cogvideox(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """``[B, F, C, H, W]`` latents and, for the 5B's rotary embedding, the positions the pipeline computes."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    c = model.config
    frames, height, width = latent
    inputs = dict(hidden_states=rnd(1, frames, c.in_channels, height, width), timestep=rnd.full(500.0, 1),
                  encoder_hidden_states=rnd(1, text, c.text_embed_dim))
    if c.use_rotary_positional_embeddings:
        rows, cols = height // c.patch_size, width // c.patch_size
        crops = get_resize_crop_region_for_grid((rows, cols), c.sample_width // c.patch_size,
                                                c.sample_height // c.patch_size)
        inputs["image_rotary_emb"] = get_3d_rotary_pos_embed(c.attention_head_dim, crops, (rows, cols), frames,
                                                             device=rnd.device)
    return inputs


def _ltx(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """Patchified latents ``[B, F*H*W, C]`` (patch 1) with the latent grid given as numbers."""
    c = model.config
    frames, height, width = latent
    return dict(hidden_states=rnd(1, frames * height * width, c.in_channels), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.caption_channels),
                encoder_attention_mask=torch.ones(1, text, device=rnd.device), num_frames=frames, height=height,
                width=width)


def _mochi(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    c = model.config
    return dict(hidden_states=rnd(1, c.in_channels, *latent), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.text_embed_dim),
                encoder_attention_mask=torch.ones(1, text, device=rnd.device))


def _allegro(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """Mochi's layout plus Allegro's 3-D rotary embedding, built as its pipeline builds it."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    c = model.config
    frames, height, width = latent
    rows, cols = height // c.patch_size, width // c.patch_size
    *freqs, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=c.attention_head_dim, crops_coords=((0, 0), (rows, cols)), grid_size=(rows, cols),
        temporal_size=frames // c.patch_size_t, device=rnd.device)
    positions = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long()).T.reshape(3, 1, -1)
    return dict(_mochi(model, latent, text, rnd), image_rotary_emb=(tuple(freqs), tuple(positions)))


def _flux(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """2×2-packed latents with ``(0, row, col)`` ids and a T5 prompt; FLUX.1 adds a CLIP pooled vector, and
    FLUX.1-dev embedded guidance 3.5 (Chroma has neither)."""
    c = model.config
    _, height, width = latent
    inputs = dict(hidden_states=rnd(1, height * width // 4, c.in_channels),
                  encoder_hidden_states=rnd(1, text, c.joint_attention_dim), timestep=rnd.full(0.5, 1),
                  img_ids=_positions(1, height // 2, width // 2, 3, rnd.device),
                  txt_ids=torch.zeros(text, 3, device=rnd.device))
    if c.get("pooled_projection_dim"):
        inputs["pooled_projections"] = rnd(1, c.pooled_projection_dim)
    if c.get("guidance_embeds"):
        inputs["guidance"] = rnd.full(3.5, 1)
    return inputs


def _flux2(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """FLUX.2: 2×2-packed latents, 4-axis ids (text ids count along the last), embedded guidance 4."""
    c = model.config
    _, height, width = latent
    txt_ids = torch.zeros(text, 4, device=rnd.device)
    txt_ids[:, 3] = torch.arange(text, device=rnd.device)
    return dict(hidden_states=rnd(1, height * width // 4, c.in_channels),
                encoder_hidden_states=rnd(1, text, c.joint_attention_dim), timestep=rnd.full(0.5, 1),
                img_ids=_positions(1, height // 2, width // 2, 4, rnd.device)[None], txt_ids=txt_ids[None],
                guidance=rnd.full(4.0, 1))


def _qwen_image(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    c = model.config
    _, height, width = latent
    return dict(hidden_states=rnd(1, height * width // 4, c.in_channels),
                encoder_hidden_states=rnd(1, text, c.joint_attention_dim),
                encoder_hidden_states_mask=torch.ones(1, text, device=rnd.device), timestep=rnd.full(0.5, 1),
                img_shapes=[[(1, height // 2, width // 2)]])


def _z_image(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """Z-Image takes lists, one item per sample: ``[C, 1, H, W]`` latents and ``[text, D]`` caption features."""
    c = model.config
    _, height, width = latent
    return dict(x=[rnd(c.in_channels, 1, height, width)], t=rnd.full(0.5, 1), cap_feats=[rnd(text, c.cap_feat_dim)])


def _image_prompt(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """``[B, C, H, W]`` latents and a prompt of the joint attention's width: AuraFlow's inputs, SD3's base."""
    c = model.config
    _, height, width = latent
    return dict(hidden_states=rnd(1, c.in_channels, height, width), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.joint_attention_dim))


def _sd3(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    return dict(_image_prompt(model, latent, text, rnd), pooled_projections=rnd(1, model.config.pooled_projection_dim))


def _pixart(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """T5 prompt; the 1024-px models also take the image's resolution and aspect ratio."""
    c = model.config
    _, height, width = latent
    extra = {"resolution": None, "aspect_ratio": None}
    if model.use_additional_conditions:
        pixels = [8.0 * height, 8.0 * width]
        extra = {"resolution": torch.tensor([pixels], device=rnd.device, dtype=rnd.dtype),
                 "aspect_ratio": torch.tensor([[pixels[0] / pixels[1]]], device=rnd.device, dtype=rnd.dtype)}
    return dict(hidden_states=rnd(1, c.in_channels, height, width), timestep=rnd.full(500.0, 1),
                encoder_hidden_states=rnd(1, text, c.caption_channels),
                encoder_attention_mask=torch.ones(1, text, device=rnd.device), added_cond_kwargs=extra)


def _dit(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """Class-conditional: an ImageNet label, no prompt."""
    _, height, width = latent
    return dict(hidden_states=rnd(1, model.config.in_channels, height, width), timestep=rnd.full(500.0, 1),
                class_labels=torch.zeros(1, dtype=torch.long, device=rnd.device))


def _unet(model: Any, latent: Latent, text: int, rnd: _Random) -> dict[str, Any]:
    """CLIP prompt; SDXL's ``text_time`` conditioning adds the pooled prompt and the six size numbers."""
    c = model.config
    _, height, width = latent
    inputs = dict(sample=rnd(1, c.in_channels, height, width), timestep=rnd.full(500.0, 1),
                  encoder_hidden_states=rnd(1, text, c.cross_attention_dim))
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {"text_embeds": rnd(1, pooled),
                                       "time_ids": torch.tensor([[8.0 * height, 8.0 * width, 0, 0, 8.0 * height,
                                                                  8.0 * width]], device=rnd.device, dtype=rnd.dtype)}
    return inputs


# name -> builder(model, latent (frames, height, width), prompt tokens, random source)
INPUTS: dict[str, Callable[[Any, Latent, int, _Random], dict[str, Any]]] = {
    "wan": _wan, "hunyuan_video": _hunyuan_video, "cogvideox": _cogvideox, "ltx": _ltx, "mochi": _mochi,
    "allegro": _allegro, "flux": _flux, "flux2": _flux2, "qwen_image": _qwen_image, "z_image": _z_image,
    "auraflow": _image_prompt, "sd3": _sd3, "pixart": _pixart, "dit": _dit, "unet": _unet,
}


def build_inputs(name: str, model: Any, latent: Latent, text: int, device: torch.device | str,
                 dtype: torch.dtype) -> dict[str, Any]:
    """The forward keyword arguments of ``model`` at ``latent`` with a ``text``-token prompt.

    Args:
        name: the layout, a key of :data:`INPUTS`.
        model: the denoiser (its config gives the widths).
        latent: ``(frames, height, width)`` of the latent, after the VAE and before the patchify.
        text: prompt tokens.
        device, dtype: of the floating-point inputs.

    Returns:
        Keyword arguments for one batch-1 forward.
    """
    return INPUTS[name](model, latent, text, _Random(device, dtype))
