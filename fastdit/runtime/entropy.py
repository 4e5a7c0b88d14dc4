"""Attention-entropy scaling: a softmax-scale correction for token counts the model was not trained at.

Attention entropy grows with the number of keys, so at a higher resolution (or a longer video) each query
spreads its attention thinner than the model saw in training, and images repeat or lose structure. Scaling
the logits by ``sqrt(log N / log N_train)`` keeps the entropy where training left it (Jin et al., 2023).
At the training token count the factor is exactly 1.
"""

from __future__ import annotations

import math

__all__ = ["entropy_scale_factor"]


def entropy_scale_factor(n_tokens: int, n_train: int) -> float:
    """``sqrt(log n_tokens / log n_train)``: multiply the softmax scale (``1/sqrt(d)``) by this."""
    if n_train < 2:
        raise ValueError(f"n_train (tokens at the training resolution) must be >= 2, got {n_train}")
    if n_tokens < 2:
        raise ValueError(f"n_tokens must be >= 2, got {n_tokens}")
    if n_tokens == n_train:
        return 1.0
    return math.sqrt(math.log(n_tokens) / math.log(n_train))
