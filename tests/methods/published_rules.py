"""Token-level references of the published rules, written from the papers and the official code's logic.

They build token masks (per frame pair for radial, so memory stays at one frame pair) and are slow on
purpose: plain, obviously-correct constructions that the fast block-level methods are compared with. The
figures obtained by running the official code itself live in ``tests/fixtures/official``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official"


def official(name: str):
    """A JSON figure file from ``tests/fixtures/official``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def official_masks(name: str) -> dict[str, torch.Tensor]:
    """Block masks saved from the official code (bit-packed in an npz), as bool tensors by key."""
    with np.load(FIXTURES / f"{name}.npz") as z:
        return {key: torch.from_numpy(np.unpackbits(z[key])[: int(np.prod(z[key + "__shape"]))]
                                      .reshape(tuple(z[key + "__shape"])).astype(bool))
                for key in z.files if not key.endswith("__shape")}


def radial_pair_tokens(i: int, j: int, P: int, B: int, decay: float, sink: bool, adjacent: str,
                       subsample: int = 128) -> torch.Tensor:
    """``[P, P]`` bool: which (query, key) tokens of frames ``i`` and ``j`` the published rule keeps."""
    if sink and j == 0:
        return torch.ones(P, P, dtype=torch.bool)
    d = abs(i - j)
    reach = 2 ** P.bit_length() / 2 ** d.bit_length()
    if reach < subsample and d % int(subsample / reach) != 0:
        return torch.zeros(P, P, dtype=torch.bool)
    if d == 0 or (d == 1 and adjacent == "full"):
        width = P
    elif d == 1:
        width = P // 2
    else:
        width = max(B, reach * decay)
    x = torch.arange(P)
    return (x.view(-1, 1) - x.view(1, -1)).abs() <= width


def shrink_pair(tokens: torch.Tensor, i: int, j: int, B: int) -> torch.Tensor:
    """The official shrink of one frame pair: its token mask at the frames' offsets in whole blocks, the first
    ``ceil(P/B)`` blocks per side, a block kept when > 60% of its non-empty columns are > 1/3 full."""
    P = tokens.shape[0]
    n = -(-P // B)
    ri, rj = (i * P) % B, (j * P) % B
    canvas = torch.zeros(ri + n * B, rj + n * B, dtype=torch.bool)
    canvas[ri:ri + P, rj:rj + P] = tokens
    per_column = canvas[: n * B, : n * B].reshape(n, B, n, B).sum(1).double() / B  # [n, n, B]
    non_empty = (per_column > 0).sum(-1).double()
    dense = (per_column > 1 / 3).sum(-1).double()
    return dense / (non_empty + 1e-9) > 0.6


def radial_reference(T: int, P: int, B: int, decay: float, sink: bool, adjacent: str = "full",
                     pairs=None) -> torch.Tensor:
    """``[nb, nb]`` bool: the published radial block mask of ``T`` frames of ``P`` tokens (raster order,
    ``B``-token blocks, padded at the end); ``pairs`` restricts it to some ``(i, j)`` frame pairs."""
    nb = -(-T * P // B)
    out = torch.zeros(nb, nb, dtype=torch.bool)
    for i, j in pairs if pairs is not None else ((i, j) for i in range(T) for j in range(T)):
        blocks = shrink_pair(radial_pair_tokens(i, j, P, B, decay, sink, adjacent), i, j, B)
        r, c = i * P // B, j * P // B
        rows, cols = min(blocks.shape[0], nb - r), min(blocks.shape[1], nb - c)
        out[r:r + rows, c:c + cols] |= blocks[:rows, :cols]
    if pairs is None and (T * P) % B:  # the block where the video ends is global
        out[-1, :] = out[:, -1] = True
    return out


def token_agreement(mine: torch.Tensor, reference: torch.Tensor, tokens: int, B: int) -> tuple[float, float]:
    """``(coverage, extra)`` of two raster block masks counted in real token pairs: the share of the
    reference's pairs that ``mine`` keeps, and ``mine``'s pairs outside the reference over the reference's."""
    sizes = (torch.clamp(tokens - torch.arange(mine.shape[0]) * B, 0, B)).double()
    weight = sizes.view(-1, 1) * sizes.view(1, -1)
    ref_pairs = float((weight * reference).sum())
    found = float((weight * (mine & reference)).sum()) / ref_pairs
    return found, float((weight * (mine & ~reference)).sum()) / ref_pairs


def structured_qk(grid: tuple[int, int, int], noise: tuple[float, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, k) [1, heads, T·H·W, 64]`` fp32 in raster order: per head, smooth Fourier features of the token's
    position (``omega = randn(32, 3) / 2.5``, ``[cos, sin](pos @ omega.T) · 1.6``) plus ``noise[head]`` · randn,
    from ``Generator(seed)`` (the recipe of the official PSA fixtures in ``psa_bf16.json``)."""
    T, H, W = grid
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([t, h, w], -1).reshape(-1, 3).float()
    g = torch.Generator().manual_seed(seed)
    qs, ks = [], []
    for sigma in noise:
        phase = pos @ (torch.randn(32, 3, generator=g) / 2.5).T
        feat = torch.cat([torch.cos(phase), torch.sin(phase)], -1) * 1.6
        qs.append(feat + sigma * torch.randn(pos.shape[0], 64, generator=g))
        ks.append(feat + sigma * torch.randn(pos.shape[0], 64, generator=g))
    return torch.stack(qs)[None], torch.stack(ks)[None]
