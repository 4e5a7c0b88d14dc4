"""Image models write a png, and reject video-only flags (in-process: the CLI code path, minus start-up)."""

from __future__ import annotations

import pytest
from PIL import Image

from fastdit.cli import main


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    from fastdit.dummy.image import dummy_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    dummy_sd_pipeline().save_pretrained(folder)
    return folder


def test_generate_writes_a_png(sd_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "--model", str(sd_folder), "--prompt", "a red ball", "--height", "64", "--width", "64",
                 "--steps", "2", "--block-size", "16"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out.png").size == (64, 64)
    assert "wrote out.png (64x64)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--frames", "9"], "makes images; --frames doesn't apply"),
    (["--out", "x.mp4"], "makes images; --out must end in .png"),
])
def test_image_model_rejects_video_flags(sd_folder, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", str(sd_folder), "--prompt", "x", *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
