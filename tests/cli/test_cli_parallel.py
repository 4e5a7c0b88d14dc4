"""``fastdit generate --parallel``: under torchrun, rank 0 writes what one process would have written."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import numpy as np


def test_generate_under_torchrun_with_ring_attention_writes_the_single_process_video(fastdit_cli, small, tmp_path,
                                                                                     cli_env):
    common = ["generate", "--prompt", "a red ball", "--method", "radial", *small]
    single = fastdit_cli(*common, "--out", "single.mp4")
    assert single.returncode == 0, single.stderr
    parallel = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "fastdit", *common,
         "--parallel", "ring=2", "--out", "ring.mp4", "--report", "ring.json"],
        cwd=tmp_path, env=cli_env, text=True, capture_output=True, timeout=300)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert parallel.stdout.count("wrote ring.mp4") == 1  # rank 0 reports, once
    a, b = (iio.imread(tmp_path / name).astype(np.int16) for name in ("single.mp4", "ring.mp4"))
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a - b).max() <= 1  # the same frames up to a rounding step of the encoder's input


def test_parallel_spec_and_launch_errors(fastdit_cli):
    bad = fastdit_cli("generate", "--prompt", "x", "--parallel", "tensor=2")
    assert bad.returncode != 0 and "--parallel takes ulysses=N or ring=N" in bad.stderr
    alone = fastdit_cli("generate", "--prompt", "x", "--steps", "1", "--parallel", "ulysses=2")
    assert alone.returncode != 0 and "torchrun --nproc-per-node N" in alone.stderr
