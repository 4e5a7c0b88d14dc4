"""Image-to-video from the command line: ``--image`` (and ``--last-image``) reach an I2V pipeline in
``generate`` and ``compare``; a pipeline that needs an image and gets none, or gets one it has no use for, is
one line before anything runs, and so is a missing ``ftfy`` (which diffusers' Wan I2V calls unguarded).

The I2V model is the bundled sample's components with a transformer that takes Wan 2.1 I2V's 36 input
channels (16 latent + 4 mask + 16 condition), random weights: the call path is the real pipeline's.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import types

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import fastdit.models.loading
from fastdit.cli import main
from fastdit.models.loading import load_pipeline, resolve_model

SMALL = ["--frames", "5", "--height", "64", "--width", "64", "--steps", "2", "--block-size", "16", "--dense-steps", "0"]


@pytest.fixture(scope="module")
def i2v_folder(tmp_path_factory):
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    source = resolve_model("sample")
    base = load_pipeline(source)
    config = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**{**config, "in_channels": 36})
    folder = tmp_path_factory.mktemp("i2v") / "model"
    WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                            scheduler=base.scheduler, transformer=transformer).save_pretrained(folder)
    shutil.copy(f"{source.location}/fastdit.json", folder / "fastdit.json")
    return folder


@pytest.fixture
def pictures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("first.png", "last.png"):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(name)
    return tmp_path


@pytest.fixture
def ftfy(monkeypatch):
    """ftfy's prompt cleaning as the identity, where ftfy is not installed (what it changes, our prompts lack)."""
    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_i2v

    if importlib.util.find_spec("ftfy") is None:
        monkeypatch.setattr(wan_i2v, "ftfy", types.SimpleNamespace(fix_text=lambda text: text), raising=False)


def test_generate_and_compare_image_to_video(i2v_folder, pictures, ftfy, capsys):
    assert main(["generate", "--model", str(i2v_folder), "--prompt", "a red ball", "--image", "first.png",
                 "--last-image", "last.png", "--method", "radial", *SMALL, "--out", "i2v.mp4",
                 "--report", "i2v.json"]) == 0, capsys.readouterr().err
    assert iio.imread(pictures / "i2v.mp4").shape == (5, 64, 64, 3)
    report = json.loads((pictures / "i2v.json").read_text())
    assert report["call"]["image"] == "first.png" and report["call"]["last_image"] == "last.png"
    assert report["attention"]["sparse_fraction"] > 0  # the method ran on the I2V model

    assert main(["compare", "--model", str(i2v_folder), "--prompt", "a red ball", "--image", "first.png",
                 "--no-warmup", *SMALL, "--out", "cmp"]) == 0, capsys.readouterr().err
    settings = json.loads((pictures / "cmp" / "compare.json").read_text())["settings"]
    assert settings["call"]["image"] == "first.png"


def _one_line(argv: list[str], capsys) -> str:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def test_image_inputs_are_checked_before_the_run(i2v_folder, pictures, ftfy, capsys, monkeypatch):
    line = _one_line(["generate", "--model", str(i2v_folder), "--prompt", "x", *SMALL], capsys)
    assert line.endswith("WanImageToVideoPipeline makes its output from an input image: give --image PATH")
    line = _one_line(["generate", "--prompt", "x", "--last-image", "last.png", *SMALL], capsys)
    assert line.endswith("WanPipeline takes no last image; --last-image doesn't apply")

    def refuse(*args, **kwargs):
        raise AssertionError("a bad image file should be refused before the model loads")

    monkeypatch.setattr(fastdit.models.loading, "load_pipeline", refuse)
    line = _one_line(["generate", "--prompt", "x", "--image", "missing.png"], capsys)
    assert line.endswith("--image 'missing.png': No such file or directory")
    (pictures / "notes.png").write_text("not a picture")
    line = _one_line(["compare", "--prompt", "x", "--image", "notes.png"], capsys)
    assert line.endswith("--image 'notes.png': not an image file PIL can read")
    assert sorted(p.name for p in pictures.iterdir()) == ["first.png", "last.png", "notes.png"]


@pytest.mark.skipif(importlib.util.find_spec("ftfy") is not None, reason="ftfy is installed")
def test_missing_ftfy_is_one_line_naming_it(i2v_folder, pictures, capsys):
    line = _one_line(["generate", "--model", str(i2v_folder), "--prompt", "x", "--image", "first.png", *SMALL,
                      "--out", "x.mp4"], capsys)
    assert line.endswith("WanImageToVideoPipeline cleans prompts with the ftfy package, which is not installed: "
                         "pip install ftfy")
    assert not (pictures / "x.mp4").exists()
