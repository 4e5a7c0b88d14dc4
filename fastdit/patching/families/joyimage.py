"""JoyImage-Edit (``JoyImageEditTransformer3DModel``) and JoyImage-Edit-Plus
(``JoyImageEditPlusTransformer3DModel``): double-stream image editing models, joint attention
``[image ; text]`` in ``double_blocks.N.attn``.

The image stream holds the target first, then the reference images; the text follows. fastdit sparsifies the
target's tokens and keeps the references and the text dense, as it keeps text (every query attends them and
they attend everything): the references are context, and Edit-Plus's may each have their own size. JoyImage-Edit
takes ``hidden_states [B, C, T, H, W]``, or ``[B, items, C, T, H, W]`` with the target as the last item, which
the model moves first (every item the target's size); Edit-Plus takes patches ``[B, patches, C, pt, ph, pw]``
with each sample's ``shape_list`` of ``(t, h, w)`` (target first) and pads samples to one patch count, padding
that its key mask hides. Both processors call ``dispatch_attention_fn``, so fastdit takes the call there (the
generic path).
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input, latent_grid


_self_attention = attention_in_blocks("attn", "double_blocks")


def _edit_grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    if not isinstance(x, torch.Tensor) or not isinstance(text, torch.Tensor) or x.ndim not in (5, 6):
        return None
    items = x.shape[1] if x.ndim == 6 else 1
    grid = latent_grid(x[:, 0] if x.ndim == 6 else x, tuple(model.config.patch_size))
    references = (items - 1) * grid.video_tokens  # every item has the target's size
    return TokenGrid(grid.t, grid.h, grid.w, text_tokens=references + text.shape[1], text_position="after")


def _edit_plus_grid(model, args, kwargs) -> TokenGrid | None:
    x = forward_input(model, args, kwargs, "hidden_states")
    text = forward_input(model, args, kwargs, "encoder_hidden_states")
    shapes = forward_input(model, args, kwargs, "shape_list")
    if not isinstance(x, torch.Tensor) or not isinstance(text, torch.Tensor) or shapes is None:
        return None
    targets = {tuple(int(n) for n in sample[0]) for sample in shapes}  # each sample's first (t, h, w)
    if len(targets) != 1:
        return None  # samples with targets of different sizes
    t, h, w = targets.pop()
    return TokenGrid(t, h, w, text_tokens=x.shape[1] - t * h * w + text.shape[1], text_position="after")


JOYIMAGE_EDIT = Family(
    name="joyimage_edit",
    model_classes=("JoyImageEditTransformer3DModel",),
    self_attention=_self_attention,
    grid=_edit_grid,
    processor=None,  # JoyImageAttnProcessor dispatches: the generic path
    stock_processors=("JoyImageAttnProcessor",),
    grid_inputs=("hidden_states", "encoder_hidden_states"),
    models="JoyImage-Edit; the reference image stays dense",
    sparsified="`double_blocks.N.attn` (joint: target, then reference and text)",
    grid_rule="`hidden_states [B,C,T,H,W]` (the target item of `[B,N,C,T,H,W]`) ÷ `config.patch_size`; the other "
              "items and `encoder_hidden_states` counted after it",
)

JOYIMAGE_EDIT_PLUS = Family(
    name="joyimage_edit_plus",
    model_classes=("JoyImageEditPlusTransformer3DModel",),
    self_attention=_self_attention,
    grid=_edit_plus_grid,
    processor=None,  # JoyImageEditPlusAttnProcessor dispatches: the generic path
    stock_processors=("JoyImageEditPlusAttnProcessor",),
    grid_inputs=("hidden_states", "encoder_hidden_states", "shape_list"),
    models="JoyImage-Edit-Plus; the reference images stay dense, the patch padding masked",
    sparsified="`double_blocks.N.attn` (joint: target, then references, padding and text)",
    grid_rule="the target's `shape_list[i][0]`; the other patches of `hidden_states` and `encoder_hidden_states` "
              "counted after it",
)
