"""The comparison library the CLI and the app share: round-robin repeats, rows, JSON spelling of inf."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fastdit import is_patched
from fastdit.models.loading import load_pipeline, resolve_model
from fastdit.runs import compare as compare_module
from fastdit.runs.compare import BASELINE, MethodSpec, compare, write_comparison
from tests.runs.conftest import FakeLpips


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline(resolve_model("sample"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_compare_round_robin_and_rows(pipe):
    call = {"prompt": "a red ball", "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 2,
            "max_sequence_length": 16}
    order = []
    result = compare(pipe, [MethodSpec("grat", {"mode": "surround", "radius": 0})], call,
                     sparse={"block_size": 16, "dense_steps": 0}, warmup=False, repeats=2, on_run=order.append)
    assert order == [BASELINE, "grat(mode=surround,radius=0)"] * 2
    assert [row["method"] for row in result.rows] == [BASELINE, "grat(mode=surround,radius=0)"]
    assert 0 < result.rows[1]["density"] < 1 and result.rows[0]["density"] == 1.0
    assert result.runs[0].sparse == {"block_size": 16, "dense_steps": 0, "method": "grat", "mode": "surround",
                                     "radius": 0}
    data = json.loads(json.dumps(result.to_dict()))  # plain JSON: no Infinity
    assert data["rows"][0]["psnr_db"] == "inf" and data["rows"][0]["ssim"] == 1.0
    assert result.video().shape[0] == 5
    assert not is_patched(pipe)


def test_labels():
    assert MethodSpec("radial").label == "radial"
    assert MethodSpec("radial", {"decay_factor": 0.4, "adjacent": "full"}).label == \
        "radial(adjacent=full,decay_factor=0.4)"
    assert MethodSpec("dense").label == "dense (fastdit)"


def test_compare_reuses_a_given_baseline(pipe):
    call = {"prompt": "a red ball", "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 1,
            "max_sequence_length": 16}
    first = compare(pipe, [MethodSpec("grat")], call, sparse={"block_size": 16, "dense_steps": 0}, warmup=False)
    order = []
    again = compare(pipe, [MethodSpec("radial")], call, sparse={"block_size": 16, "dense_steps": 0},
                    warmup=False, baseline=first.baseline, on_run=order.append)
    assert order == ["radial"] and again.baseline is first.baseline


# one frame: the quickest call
CALL = {"prompt": "a red ball", "num_frames": 1, "height": 64, "width": 64, "num_inference_steps": 1,
        "max_sequence_length": 16}


def test_lpips_is_reported_beside_psnr_and_ssim(pipe, monkeypatch, tmp_path):
    monkeypatch.setattr(compare_module, "lpips_metric", FakeLpips)  # torchmetrics' stand-in: no weights here
    result = compare(pipe, [MethodSpec("grat", {"mode": "surround", "radius": 0})], {**CALL, "num_frames": 5},
                     sparse={"block_size": 16, "dense_steps": 0}, warmup=False)
    expected = np.abs(result.baseline.frames / 255.0 - result.runs[0].frames / 255.0).mean()
    assert result.rows[0]["lpips"] == 0.0 and result.rows[1]["lpips"] == pytest.approx(expected, rel=1e-5)
    assert result.rows[1]["lpips"] > 0 and result.lpips_unavailable is None
    paths = write_comparison(result, tmp_path, fps=8, command="fastdit compare")
    data = json.loads(paths["table_json"].read_text())
    assert data["rows"][1]["lpips"] == result.rows[1]["lpips"] and data["notes"]["lpips"].startswith("LPIPS (")
    table = paths["table_md"].read_text()
    assert "| psnr_db | ssim | lpips |" in table and "unavailable" not in table


def test_lpips_unavailable_is_one_line_in_the_report(pipe, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # as when not installed
    result = compare(pipe, [MethodSpec("radial")], CALL, sparse={"block_size": 16, "dense_steps": 0},
                     warmup=False)
    reason = "LPIPS unavailable: torchmetrics is not installed (pip install 'fastdit[lpips]')"
    assert [row["lpips"] for row in result.rows] == [None, None] and result.lpips_unavailable == reason
    paths = write_comparison(result, tmp_path, fps=8, command="fastdit compare")
    assert json.loads(paths["table_json"].read_text())["notes"]["lpips"] == reason
    assert f"\n{reason}.\n" in paths["table_md"].read_text()
    small = compare(pipe, [MethodSpec("radial")], {**CALL, "height": 16, "width": 16},
                    sparse={"block_size": 16, "dense_steps": 0}, warmup=False)
    assert small.lpips_unavailable == "LPIPS unavailable: frames of 16x16 are below its 32x32 minimum"
