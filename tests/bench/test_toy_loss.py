"""``fastdit bench toy-loss``: the same held-out clips, noise and levels for every configuration (numbers never
asserted beyond what must hold)."""

from __future__ import annotations

import json
import math

import pytest

from fastdit.bench.toy_loss import noise_levels
from fastdit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_noise_levels_are_quantile_midpoints_of_the_shifted_distribution():
    assert noise_levels(2, 1.0) == pytest.approx([0.25, 0.75])
    levels = noise_levels(4, 3.0)
    assert levels == sorted(levels) and 0 < levels[0] and levels[-1] < 1
    assert levels[0] == pytest.approx(3 * 0.125 / (1 + 2 * 0.125))


def test_report_compares_every_configuration_on_the_same_clips(mini_model, tmp_path):
    args = ["bench", "toy-loss", "--model", str(mini_model), "--preset", "fastdit/tiny-wan", "--clips", "2",
            "--levels", "2", "--scales", "1", "2", "--out", str(tmp_path), "--name", "loss_test"]
    assert main(args) == 0
    data = json.loads((tmp_path / "loss_test.json").read_text())
    labels = [(r["frames"], r["config"]) for r in data["rows"]]
    assert labels == [(5, "dense (stock)"), (5, "radial"), (9, "dense (stock)"), (9, "radial"),
                      (9, "dense +entropy"), (9, "radial +entropy")]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in data["rows"])
    dense = [r for r in data["rows"] if r["config"] == "dense (stock)"]
    assert all(r["vs_dense"] == 1.0 for r in dense) and dense[0]["vs_1x"] == 1.0
    assert all(len(v) == 2 for v in data["clip_losses"].values())
    # the same clips and noise: running again gives the same losses
    assert main(args[:-1] + ["loss_again"]) == 0
    again = json.loads((tmp_path / "loss_again.json").read_text())
    assert again["clip_losses"] == data["clip_losses"]


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["bench", "toy-loss", "--clips", "0"]) == 2
    assert "--clips" in capsys.readouterr().err
    assert main(["bench", "toy-loss", "--entropy-for", "nope"]) == 2  # before the model loads
    assert "--entropy-for" in capsys.readouterr().err
