"""Entropy scaling inside the SD UNet (every level has its own N and N_train), and on Flux, Qwen-Image (joint
text: image tokens only) and Helios (history frames before the video: the video tokens only) on the generic path."""

from __future__ import annotations

import math

import pytest
import torch

import fastdit


def _spy_scales(model) -> list[tuple[int, int, float | None]]:
    """Record ``(tokens, head_dim, scale)`` of every ``engine.scale`` call the processors make."""
    engine = model._fastdit_state.engine  # every processor's and dispatch's engine
    assert engine.config.n_train == 256
    seen, scale = [], engine.scale

    def spy(tokens, head_dim, n_train=None):
        seen.append((tokens, head_dim, scale(tokens, head_dim, n_train)))
        return seen[-1][2]

    engine.scale = spy
    return seen


def _factor(n: int, n_train: int) -> float:
    return math.sqrt(math.log(n) / math.log(n_train))


@pytest.mark.parametrize("family,train_grid,big_grid,n_train", [
    ("unet", (1, 16, 16), (1, 32, 32), None),  # n_train from the UNet config: sample_size 16 -> 256 tokens
    ("flux", (1, 16, 16), (1, 32, 32), 256),
    ("qwen_image", (1, 16, 16), (1, 32, 32), 256),
    ("helios", (4, 8, 8), (4, 16, 16), 256),
])
def test_factor_is_one_at_the_training_size_and_grows_with_four_times_the_tokens(
        cases, forward, family, train_grid, big_grid, n_train):
    case = cases[family]
    model = case.build()
    small, big = case.inputs(train_grid, 1), case.inputs(big_grid, 1)
    plain_small, plain_big = forward(model, small), forward(model, big)
    fastdit.apply(model, method="dense", preset=None, entropy_scaling=True, n_train=n_train)
    try:
        seen = _spy_scales(model)
        scaled_small = forward(model, small)
        at_training = list(seen)
        seen.clear()
        scaled_big = forward(model, big)
        at_4x = list(seen)
    finally:
        fastdit.remove(model)

    levels = {tokens for tokens, _, _ in at_training}
    if family == "unet":
        assert levels == {256, 64, 16}  # level 0, level 1 and the mid block, each at its own size
    else:
        assert levels == {256}  # video/image tokens only: text and history tokens don't grow with the resolution
    assert all(value == head_dim**-0.5 for _, head_dim, value in at_training)  # factor exactly 1
    assert {tokens for tokens, _, _ in at_4x} == {4 * n for n in levels}
    for tokens, head_dim, value in at_4x:
        n = tokens // 4  # this level's training token count
        assert value == pytest.approx(head_dim**-0.5 * _factor(4 * n, n), rel=1e-12)
    assert torch.equal(scaled_small, plain_small)
    assert not torch.allclose(scaled_big, plain_big, atol=1e-6)
