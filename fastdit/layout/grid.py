"""The token grid: the shape of a model's self-attention sequence after patchify.

How the grid's tokens are ordered and cut into kernel blocks is a separate, per-method choice
(:mod:`fastdit.layout.order`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenGrid"]

_TEXT_POSITIONS = ("after", "before", "around")


@dataclass(frozen=True)
class TokenGrid:
    """The latent video after patchify: ``t`` frames of ``h × w`` tokens (an image is ``t = 1``).

    Args:
        t, h, w: latent frames, height and width in tokens (after the VAE and patchify), each >= 1.
        text_tokens: text tokens that joint-attention models (Flux, SD3, HunyuanVideo, ...) put in the same
            self-attention.
        text_position: ``"after"`` or ``"before"``: where the model places them in its own token order;
            ``"around"``: ``text_before`` of them before the video and the rest after it (HunyuanVideo-Framepack's
            history latents before, its prompt after).
        text_before: with ``"around"``, how many of the ``text_tokens`` come before the video (0 otherwise).
    """

    t: int
    h: int
    w: int
    text_tokens: int = 0
    text_position: str = "after"
    text_before: int = 0

    def __post_init__(self) -> None:
        for name in ("t", "h", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TokenGrid.{name} must be a positive int, got {value!r}")
        if not isinstance(self.text_tokens, int) or self.text_tokens < 0:
            raise ValueError(f"TokenGrid.text_tokens must be an int >= 0, got {self.text_tokens!r}")
        if self.text_position not in _TEXT_POSITIONS:
            raise ValueError(f"TokenGrid.text_position must be one of {_TEXT_POSITIONS}, got {self.text_position!r}")
        limit = self.text_tokens if self.text_position == "around" else 0
        if not isinstance(self.text_before, int) or not 0 <= self.text_before <= limit:
            raise ValueError(f"TokenGrid.text_before must be an int in [0, {limit}] with text_position="
                             f"{self.text_position!r}, got {self.text_before!r}")

    @property
    def leading_text_tokens(self) -> int:
        """How many text tokens come before the video in the model's order."""
        return {"after": 0, "before": self.text_tokens, "around": self.text_before}[self.text_position]

    @property
    def video_slice(self) -> slice:
        """Where the video tokens are in the model's order."""
        start = self.leading_text_tokens
        return slice(start, start + self.video_tokens)

    @property
    def video_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def tokens_per_frame(self) -> int:
        return self.h * self.w

    @property
    def num_tokens(self) -> int:
        """Sequence length in the model's own order (video plus text)."""
        return self.video_tokens + self.text_tokens
