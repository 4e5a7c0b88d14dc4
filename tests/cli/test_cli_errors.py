"""Bad input: one clear line on stderr, exit status 2, and no output file (not even a partial one).

The cases the issue names run as subprocesses, exactly as a user meets them (all at once, since each costs
a Python and torch start-up); further argument checks run in-process through the same ``main``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fastdit.models.limits
from fastdit.cli import main
from fastdit.models.loading import sample_dir

SUBPROCESS_CASES = {
    "unknown model": (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "weights missing offline": (["--model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"], "hf download"),
    "unknown option": (["--method", "radial", "--option", "bogus=1"], "unknown option(s) 'bogus'"),
    "frames not 4k+1": (["--frames", "10"], "frames = 4k+1"),
    "output path not writable": (["--out", "blocker/out.mp4"], "is not a folder"),
    "zero steps": (["--steps", "0"], "--steps must be > 0"),
    # sizes past the model's own limits, refused before anything is generated (issue 17)
    "frames past the RoPE table": (["--steps", "1", "--frames", "100001", "--height", "64", "--width", "64"],
                                   "frames 100001 is 25001 latent positions, more than the 1024"),
    "height past the RoPE table": (["--height", "16384"], "height 16384 is 2048 latent positions"),
    "steps past the scheduler": (["--steps", "100000000"], "more than the scheduler's 1000 training timesteps"),
}

IN_PROCESS_CASES = {
    "unknown method": (["--method", "nope"], "invalid choice: 'nope'"),
    "height not a multiple of 16": (["--height", "100"], "divisible by 16"),
    "width not a multiple of 16": (["--width", "72"], "got width 72, try 64 or 80"),
    "folder that is not a pipeline": (["--model", "."], "no model_index.json"),
    "option without a value": (["--method", "radial", "--option", "decay_factor"], "KEY=VALUE"),
    "bad option value": (["--method", "radial", "--option", "decay_factor=-1"], "decay_factor must be"),
    "negative steps": (["--steps", "-3"], "--steps must be > 0"),
    "steps not a number": (["--steps", "many"], "invalid int value"),
    "unsupported output format": (["--out", "out.avi"], "must end in .mp4 or .png"),
    "report not json": (["--report", "run.txt"], "must end in .json"),
    "unknown preset": (["--preset", "nope"], "unknown preset 'nope'"),
    "negative dense steps": (["--dense-steps", "-1"], "--dense-steps: must be a step count >= 0"),
    "dense share above one": (["--dense-steps", "1.5"], "or a share of the steps in [0, 1], got '1.5'"),
    "block size not a power of two": (["--block-size", "24"], "power of two"),
    "per-token blocks": (["--block-size", "8"], "--block-size must be a power of two from 16 to 1024, got 8"),
    "infinite guidance": (["--guidance", "inf"], "argument --guidance: must be a finite number, got 'inf'"),
    "guidance not a number": (["--guidance", "nan"], "must be a finite number, got 'nan'"),
    "seed past 64 bits": (["--seed", str(2**70)], "--seed must be a whole number from 0 to 2**64 - 1"),
    "infinite option": (["--method", "radial", "--option", "decay_factor=1e400"], "decay_factor must be a finite"),
    "unknown cache": (["--cache", "nope"], "invalid choice: 'nope'"),
    "unknown cache option": (["--cache", "fbcache", "--cache-option", "thresh=1"],
                             "unknown option(s) 'thresh' for cache 'fbcache'; allowed: threshold"),
    "cache option without a cache": (["--cache-option", "threshold=1"], "--cache-option needs --cache KIND"),
    "magcache without ratios": (["--cache", "magcache"], "cache 'magcache': `mag_ratios` must be provided"),
}


def _scratch(folder):
    folder.mkdir(exist_ok=True)
    (folder / "blocker").write_text("a file where a folder should be")
    return folder, set(folder.iterdir())


def _check(code: int, stdout: str, stderr: str, message: str, scratch) -> None:
    folder, before = scratch
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert message in lines[0]
    assert stdout == ""
    assert set(folder.iterdir()) == before  # no out.mp4, no temporary file


@pytest.fixture(scope="module")
def rejected(tmp_path_factory, cli_env):
    """Every subprocess case at once: start-up (Python, torch) dominates, so they overlap on the cores."""
    root = tmp_path_factory.mktemp("rejected")
    running = {}
    for i, (case, (args, _)) in enumerate(SUBPROCESS_CASES.items()):
        scratch = _scratch(root / str(i))
        proc = subprocess.Popen([sys.executable, "-m", "fastdit", "generate", "--prompt", "a red ball", *args],
                                cwd=scratch[0], env=cli_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        running[case] = (proc, scratch)
    results = {}
    for case, (proc, scratch) in running.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[case] = (proc.returncode, stdout, stderr, scratch)
    return results


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_generate_rejects(rejected, case):
    code, stdout, stderr, scratch = rejected[case]
    _check(code, stdout, stderr, SUBPROCESS_CASES[case][1], scratch)


@pytest.mark.parametrize("case", list(IN_PROCESS_CASES))
def test_generate_rejects_in_process(tmp_path, case, capsys, monkeypatch):
    args, message = IN_PROCESS_CASES[case]
    scratch = _scratch(tmp_path)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["generate", "--prompt", "a red ball", *args])
    except SystemExit as exit_info:  # argparse's own checks
        code = exit_info.code
    captured = capsys.readouterr()
    _check(code, captured.out, captured.err, message, scratch)


def test_compare_rejects_output_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    assert main(["compare", "--prompt", "x", "--out", "taken"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fastdit compare: error: output path 'taken' is a file; expected a folder"]


def test_compare_needs_method_qualified_options_for_several_methods(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["compare", "--prompt", "x", "--methods", "radial", "grat", "--option", "mode=surround"])
    assert code == 2
    assert "radial.mode=" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _model_folder(root, model_index, settings=None):
    """A pipeline folder with the two files fastdit reads before loading, and no weights at all."""
    folder = root / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(model_index))
    (folder / "fastdit.json").write_text(json.dumps(settings or {}))
    return folder


def _sample_index() -> dict:
    return json.loads((sample_dir() / "model_index.json").read_text())


@pytest.mark.parametrize("model_index,settings,message", [
    ({}, None, 'names no pipeline class ("_class_name")'),
    ({"_class_name": "NoSuchPipeline"}, None, "names the pipeline class 'NoSuchPipeline', which diffusers"),
    (None, {"call": {"num_frames": "abc"}}, '"call" num_frames must be a whole number > 0, got \'abc\''),
    (None, {"call": {"guidance_scale": float("inf")}}, '"call" guidance_scale must be a finite number >= 0'),
    (None, {"call": {"bogus": 1}}, "'bogus' in \"call\" is not an argument of WanPipeline.__call__"),
    (None, {"fps": 0}, "fps must be a whole number > 0, got 0"),
    # issue 39: diffusers would import os.system; a text length the tokenizer aborts on; a dict where a run reads
    # the frames; a thousand videos of which the run writes one
    ({**_sample_index(), "vae": ["os", "system"]}, None,
     "component 'vae' is ['os', 'system']; fastdit loads components from diffusers, transformers, fastdit only"),
    (None, {"call": {"max_sequence_length": 10**9}}, "max_sequence_length 1000000000 is more than the 512 text"),
    (None, {"call": {"return_dict": True}}, "'return_dict' can't be in \"call\": fastdit sets it on every call"),
    (None, {"call": {"num_videos_per_prompt": 1000}}, "num_videos_per_prompt must be 1 (fastdit writes one video"),
])
def test_a_malformed_model_folder_is_one_line_before_loading(tmp_path, capsys, monkeypatch, model_index, settings,
                                                             message):
    folder = _model_folder(tmp_path, _sample_index() if model_index is None else model_index, settings)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--prompt", "x", "--model", str(folder)]) == 2  # no weights: it never loads them
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_a_size_the_machine_cant_hold_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fastdit.models.limits, "available_bytes", lambda device: 2**30)
    code = main(["generate", "--prompt", "x", "--frames", "401", "--height", "1024", "--width", "1024"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "401 frame(s) of 1024x1024 need about" in lines[0] and "1.0 GiB free" in lines[0]
    assert "--skip-memory-check" in lines[0] and list(tmp_path.iterdir()) == []


def test_skip_memory_check_runs_what_the_estimate_refuses(tmp_path, capsys, monkeypatch, small):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fastdit.models.limits, "available_bytes", lambda device: 1)
    assert main(["generate", "--prompt", "x", *small, "--out", "a.mp4"]) == 2
    assert "need about" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", *small, "--out", "a.mp4", "--skip-memory-check"]) == 0
    assert (tmp_path / "a.mp4").is_file()


def test_bench_checks_its_report_folder_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.mp4").write_text("a file where the report folder should be")
    assert main(["bench", "reference", "--out", "x.mp4"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fastdit bench: error: --out: output path 'x.mp4' is a file; expected a folder"]
