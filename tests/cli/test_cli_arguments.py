"""Hostile arguments to every command are one line on stderr and exit status 2, before the work they would
spoil starts: counts of zero, numbers no model or encoder takes, non-finite values, report names that are
paths, and ``train-lora`` settings refused before the model loads (or, for those that depend on it, before
any clip is encoded)."""

from __future__ import annotations

import pytest

import fastdit.dummy.configs
import fastdit.models.loading
from fastdit.cli import main

# argv -> the message the one line carries; "loads" marks the cases that may load the model (the bundled
# one, in a second; bench e2e's on the meta device, with no weights) because the limit they break is the model's
CASES = {
    "fps past any display": (["generate", "--prompt", "x", "--fps", "1000000000000"],
                             "argument --fps: must be a whole number from 1 to 240, got '1000000000000'"),
    "guidance that overflows": (["generate", "--prompt", "x", "--guidance", "1e308"],
                                "--guidance must be from 0 to 100, got 1e+308"),
    "cache threshold nan": (["generate", "--prompt", "x", "--cache", "fbcache", "--cache-option", "threshold=nan"],
                            "cache 'fbcache': threshold must be a finite number, got 'nan'"),
    "compare cache threshold inf": (["compare", "--prompt", "x", "--cache", "fbcache", "--cache-option",
                                     "threshold=1e400"], "cache 'fbcache': threshold must be a finite number"),
    "offload without a GPU": (["generate", "--prompt", "x", "--device", "cpu", "--offload", "model"],
                              "--offload model moves weights between the CPU and a GPU; it needs --device cuda"),
    "offload under context parallelism": (["generate", "--prompt", "x", "--offload", "sequential", "--parallel",
                                           "ring=2"], "--offload and --parallel don't combine"),
    "e2e zero frames": (["bench", "e2e", "--quick", "--frames", "0"],
                        "argument --frames: must be a whole number >= 1, got '0'"),
    "e2e frames past the RoPE table": (["bench", "e2e", "--quick", "--frames", "100001", "loads"],
                                       "frames 100001 is 25001 latent positions, more than the 1024"),
    "e2e name with folders": (["bench", "e2e", "--quick", "--name", "sub/none/x"],
                              "--name: report name must be a file name without a folder, got 'sub/none/x'"),
    "reference zero repeats": (["bench", "reference", "--repeats", "0"],
                               "argument --repeats: must be a whole number >= 1, got '0'"),
    "toy zero steps": (["bench", "toy", "--steps", "0"], "argument --steps: must be a whole number >= 1, got '0'"),
    "calibrate nan target": (["bench", "calibrate", "--targets", "0.1", "nan"],
                             "argument --targets: must be a finite number, got 'nan'"),
    "calibrate negative target": (["bench", "calibrate", "--targets", "-0.1"], "--targets must be >= 0, got -0.1"),
    "lora out is a file": (["train-lora", "--out", "blocker"], "output path 'blocker' is a file; expected a folder"),
    "lora out under a file": (["train-lora", "--out", "blocker/lora"], "'blocker' is not a folder"),
    "lora unknown preset": (["train-lora", "--out", "lora", "--preset", "nope"], "unknown preset 'nope'"),
    "lora negative seed": (["train-lora", "--out", "lora", "--seed", "-1"],
                           "argument --seed: must be a whole number from 0 to 18446744073709551615, got '-1'"),
    "lora scale past the RoPE table": (["train-lora", "--out", "lora", "--scale", "10000", "loads"],
                                       "--scale 10000 (160001 frames): frames 160001 is 40001 latent positions"),
    "lora rank past the layers": (["train-lora", "--out", "lora", "--rank", "100000", "loads"],
                                  "--rank must be at most 192, the narrowest attention projection's width; got 100000"),
}


def _refuse_work(*args, **kwargs):
    raise AssertionError("the argument should have been refused before any model was built or loaded")


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_argument_is_one_line_before_the_work(case, tmp_path, capsys, monkeypatch):
    argv, message = CASES[case]
    if argv[-1] == "loads":
        argv = argv[:-1]
    else:
        monkeypatch.setattr(fastdit.models.loading, "load_pipeline", _refuse_work)
        monkeypatch.setattr(fastdit.dummy.configs, "build_denoiser", _refuse_work)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own checks
        code = exit_info.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # nothing written
