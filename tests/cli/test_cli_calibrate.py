"""``fastdit calibrate`` writes a calibration file that ``generate`` and ``compare`` take with ``--calibration``."""

from __future__ import annotations

import json

import pytest

from fastdit.toy.recipe import RECIPES

SIZE = ["--frames", "5", "--height", "64", "--width", "64", "--steps", "2"]


@pytest.fixture
def calibration_file(fastdit_cli, tmp_path):
    result = fastdit_cli("calibrate", "--prompt", "a red ball", "--prompt", "a blue cube", *SIZE, "--block-size",
                         "16", "--target", "0.5", "--methods", "radial", "grat", "--out", "cal.json")
    assert result.returncode == 0, result.stderr
    assert "expected density" in result.stdout and "wrote cal.json" in result.stdout
    return tmp_path / "cal.json"


@pytest.mark.slow
def test_calibrate_then_generate_and_compare_with_it(fastdit_cli, calibration_file, tmp_path):
    data = json.loads(calibration_file.read_text())
    assert data["grid"] == [2, 8, 8] and data["block_size"] == 16 and data["target"] == 0.5
    assert data["prompts"] == ["a red ball", "a blue cube"] and data["methods"] == ["radial", "grat"]
    assert {layer["layer"] for layer in data["layers"]} == set(range(RECIPES["full"].transformer["num_layers"]))
    assert data["expected_density"] < 1  # a loose target leaves something sparse

    result = fastdit_cli("generate", "--prompt", "a cat", *SIZE, "--calibration", "cal.json", "--out", "cat.mp4",
                         "--report", "run.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["sparse"]["calibration"] == "cal.json"
    assert report["attention"]["mean_density"] == pytest.approx(data["expected_density"], abs=0.05)

    result = fastdit_cli("compare", "--prompt", "a cat", *SIZE, "--methods", "radial", "--calibration", "cal.json",
                         "--no-warmup", "--out", "cmp")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["dense", "radial", "calibrated (cal.json)"]


@pytest.mark.slow
def test_other_size_is_refused_unless_reused(fastdit_cli, calibration_file):
    other = ["--frames", "5", "--height", "64", "--width", "96", "--steps", "2"]
    result = fastdit_cli("generate", "--prompt", "a cat", *other, "--calibration", "cal.json", "--out", "a.mp4")
    assert result.returncode == 2 and "calibrated on a 2x8x8 latent grid" in result.stderr
    result = fastdit_cli("generate", "--prompt", "a cat", *other, "--calibration", "cal.json",
                         "--reuse-calibration", "--out", "b.mp4")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args, message", [
    (["generate", "--prompt", "x", "--calibration", "missing.json"], "--calibration: calibration file"),
    (["generate", "--prompt", "x", "--reuse-calibration"], "--reuse-calibration needs --calibration"),
    (["calibrate", "--prompt", "x", "--target", "-1"], "--target must be"),
    (["calibrate", "--prompt", "x", "--out", "cal.txt"], "must end in .json"),
])
def test_mistakes_are_one_line_before_loading(fastdit_cli, args, message):
    result = fastdit_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
