"""Bad input: one clear line on stderr, exit status 2, and no output file (not even a partial one).

The cases the issue names run as subprocesses, exactly as a user meets them (all at once, since each costs
a Python and torch start-up); further argument checks run in-process through the same ``main``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastdit.cli import main

SUBPROCESS_CASES = {
    "unknown model": (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "weights missing offline": (["--model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"], "hf download"),
    "unknown option": (["--method", "radial", "--option", "bogus=1"], "unknown option(s) 'bogus'"),
    "frames not 4k+1": (["--frames", "10"], "frames = 4k+1"),
    "output path not writable": (["--out", "blocker/out.mp4"], "is not a folder"),
    "zero steps": (["--steps", "0"], "--steps must be > 0"),
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
    "negative dense steps": (["--dense-steps", "-1"], "--dense-steps must be >= 0"),
    "block size not a power of two": (["--block-size", "24"], "power of two"),
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
