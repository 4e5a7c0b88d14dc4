"""LPIPS through torchmetrics: the frames it is given, and a one-line reason where it can't run (no network)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from fastdit.runs import perceptual
from fastdit.runs.perceptual import LpipsUnavailable, lpips, lpips_metric
from tests.runs.conftest import FakeLpips


def test_lpips_is_the_mean_over_every_frame():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (11, 32, 40, 3), dtype=np.uint8) for _ in range(2))  # more frames than a batch
    expected = np.abs(a / 255.0 - b / 255.0).mean()
    assert lpips(a, b, FakeLpips()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 16x32"):
        lpips(a[:, :, :16], b[:, :, :16], FakeLpips())
    with pytest.raises(ValueError, match="same shape"):
        lpips(a, b[:5], FakeLpips())


def test_without_torchmetrics_lpips_is_unavailable_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import fails, as when not installed
    with pytest.raises(LpipsUnavailable) as err:
        lpips_metric()
    assert str(err.value) == "LPIPS unavailable: torchmetrics is not installed (pip install 'fastdit[lpips]')"


def test_a_broken_torchvision_is_one_line(monkeypatch, tmp_path):
    # a torchvision built for another torch raises RuntimeError on import (its C++ operators don't register)
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does '
                                                          'not exist\\nmore")')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setitem(sys.modules, "torchmetrics", types.ModuleType("torchmetrics"))
    with pytest.raises(LpipsUnavailable) as err:
        lpips_metric()
    assert str(err.value) == ("LPIPS unavailable: torchvision can't be imported (RuntimeError: operator "
                              "torchvision::nms does not exist)")


def test_without_cached_weights_lpips_downloads_nothing(monkeypatch, tmp_path):
    weights = types.SimpleNamespace(DEFAULT=types.SimpleNamespace(url="https://example.invalid/alexnet-x.pth"))
    fake_vision = types.ModuleType("torchvision")
    fake_vision.models = types.SimpleNamespace(AlexNet_Weights=weights)
    monkeypatch.setitem(sys.modules, "torchvision", fake_vision)
    monkeypatch.setitem(sys.modules, "torchmetrics", types.ModuleType("torchmetrics"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(perceptual, "_build_metric", lambda: pytest.fail("would build (and download)"))
    with pytest.raises(LpipsUnavailable, match=r"^LPIPS unavailable: torchvision's AlexNet weights are not in "
                                               rf"{tmp_path / 'checkpoints'} \(fastdit downloads nothing"):
        lpips_metric()


def test_the_real_metric_where_it_is_installed_with_its_weights():
    try:
        metric = lpips_metric()
    except LpipsUnavailable as err:
        pytest.skip(str(err))
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    assert lpips(frames, frames, metric) == pytest.approx(0.0, abs=1e-6)
    assert lpips(frames, 255 - frames, metric) > 0.1
