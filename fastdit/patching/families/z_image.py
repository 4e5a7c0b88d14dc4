"""Z-Image (``ZImageTransformer2DModel``): single-stream joint attention in ``layers.N.attention``.

The model takes lists, one item per sample: ``x`` (latents ``[C, F, H, W]``) and ``cap_feats`` (a prompt
``[L, C]`` each). It patchifies each image (``patch_size`` rows and columns, ``f_patch_size`` frames), pads its
tokens and its caption's to multiples of 32 (``SEQ_MULTI_OF``, repeating the last token, which stays attended),
and joins them image first: ``[image ; image padding ; caption ; caption padding]``, masking only the keys past
a shorter sample's end. Everything after the image is dense text to fastdit. Omni mode (``x`` a list of lists:
reference images, then the target) joins ``[captions ; references ; target ; its padding ; SigLIP tokens]``:
non-image tokens on both sides of the target (``text_position="around"``). ``ZSingleStreamAttnProcessor``
calls ``dispatch_attention_fn``: fastdit takes the call there (the generic path).

The pipeline passes ``t = (1000 - timestep) / 1000``, which rises during a run (``timestep_rises``). The
``noise_refiner`` blocks attend the padded image alone and ``context_refiner`` / ``siglip_refiner`` the
conditioning alone: left alone (the image's padding would need a text length of its own there).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input

_self_attention = attention_in_blocks("attention", "layers")
_MULTIPLE = 32  # the model pads every image and caption to a multiple of this many tokens (SEQ_MULTI_OF)


def _padded(tokens: int) -> int:
    return tokens + (-tokens) % _MULTIPLE


def _argument(model: torch.nn.Module, args: tuple, kwargs: dict, name: str) -> Any:
    """A forward input, or its default in the model's ``forward`` signature when the call leaves it out."""
    value = forward_input(model, args, kwargs, name)
    return inspect.signature(type(model).forward).parameters[name].default if value is None else value


def _image_grid(image: Any, patch: int, f_patch: int) -> TokenGrid | None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        return None
    frames, rows, cols = image.shape[1] // f_patch, image.shape[2] // patch, image.shape[3] // patch
    return TokenGrid(frames, rows, cols) if min(frames, rows, cols) > 0 else None


def _sample(model: torch.nn.Module, x: Any, captions: Any, siglip: Any, patch: int,
            f_patch: int) -> tuple[TokenGrid, int, int] | None:
    """One sample's ``(target grid, tokens before it, tokens after it)`` in the main layers' sequence."""
    if isinstance(x, torch.Tensor):  # basic mode: [image ; padding ; caption ; padding]
        grid = _image_grid(x, patch, f_patch)
        if grid is None or not isinstance(captions, torch.Tensor):
            return None
        return grid, 0, _padded(grid.video_tokens) - grid.video_tokens + _padded(captions.shape[0])
    if not isinstance(x, (list, tuple)) or not x or not isinstance(captions, (list, tuple)):
        return None
    grid = _image_grid(x[-1], patch, f_patch)  # omni mode: the target comes last
    if grid is None:
        return None
    references = [_MULTIPLE if image is None else _image_grid(image, patch, f_patch) for image in x[:-1]]
    if any(r is None for r in references):
        return None
    before = sum(_padded(c.shape[0]) for c in captions) + sum(
        r if isinstance(r, int) else _padded(r.video_tokens) for r in references)
    after = _padded(grid.video_tokens) - grid.video_tokens
    if siglip is not None and getattr(model, "siglip_embedder", None) is not None:
        after += sum(_MULTIPLE if s is None else _padded(s.shape[0] * s.shape[1]) for s in siglip)
    return grid, before, after


def _grid(model, args, kwargs) -> TokenGrid | None:
    x, captions = (forward_input(model, args, kwargs, name) for name in ("x", "cap_feats"))
    siglip = forward_input(model, args, kwargs, "siglip_feats")
    patch, f_patch = (int(_argument(model, args, kwargs, name)) for name in ("patch_size", "f_patch_size"))
    if not isinstance(x, (list, tuple)) or not isinstance(captions, (list, tuple)) or len(x) != len(captions) \
            or not x:
        return None
    omni_siglip = siglip if isinstance(siglip, (list, tuple)) and siglip and siglip[0] is not None else None
    samples = [_sample(model, xi, ci, None if omni_siglip is None else omni_siglip[i], patch, f_patch)
               for i, (xi, ci) in enumerate(zip(x, captions))]
    if any(s is None for s in samples) or len({(grid, before) for grid, before, _ in samples}) != 1:
        return None  # targets of different sizes, or at different places
    grid, before, _ = samples[0]
    text = before + max(after for *_, after in samples)  # shorter samples are padded at the end, keys masked
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=text, text_position="around", text_before=before)


Z_IMAGE = Family(
    name="z_image",
    model_classes=("ZImageTransformer2DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # ZSingleStreamAttnProcessor dispatches: the generic path
    stock_processors=("ZSingleStreamAttnProcessor",),
    timestep_arg="t",
    timestep_rises=True,
    grid_inputs=("x", "cap_feats", "siglip_feats", "patch_size", "f_patch_size"),
    text_position="around",
    models="Z-Image; omni mode: captions and references before the target, SigLIP after",
    sparsified="`layers.N.attention` (joint, image first; its padding and the caption after it stay dense)",
    untouched="`noise_refiner`, `context_refiner`, `siglip_refiner`",
    grid_rule="each `x` item `[C,F,H,W]` ÷ (`f_patch_size`, `patch_size`); text from `cap_feats`, padded to 32",
)
