"""Several prompts in one run: ``--prompt-file`` (or ``--prompt`` repeated) makes one output per prompt, with
the model loaded once; a file with no prompt, or none at all, is one line before the model loads."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest

import fastdit.models.loading
from fastdit.cli import main

PROMPTS = "# shapes\na red ball moving left\n\na blue square moving right\n"


def test_generate_and_compare_one_output_per_prompt(tmp_path, monkeypatch, capsys, small):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    assert main(["generate", "--prompt-file", "prompts.txt", *small, "--out", "v.mp4", "--report", "r.json"]) == 0
    assert {p.name for p in tmp_path.glob("v-*.mp4")} == {"v-1.mp4", "v-2.mp4"}
    assert iio.imread(tmp_path / "v-2.mp4").shape == (5, 64, 64, 3)
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [(r["call"]["prompt"], r["output"]) for r in runs] == [("a red ball moving left", "v-1.mp4"),
                                                                  ("a blue square moving right", "v-2.mp4")]
    assert "[2/2] a blue square moving right" in capsys.readouterr().out

    assert main(["compare", "--prompt", "a red ball", "--prompt", "a blue square", "--no-warmup", *small,
                 "--out", "cmp"]) == 0
    prompts = [json.loads((tmp_path / "cmp" / n / "compare.json").read_text())["settings"]["call"]["prompt"]
               for n in ("1", "2")]
    assert prompts == ["a red ball", "a blue square"]


@pytest.mark.parametrize("content, message", [
    (None, "--prompt-file 'prompts.txt': No such file or directory"),
    ("# only a comment\n\n", "--prompt-file 'prompts.txt' holds no prompt (one per line)"),
    (b"\xff\xfe bad", "--prompt-file 'prompts.txt': not UTF-8 text"),
])
def test_a_bad_prompt_file_is_one_line_before_loading(tmp_path, monkeypatch, capsys, content, message):
    def refuse(*args, **kwargs):
        raise AssertionError("a bad prompt file should be refused before the model loads")

    monkeypatch.setattr(fastdit.models.loading, "load_pipeline", refuse)
    monkeypatch.chdir(tmp_path)
    if content is not None:
        path = tmp_path / "prompts.txt"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert main(["generate", "--prompt-file", "prompts.txt"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"fastdit generate: error: {message}"]


def test_prompt_and_prompt_file_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--prompt-file", "p.txt"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
