"""``fastdit bench e2e --model`` for every listed checkpoint: its ``--quick`` model (2 layers, 2 heads) runs one
forward dense and one sparse on inputs laid out as its pipeline lays them out, and fastdit reads the latent grid
and skips blocks; the supported families without a config are listed with the reason."""

from __future__ import annotations

import json

import pytest

from fastdit.cli import main
from fastdit.dummy.configs import MODEL_CONFIGS, NOT_BENCHED
from fastdit.patching.families import detect_family, families
from fastdit.patching.families.registry import UNSUPPORTED

# the smallest grids on which a method skips blocks: images 32 x 32 tokens (8 of fastdit's 128-token blocks) under
# GRAT's criss-cross groups; videos 5 latent frames of 16 x 16 tokens (10 blocks) under pyramid attention (radial
# and GRAT keep this few frames whole)
IMAGE, VIDEO = (1, 32, 32), (5, 16, 16)
# SDXL's UNet attends from its second level on, at half the latent's size
GRIDS = {"stabilityai/stable-diffusion-xl-base-1.0": (1, 64, 64)}
# these take longer than 20 s on two shared CPU cores: the UNets keep their full channel widths
SLOW = {"stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0"}


@pytest.mark.parametrize("model_id", [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW else [])
                                      for m in MODEL_CONFIGS])
def test_quick_model_runs_dense_and_sparse(tmp_path, one_thread, model_id):
    spec = MODEL_CONFIGS[model_id]
    grid, method = (GRIDS.get(model_id, IMAGE), "grat") if spec.image else (VIDEO, "pyramid")
    frames = (grid[0] - 1) * spec.size.t_compress + 1
    size = [str(n * spec.size.s_compress) for n in grid[1:]]
    code = main(["bench", "e2e", "--model", model_id, "--quick", "--frames", str(frames), "--height", size[0],
                 "--width", size[1], "--repeats", "1", "--warmup", "0", "--methods", method, "--out", str(tmp_path),
                 "--name", "e2e"])
    assert code == 0
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert data["grid"] == list(grid) and data["forwards_per_step"] == spec.cfg
    assert [r["method"] for r in data["rows"]] == ["dense", "dense (fastdit)", method]
    sparse = data["rows"][-1]
    assert 0 < sparse["density"] < 1, sparse  # fastdit read the latent grid and skipped blocks
    assert set(sparse["dense_reasons"]) <= {"grid too small", "full layout"}, sparse  # a UNet's smaller levels
    depth = {k: v for k, v in data["config"].items() if "layers" in k or "heads" in k}
    assert depth and set(depth.values()) <= {1, 2}, depth


def test_every_supported_family_is_listed_or_said_why_not(capsys):
    import torch

    from fastdit.dummy.configs import build_denoiser

    benched = {detect_family(build_denoiser(m, device="meta", dtype=torch.bfloat16)).name for m in MODEL_CONFIGS}
    assert benched | set(NOT_BENCHED) == set(families()) and not benched & set(NOT_BENCHED)
    assert main(["bench", "e2e", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in MODEL_CONFIGS) and all(f"  {f}: " in out for f in NOT_BENCHED)
    assert "FLUX.1-dev  (FluxTransformer2DModel; 1024x1024; 1 forward per step)" in out
    assert "Wan2.1-T2V-1.3B-Diffusers  (WanTransformer3DModel; 832x480, 81 frames; 2 forwards per step)" in out
    assert not set(UNSUPPORTED) & {s.denoiser for s in MODEL_CONFIGS.values()}


def test_unknown_model_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own check, before anything is built
        main(["bench", "e2e", "--model", "nobody/nothing"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nobody/nothing" in err


def test_an_image_model_refuses_frames(capsys):
    assert main(["bench", "e2e", "--model", "black-forest-labs/FLUX.1-dev", "--quick", "--frames", "5"]) == 2
    assert "makes images: --frames must be 1" in capsys.readouterr().err
