"""``tools/svg2_warmup_effect.py``: it scores the layouts of the first sparse step, and only those, and counts
the dense warm-up's k-means in a video's layout time when ``zero_step_kmeans_init`` is on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fastdit.models.loading import load_pipeline, resolve_model

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import svg2_warmup_effect  # noqa: E402

pytestmark = pytest.mark.slow  # three runs of the sample

CALL = {"num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 5.0,
        "max_sequence_length": 32}  # 2 x 8 x 8 tokens; the preset's 3 of 16 steps dense = 1 of 4


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline(resolve_model("sample"), "cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_first_sparse_step_rows_and_video_layout_time(pipe):
    layers = len(pipe.transformer.blocks)
    dense, rows, layout_s = svg2_warmup_effect.run(pipe, CALL, "a red ball bouncing in a white room", 0, None)
    assert rows == [] and layout_s == 0.0
    seen = {}
    for name, options in svg2_warmup_effect.SETTINGS.items():
        frames, rows, layout_s = svg2_warmup_effect.run(pipe, CALL, "a red ball bouncing in a white room", 0, options)
        assert frames.shape == dense.shape and not np.array_equal(frames, dense)
        assert len(rows) == 2 * layers  # one call per guidance branch and layer, at the first sparse step only
        assert all(0 < r["density"] < 1 and 0 < r["recall"] <= 1 and r["layout_ms"] > 0 for r in rows)
        seen[name] = (rows, layout_s)
    plain, warm = seen["svg2"], seen["svg2 + zero_step_kmeans_init"]
    assert warm[1] > sum(r["layout_ms"] for r in warm[0]) / 1e3  # the warm-up's k-means is in the video's time
    assert [r["density"] for r in plain[0]] != [r["density"] for r in warm[0]]
