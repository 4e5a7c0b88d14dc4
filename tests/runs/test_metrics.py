"""PSNR and SSIM against values worked out by hand and against a plain per-window SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdit.runs.metrics import gaussian_window, psnr, ssim

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _textured(seed: int = 0, shape=(3, 32, 40, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, size=shape).astype(np.uint8)


def test_identical_videos():
    video = _textured()
    assert psnr(video, video) == math.inf
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shift", [1, 5, 20])
def test_psnr_of_a_constant_shift(shift):
    video = _textured()
    # MSE = shift^2, so PSNR = 20 log10(255 / shift)
    assert psnr(video, video + np.uint8(shift)) == pytest.approx(20 * math.log10(255 / shift))


def test_psnr_of_floats_uses_a_peak_of_one():
    a = np.full((2, 16, 16, 3), 0.5, dtype=np.float32)
    assert psnr(a, a + np.float32(0.1)) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert psnr(a * 255, a * 255 + 25.5, data_range=255) == pytest.approx(20.0)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # no variance: the contrast-structure term is C2 / C2 = 1, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((24, 24), 100, np.uint8), np.full((24, 24), 120, np.uint8)
    expected = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.983611, abs=1e-6)


def test_ssim_of_a_shift_keeps_structure_and_drops_only_luminance():
    # y = x + c: every local variance and covariance is unchanged, so each window scores
    # (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1), mu being that window's weighted mean
    x = np.tile(np.array([[90, 110], [110, 90]], np.uint8), (16, 16))  # checkerboard, 32x32
    c = 30
    mu = _window_means(x.astype(float))
    expected = np.mean((2 * mu * (mu + c) + C1) / (mu**2 + (mu + c) ** 2 + C1))
    assert ssim(x, x + np.uint8(c)) == pytest.approx(expected, rel=1e-10)
    assert ssim(x, x + np.uint8(c)) < 1


def _window_means(img: np.ndarray) -> np.ndarray:
    w = np.outer(gaussian_window(), gaussian_window())
    rows, cols = img.shape[0] - 10, img.shape[1] - 10
    return np.array([[np.sum(w * img[i:i + 11, j:j + 11]) for j in range(cols)] for i in range(rows)])


def _ssim_per_window(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window: 11x11 Gaussian (sigma 1.5) weights, valid positions."""
    w = np.outer(gaussian_window(), gaussian_window())
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * (px - mx) ** 2), np.sum(w * (py - my) ** 2)
            cov = np.sum(w * (px - mx) * (py - my))
            values.append((2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_ssim_matches_the_per_window_definition_on_noise():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(20, 23)).astype(np.uint8)
    y = np.clip(x + rng.normal(0, 25, size=x.shape), 0, 255).astype(np.uint8)
    expected = _ssim_per_window(x.astype(float), y.astype(float))
    assert ssim(x, y) == pytest.approx(expected, rel=1e-10)
    assert 0 < expected < 1


def test_ssim_averages_frames_and_channels_equally():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(2, 16, 16, 2)).astype(np.uint8)
    b = a.copy()
    b[0, :, :, 1] = rng.integers(0, 256, size=(16, 16))
    per_image = [ssim(a[f, :, :, c], b[f, :, :, c]) for f in range(2) for c in range(2)]
    assert ssim(a, b) == pytest.approx(np.mean(per_image), rel=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a), rel=1e-12)


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g[5] / g[6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))
