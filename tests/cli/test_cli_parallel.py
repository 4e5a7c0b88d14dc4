"""``fastdit generate --parallel``: under torchrun, rank 0 writes what one process would have written; ranks
started with different settings are refused on every rank, before any work."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fastdit.models.loading import sample_dir


def _launch(tmp_path: Path, env: dict[str, str], *ranks: list[str]) -> list[subprocess.CompletedProcess]:
    """Start one ``python -m fastdit`` per argument list as the ranks of one group, as torchrun would but with
    each rank's own command line; returns their results in rank order."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(len(ranks))}
    procs = [subprocess.Popen([sys.executable, "-m", "fastdit", *argv], cwd=tmp_path, text=True,
                              env={**env, **group, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r, argv in enumerate(ranks)]
    outs = [p.communicate(timeout=300) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def _frames(path: Path) -> np.ndarray:
    return iio.imread(path).astype(np.int16)


def test_generate_under_context_parallelism_writes_the_single_process_video(fastdit_cli, small, tmp_path, cli_env):
    common = ["generate", "--prompt", "a red ball", "--method", "radial", *small]
    single = fastdit_cli(*common, "--out", "single.mp4")
    assert single.returncode == 0, single.stderr
    ring = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "fastdit", *common,
         "--parallel", "ring=2", "--out", "ring.mp4", "--report", "ring.json"],
        cwd=tmp_path, env=cli_env, text=True, capture_output=True, timeout=300)
    assert ring.returncode == 0, ring.stderr[-3000:]
    assert ring.stdout.count("wrote ring.mp4") == 1  # rank 0 reports, once
    # Ulysses over the bundled model's 3 heads on 2 ranks (diffusers' ulysses_anything pads them), the model
    # named "tiny" on one rank and by a symlink on the other: the same model, so the ranks agree
    (tmp_path / "link").symlink_to(sample_dir())
    ulysses = _launch(tmp_path, cli_env, *([*common, "--model", model, "--parallel", "ulysses=2", "--out", "u.mp4"]
                                           for model in ("tiny", "link")))
    assert [r.returncode for r in ulysses] == [0, 0], ulysses[0].stderr[-3000:] + ulysses[1].stderr[-3000:]
    assert "wrote u.mp4" in ulysses[0].stdout and not ulysses[1].stdout
    a = _frames(tmp_path / "single.mp4")
    assert a.shape == (5, 64, 64, 3)
    for name in ("ring.mp4", "u.mp4"):
        assert np.abs(a - _frames(tmp_path / name)).max() <= 1  # up to a rounding step of the encoder's input


def test_ranks_with_different_settings_are_refused_on_every_rank_before_any_work(tmp_path, small, cli_env):
    common = ["generate", "--prompt", "a red ball", *small, "--parallel", "ring=2", "--out", "x.mp4"]
    start = time.monotonic()
    ranks = _launch(tmp_path, cli_env, [*common, "--seed", "0", "--method", "pyramid"],
                    [*common, "--seed", "1", "--method", "pyramid", "--option", "thresholds=(0.3,0.5,0.6,0.8)"])
    assert time.monotonic() - start < 120  # a mismatch used to hang on a collective for many minutes
    for r in ranks:
        assert r.returncode == 2, r.stderr[-3000:]
        line = r.stderr.strip().splitlines()[-1]
        assert "the ranks were started with different settings" in line and "--seed (rank 0: 0, rank 1: 1)" in line
        assert "sparse settings" in line and "--model" not in line
    assert not (tmp_path / "x.mp4").exists()
    bench = ["bench", "e2e", "--quick", "--parallel", "ulysses=2", "--out", "bench"]
    ranks = _launch(tmp_path, cli_env, [*bench, "--repeats", "1"], [*bench, "--repeats", "2"])
    for r in ranks:
        assert r.returncode == 2 and "--repeats (rank 0: 1, rank 1: 2)" in r.stderr, r.stderr[-3000:]


def test_what_context_parallelism_does_not_reproduce_is_refused_before_the_model_loads(fastdit_cli, tmp_path):
    from fastdit.runtime.calibration_file import Calibration, HeadChoice, LayerChoice

    layers = (LayerChoice("transformer", 0, "radial", (HeadChoice({"decay_factor": 0.05}),)),)
    Calibration(model=None, fingerprint="0", grid=(2, 8, 8), block_size=16, target=0.1, metric="rel_l2", schedule=2,
                dense_steps=0, layers=layers, expected_density=0.5).save(tmp_path / "cal.json")
    for flags, message in ((["--cache", "fbcache", "--parallel", "ring=2"], "--cache fbcache doesn't run under"),
                           (["--calibration", "cal.json", "--parallel", "ring=2"], "use --parallel ulysses=2")):
        start = time.monotonic()
        result = fastdit_cli("generate", "--prompt", "x", *flags)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and time.monotonic() - start < 60


def test_parallel_spec_and_launch_errors(fastdit_cli):
    bad = fastdit_cli("generate", "--prompt", "x", "--parallel", "tensor=2")
    assert bad.returncode != 0 and "--parallel takes ulysses=N or ring=N" in bad.stderr
    alone = fastdit_cli("generate", "--prompt", "x", "--steps", "1", "--parallel", "ulysses=2")
    assert alone.returncode != 0 and "torchrun --nproc-per-node N" in alone.stderr
