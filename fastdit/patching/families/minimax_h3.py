"""MiniMax-H3 (``MiniMaxH3Transformer3DModel``): joint video and audio generation over one packed sequence, with
full self-attention in ``transformer_blocks.N.attn`` (there is no cross-attention).

The caller packs the sequence and hands the model its layout (``position_ids``, ``video_indices`` ...); every
MiniMax-H3 pipeline packs ``[text | keyframe or reference conditions | audio | target video]``, so the video
being generated is the run of video rows that ends the sequence, and everything before it (text, conditioning
frames, audio) stays dense, as text does in other joint models. The target's grid is read from the
``(t, h, w)`` rotary coordinates of those rows: its last frame is the trailing run of rows sharing one time, and
its last image row the trailing run sharing one height. ``MiniMaxH3AttnProcessor`` calls
``dispatch_attention_fn``: fastdit takes the call there (the generic path). The text refiner's self-attention
(``token_refiner``) sees only text and is left alone.

fastdit counts denoising steps by the largest value of ``timestep``, which holds every distinct noise level of
the sequence: keyframe and reference calls pin their conditioning rows at 0.999 (audio references at 1.0), so
once the target's timestep falls below that the steps look alike and those calls stay in the dense warm-up
(text-to-video-and-audio calls count their steps).
"""

from __future__ import annotations

import torch

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input


_self_attention = attention_in_blocks("attn", "transformer_blocks")


def _trailing_run(x: torch.Tensor) -> int:
    """How many of the last entries of ``x`` equal its last one."""
    return int((x == x[-1]).flip(0).long().cumprod(0).sum())


def _grid(model, args, kwargs) -> TokenGrid | None:
    positions = forward_input(model, args, kwargs, "position_ids")
    video = forward_input(model, args, kwargs, "video_indices")
    if not isinstance(positions, torch.Tensor) or not isinstance(video, torch.Tensor) or video.numel() == 0:
        return None
    length = positions.shape[0]
    # the target video: the video rows that run without a gap to the end of the sequence
    ends = torch.arange(length - 1, length - 1 - video.numel(), -1, device=video.device)
    count = int((video.flip(0) == ends).long().cumprod(0).sum())
    if count == 0:
        return None
    target = positions[length - count:]
    per_frame = _trailing_run(target[:, 0])
    cols = _trailing_run(target[-per_frame:, 1])
    if count % per_frame or per_frame % cols:
        return None
    return TokenGrid(count // per_frame, per_frame // cols, cols, text_tokens=length - count, text_position="before")


MINIMAX_H3 = Family(
    name="minimax_h3",
    model_classes=("MiniMaxH3Transformer3DModel",),
    self_attention=_self_attention,
    grid=_grid,
    processor=None,  # MiniMaxH3AttnProcessor dispatches: the generic path
    stock_processors=("MiniMaxH3AttnProcessor",),
    grid_inputs=("position_ids", "video_indices"),
    text_position="before",
    context_parallel_joined=True,  # its plan splits the packed sequence at the first block in one piece
    models="MiniMax-H3, video and audio; text, conditioning frames and audio before the target video stay dense; "
           "keyframe and reference calls stay in the dense warm-up",
    sparsified="`transformer_blocks.N.attn` (one packed sequence, target video last)",
    untouched="text token refiner",
    grid_rule="`position_ids` of the trailing `video_indices` run; the rows before it count as text",
)
