"""``fastdit bench calibrate``: the report's rows and verdicts (numbers are measured, never asserted)."""

from __future__ import annotations

import json

import pytest

from fastdit.bench.calibrate import _prompts, frontier_psnr, verdicts
from fastdit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_verdict_compares_with_the_uniform_frontier_at_the_same_density():
    rows = [{"config": "a", "kind": "uniform", "density": 0.3, "psnr_db": 30.0},
            {"config": "b", "kind": "uniform", "density": 0.6, "psnr_db": 40.0},
            {"config": "worse", "kind": "uniform", "density": 0.5, "psnr_db": 20.0},  # off the frontier
            {"config": "c", "kind": "uniform", "density": 0.8, "psnr_db": 45.0},
            {"config": "calibrated 0.1", "kind": "calibrated", "target": 0.1, "density": 0.5, "psnr_db": 39.0},
            {"config": "calibrated 0.05", "kind": "calibrated", "target": 0.05, "density": 0.7, "psnr_db": 41.0},
            {"config": "calibrated 0.01", "kind": "calibrated", "target": 0.01, "density": 0.9, "psnr_db": 50.0}]
    assert frontier_psnr(rows[:4], 0.5) == pytest.approx(36.667, abs=1e-3)
    first, second, third = verdicts(rows)
    assert first.startswith("calibrated 0.1: PSNR 39.0 dB") and "(+2.3 dB)" in first and "b at 0.600" in first
    assert "(-1.5 dB)" in second and "c at 0.800" in second
    assert "outside the uniform settings' density range" in third and "no uniform setting reaches" in third


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
