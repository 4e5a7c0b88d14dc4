"""LTX-Video (``LTXVideoTransformer3DModel``) and LTX-2 (``LTX2VideoTransformer3DModel``): video self-attention
in ``transformer_blocks.N.attn1``.

The latent arrives already packed (``[B, S, C]``); the pipeline passes the token grid as the forward
arguments ``num_frames``, ``height`` and ``width``, which is where the grid is read. Text enters through
``attn2`` (cross-attention with a padding bias), which stays untouched. ``LTXVideoAttnProcessor`` calls
``dispatch_attention_fn``: fastdit takes the call there (the generic path). LTX-2 adds an audio stream with its
own self-attention (``audio_attn1``) and audio-video cross-attention; only the video's self-attention is
sparsified, the audio's stays dense (it is short, and no sparse rule for it is published).
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks, forward_input


_self_attention = attention_in_blocks("attn1", "transformer_blocks")


def _grid(model, args, kwargs) -> TokenGrid | None:
    sizes = [forward_input(model, args, kwargs, name) for name in ("num_frames", "height", "width")]
    if any(not isinstance(s, int) or s < 1 for s in sizes):
        return None
    return TokenGrid(*sizes)


def _family(name: str, model_class: str, stock: str, models: str, sparsified: str, untouched: str) -> Family:
    return Family(name=name, model_classes=(model_class,), self_attention=_self_attention, grid=_grid,
                  processor=None,  # the stock processor dispatches: the generic path
                  stock_processors=(stock,), grid_inputs=("num_frames", "height", "width"), models=models,
                  sparsified=sparsified, untouched=untouched, grid_rule="forward args `num_frames, height, width`")


LTX = _family("ltx", "LTXVideoTransformer3DModel", "LTXVideoAttnProcessor", "LTX-Video",
              "`transformer_blocks.N.attn1`", "`attn2`")
LTX2 = _family("ltx2", "LTX2VideoTransformer3DModel", "LTX2AudioVideoAttnProcessor", "LTX-2, video and audio",
               "`transformer_blocks.N.attn1` (the video's)",
               "`attn2`, the audio's self-attention and the audio-video cross-attention")
