"""Where each rank's tokens sit in the model's sequence under diffusers' context parallelism.

diffusers splits a model's inputs along the sequence at the first block (its ``_cp_plan``). A joint-attention
model (Flux) splits its text and its image separately, so every rank's attention sequence is its share of the
text followed by its share of the image, and the ranks' sequences laid end to end (what an all-to-all or an
all-gather gives) interleave text and image: ``[t0 v0 t1 v1 ...]``. A layout is defined on the model's own
order (all text, then all video, or the reverse), so fastdit moves tokens between the two. A model whose plan
splits the joined sequence in one piece (Helios, MiniMax-H3: the family's ``context_parallel_joined``) gives
every rank a contiguous share of the model's own order, so the ranks' sequences laid end to end are that order.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["split_sizes", "model_positions", "gathered_order"]


def split_sizes(total: int, ranks: int) -> list[int]:
    """How diffusers shares ``total`` tokens among ``ranks`` (``tensor_split``: the first ``total % ranks``
    ranks get one more; an even split, when required, gives the same sizes)."""
    return [total // ranks + (r < total % ranks) for r in range(ranks)]


def model_positions(text: list[int], video: list[int], text_position: str) -> torch.Tensor:
    """``[S]`` int64: the position in the model's sequence of every token of the ranks' sequences laid end to
    end, rank ``r`` holding ``text[r]`` text and ``video[r]`` video tokens (its text first when the model puts
    text ``"before"``, last when ``"after"``)."""
    total_text, total_video = sum(text), sum(video)
    text_start = 0 if text_position == "before" else total_video
    video_start = total_text if text_position == "before" else 0
    parts = []
    t_seen = v_seen = 0
    for t, v in zip(text, video):
        t_pos = torch.arange(text_start + t_seen, text_start + t_seen + t)
        v_pos = torch.arange(video_start + v_seen, video_start + v_seen + v)
        parts.extend((t_pos, v_pos) if text_position == "before" else (v_pos, t_pos))
        t_seen, v_seen = t_seen + t, v_seen + v
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def gathered_order(processor: Any, text_tokens: int | None, local_tokens: int, text_position: str, group: Any,
                   ranks: int, rank: int, sizes: bool = True) -> tuple[list[int] | None, int, torch.Tensor | None]:
    """``(tokens per rank, text tokens in all, model position of each gathered token)`` for the ranks of
    ``group`` laid end to end; the positions are ``None`` when that order is already the model's (no text).
    With ``sizes=False`` the tokens per rank are only gathered (a collective and a host sync) when the text
    needs them, and are ``None`` otherwise.

    ``text_tokens`` is this rank's text length as the processor saw it (``None``: text and video came joined,
    so this rank holds its share of the text length the pre-hook recorded). Whether to communicate at all is
    decided from what every rank knows alike, so all ranks enter the same collectives.
    """
    from diffusers.models._modeling_parallel import gather_size_by_comm

    grid = processor.grid
    recorded = grid.text_tokens if grid is not None else 0  # the whole text, as the pre-hook saw it
    if (text_tokens == 0 and recorded == 0) or getattr(processor, "context_parallel_joined", False):
        return (gather_size_by_comm(local_tokens, group) if sizes else None), recorded, None
    local = gather_size_by_comm(local_tokens, group)
    text_local = split_sizes(recorded, ranks)[rank] if text_tokens is None else text_tokens
    text = gather_size_by_comm(text_local, group)
    video = [s - t for s, t in zip(local, text)]
    if min(video) < 0:
        raise RuntimeError(f"fastdit: the ranks hold {local} tokens of which {text} are said to be text")
    if sum(text) == 0:
        return local, 0, None
    return local, sum(text), model_positions(text, video, text_position)
