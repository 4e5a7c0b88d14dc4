"""The comparison library the CLI and the app share: round-robin repeats, rows, JSON spelling of inf."""

from __future__ import annotations

import json

import pytest

from fastdit import is_patched
from fastdit.models.loading import load_pipeline, resolve_model
from fastdit.runs.compare import BASELINE, MethodSpec, compare


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
