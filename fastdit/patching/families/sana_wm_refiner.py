"""The Sana-WM stage-2 refiner (``SanaWMLTX2RefinerTransformer3DModel``): LTX-2's blocks run video-only over a
sliding-window KV cache, video self-attention in ``transformer_blocks.N.attn1``.

Each forward denoises one block of a few latent frames, packed (``[B, S, C]``). On its denoising steps
(``kv_cache_mode="inject"``) ``SanaWMLTX2RefinerAttnProcessor`` puts the layer cache's keys and values of the
attention-sink frames and the recent refined history before the block's own, and the block's queries attend all
of them; those cached keys have no queries (``text_keys_only``, before the video): fastdit keeps them dense and
sparsifies the block's own, running only the block's query rows (the cache can outnumber them several times).
The processor dispatches with ``backend=self._attention_backend``: the generic path. Without a cache, or when
it only captures keys, the call is the block's plain self-attention. Text enters through ``attn2``
(cross-attention), untouched; the audio modules the LTX-2 checkpoint carries are not run by its forward.

The forward gets no sizes, only the packed tokens and the block's RoPE, which the pipeline builds with the model's
``build_rotary_emb_for_absolute_positions(batch_size, frame_positions, height, width, ...)`` right before each
forward (after the sink's, built once per block): fastdit reads the grid from that call (``grid_method``).
"""

from __future__ import annotations

from fastdit.layout.grid import TokenGrid
from fastdit.patching.families.base import Family, attention_in_blocks


def _grid(model, args, kwargs) -> TokenGrid | None:
    """The grid of a ``build_rotary_emb_for_absolute_positions`` call: its frames and latent sizes ÷ the patch,
    rounded up as the RoPE's coordinates are (``frame_positions[::patch_size_t]``, ``arange(0, height,
    patch_size)``)."""
    frames, height, width = (kwargs.get(name) for name in ("frame_positions", "height", "width"))
    if not hasattr(frames, "__len__") or not len(frames) or any(not isinstance(n, int) or n < 1
                                                                for n in (height, width)):
        return None
    pt, p = model.config.patch_size_t, model.config.patch_size
    return TokenGrid(-(-len(frames) // pt), -(-height // p), -(-width // p))


SANA_WM_REFINER = Family(
    name="sana_wm_refiner",
    model_classes=("SanaWMLTX2RefinerTransformer3DModel",),
    self_attention=attention_in_blocks("attn1", "transformer_blocks"),
    grid=_grid,
    processor=None,  # the stock processor dispatches with self._attention_backend: the generic path
    stock_processors=("SanaWMLTX2RefinerAttnProcessor",),
    grid_inputs=(),
    text_position="before",
    text_keys_only=True,
    grid_method="build_rotary_emb_for_absolute_positions",
    models="Sana-WM refiner, stage 2: LTX-2 blocks over a sliding-window KV cache",
    sparsified="`transformer_blocks.N.attn1` (the active block's queries; the cached sink and history keys before "
               "its own, dense)",
    untouched="`attn2`; the audio modules (not run)",
    grid_rule="the last `build_rotary_emb_for_absolute_positions(frame_positions, height, width)` call before the "
              "forward, ÷ patch",
)
