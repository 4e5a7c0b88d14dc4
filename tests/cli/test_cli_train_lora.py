"""``fastdit train-lora``: a LoRA trained under sparse attention on longer clips, saved in diffusers' format,
that ``--lora`` loads back and that changes the video."""

from __future__ import annotations

import json
import os
import stat

import imageio.v3 as iio
import numpy as np


def test_train_lora_saves_a_lora_that_generate_loads(fastdit_cli, small, tmp_path):
    result = fastdit_cli("train-lora", "--scale", "2", "--steps", "2", "--clips", "2", "--batch", "1", "--rank", "4",
                         "--lr", "0.05", "--out", "lora")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "lora" / "train_lora.json").read_text())
    assert summary["frames"] == 33 and summary["settings"]["method"] == "radial"  # 2x the model's 17 frames
    assert len(summary["losses"]) == 2 and summary["seconds_per_step"] > 0
    weights = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask  # shareable, as any file the user writes

    videos = {}
    for name, extra in (("base", []), ("lora", ["--lora", "lora"])):
        run = fastdit_cli("generate", "--prompt", "a red ball", *small, *extra, "--out", f"{name}.mp4")
        assert run.returncode == 0, run.stderr
        videos[name] = iio.imread(tmp_path / f"{name}.mp4")
    assert not np.array_equal(videos["base"], videos["lora"])


def test_train_lora_and_lora_errors_are_one_line(fastdit_cli):
    result = fastdit_cli("train-lora", "--steps", "0", "--out", "lora")
    assert result.returncode == 2 and result.stderr.strip() == "fastdit train-lora: error: steps must be >= 1, got 0"
    result = fastdit_cli("generate", "--prompt", "a ball", "--lora", "missing", "--out", "x.mp4")
    assert result.returncode == 2 and "--lora: 'missing' does not exist" in result.stderr
