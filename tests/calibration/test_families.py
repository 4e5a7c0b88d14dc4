"""``fastdit.calibrate`` beyond Wan (issue 33): models with joint text+video attention (HunyuanVideo: the prompt
after the video; Flux: before the image) and Wan-architecture families on the generic path (SkyReels-V2; Wan-VACE,
whose control blocks attend a second video of the same grid). Calibration samples query rows from the video
tokens only, and the file it writes makes a run follow it."""

from __future__ import annotations

import importlib
import importlib.util
import types
from dataclasses import dataclass
from typing import Any, Callable

import pytest

import fastdit.calibration.measurements as measurements
from fastdit.calibration import measure, select
from fastdit.dummy.image import dummy_flux_pipeline
from fastdit.dummy.video import dummy_hunyuan_video_pipeline
from fastdit.dummy.wan import dummy_skyreels_v2_pipeline, dummy_wan_vace_pipeline
from fastdit.layout.grid import TokenGrid
from tests.calibration.conftest import CALL, HEAD_DIM, PROMPT, check_follows, stats_with

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = 16  # max_sequence_length: the joint models' text tokens, padding included
WAN_TOY = dict(num_layers=2, attention_head_dim=HEAD_DIM, patch_size=(1, 1, 1))  # CALL's 3x8x8 grid


@dataclass(frozen=True)
class Case:
    build: Callable[[], Any]
    call: dict[str, Any]
    grid: tuple[int, int, int]
    layers: int  # self-attention layers calibrated
    text_before: int = 0  # joint text tokens before the video in the attention's sequence
    text_after: int = 0


CASES = {
    # one double-stream and one single-stream block, both joint attention with the text after the video (no
    # crop template: the toy tokenizer can't crop the real one's chat text); Flux: the same with the text first
    "hunyuan_video": Case(dummy_hunyuan_video_pipeline,
                          dict(CALL, height=128, width=128, max_sequence_length=TEXT,
                               prompt_template={"template": "{}", "crop_start": 0}), (3, 8, 8), 2, text_after=TEXT),
    "flux": Case(dummy_flux_pipeline, dict(height=256, width=256, num_inference_steps=3, max_sequence_length=TEXT),
                 (1, 16, 16), 2, text_before=TEXT),
    "skyreels_v2": Case(lambda: dummy_skyreels_v2_pipeline(**WAN_TOY), dict(CALL, max_sequence_length=TEXT),
                        (3, 8, 8), 2),
    "wan_vace": Case(lambda: dummy_wan_vace_pipeline(**WAN_TOY), dict(CALL, max_sequence_length=TEXT),
                     (3, 8, 8), 3),  # 2 blocks + 1 VACE block
}


@pytest.fixture
def ftfy_stand_in(monkeypatch):
    """diffusers' SkyReels-V2 and Wan-VACE pipelines clean every prompt with ``ftfy`` (an optional dependency)
    unguarded, unlike ``WanPipeline``; where it isn't installed, an identity stands in."""
    if importlib.util.find_spec("ftfy") is None:
        for name in ("skyreels_v2.pipeline_skyreels_v2", "wan.pipeline_wan_vace"):
            module = importlib.import_module(f"diffusers.pipelines.{name}")
            monkeypatch.setattr(module, "ftfy", types.SimpleNamespace(fix_text=str), raising=False)


@pytest.mark.usefixtures("ftfy_stand_in")
@pytest.mark.parametrize("name", list(CASES))
def test_calibration_measures_video_rows_only_and_its_file_is_followed(name, monkeypatch, tmp_path):
    case = CASES[name]
    pipe = case.build()
    pipe.set_progress_bar_config(disable=True)
    sampled = []  # (sequence length, query rows) of every measured call

    def exact_rows(q, k, v, rows, *args):
        sampled.append((q.shape[2], rows.tolist()))
        return exact(q, k, v, rows, *args)

    exact = measurements.exact_rows
    monkeypatch.setattr(measurements, "exact_rows", exact_rows)
    measured = measure(pipe, PROMPT, methods=("radial", "grat"), call=case.call, block_size=16, preset=None)

    video = TokenGrid(*case.grid)
    assert measured.grid == video and measured.skipped_calls == 0
    assert sorted(measured.layers) == [("transformer", layer) for layer in range(case.layers)]
    assert len(sampled) == case.layers * len(measured.steps)
    first, end = case.text_before, case.text_before + video.video_tokens
    for length, rows in sampled:
        assert length == end + case.text_after  # the text (or nothing) around the video is in the sequence...
        assert all(first <= row < end for row in rows)  # ...and no query row is sampled from it

    calibration = select(measured, 0.3)
    assert any(c.method != "dense" for c in calibration.layers)
    path = calibration.save(tmp_path / f"{name}.json")
    check_follows(stats_with(pipe, path, case.call), calibration)
