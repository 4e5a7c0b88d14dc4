"""``fastdit bench calibrate``: the report's rows and verdicts (numbers are measured, never asserted)."""

from __future__ import annotations

import json

import pytest

from fastdit.bench.calibrate import _prompts, verdicts
from fastdit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_verdict_compares_with_the_least_dense_uniform_setting_of_at_least_the_same_psnr():
    rows = [{"config": "a", "kind": "uniform", "density": 0.3, "psnr_db": 30.0},
            {"config": "b", "kind": "uniform", "density": 0.6, "psnr_db": 40.0},
            {"config": "c", "kind": "uniform", "density": 0.8, "psnr_db": 45.0},
            {"config": "calibrated 0.1", "kind": "calibrated", "target": 0.1, "density": 0.5, "psnr_db": 39.0},
            {"config": "calibrated 0.05", "kind": "calibrated", "target": 0.05, "density": 0.7, "psnr_db": 44.0},
            {"config": "calibrated 0.01", "kind": "calibrated", "target": 0.01, "density": 0.9, "psnr_db": 50.0}]
    first, second, third = verdicts(rows)
    assert first.startswith("calibrated 0.1: PSNR") and "b at 0.600" in first
    assert first.endswith("calibrated is sparser")
    assert "c at 0.800" in second and second.endswith("calibrated is sparser")
    assert "no uniform setting reaches this PSNR" in third
    rows[4]["density"] = 0.85
    assert verdicts(rows)[1].endswith("calibrated is NOT sparser")


def test_calibration_prompts_are_not_evaluated():
    evaluate, calibrate_on = _prompts(4, 2)
    assert len(evaluate) == 4 and len(calibrate_on) == 2 and not set(evaluate) & set(calibrate_on)
    with pytest.raises(ValueError, match="sum to at most"):
        _prompts(70, 5)


@pytest.mark.slow
def test_report_has_uniform_and_calibrated_rows(tmp_path):
    code = main(["bench", "calibrate", "--prompts", "1", "--steps", "2", "--methods", "grat", "--targets", "0.1",
                 "0.5", "--allocations", "budget", "--out", str(tmp_path), "--name", "cal_test"])
    assert code == 0
    data = json.loads((tmp_path / "cal_test.json").read_text())
    kinds = [row["kind"] for row in data["rows"]]
    assert kinds == ["dense", "uniform"] + ["uniform"] * 4 + ["calibrated"] * 2  # preset + 4 grat radii
    assert len(data["verdicts"]) == 2 and data["cost_vs_dense"] > 0
    assert [c["target"] for c in data["calibrations"]] == [0.1, 0.5]
    assert "Calibration cost" in (tmp_path / "cal_test.md").read_text()
