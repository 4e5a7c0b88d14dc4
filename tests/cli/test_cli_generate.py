"""``fastdit generate`` end to end on the bundled model: a playable mp4, a summary, a report."""

from __future__ import annotations

import json

import imageio.v3 as iio

from fastdit.toy.recipe import RECIPES


def test_generate_writes_playable_mp4_and_report(fastdit_cli, small, tmp_path):
    # one-group surround: criss-cross planes keep every group of so small a grid
    result = fastdit_cli("generate", "--prompt", "a red ball", "--method", "grat", "--option", "mode=surround",
                         "--option", "radius=0", *small, "--vae-tiling", "--out", "ball.mp4", "--report", "run.json")
    assert result.returncode == 0, result.stderr
    video = iio.imread(tmp_path / "ball.mp4")
    assert video.shape == (5, 64, 64, 3)
    assert "time:" in result.stdout and "density per layer" in result.stdout and "peak memory" in result.stdout

    report = json.loads((tmp_path / "run.json").read_text())
    assert report["frames"] == 5 and report["steps"] == 2 and len(report["step_s"]) == 2
    assert report["total_s"] >= report["denoise_s"] > 0
    assert report["vae_tiling"] is True and report["offload"] is None
    attention = report["attention"]
    assert attention["sparse_fraction"] == 1.0  # no dense warm-up step or layer was asked for
    assert 0 < attention["mean_density"] < 1
    layers = RECIPES["full"].transformer["num_layers"]
    assert set(attention["per_layer_density"]) == {f"transformer.{i}" for i in range(layers)}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
