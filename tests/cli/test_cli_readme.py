"""The README's commands, so it can't drift from the command line: every ``fastdit`` command it shows (in code
blocks and inline, ``torchrun`` launches included) parses with today's flags, every ``make`` target exists,
and the ones that run on the bundled sample run as written, at a tiny size appended where the command allows
(a flag given twice takes the last value). Commands on hub models need their weights and a GPU: marked
``gpu``, they run only where both are present. ``...`` in a command elides flags: it is not checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
PROGRAMS = ("fastdit", "torchrun", "make", "pip")
TINY = ["--frames", "5", "--height", "64", "--width", "64"]
# subcommand -> what is appended to run it in seconds on the bundled sample
RUNNABLE = {"info": [], "generate": [*TINY, "--steps", "2"], "compare": [*TINY, "--steps", "2"],
            "calibrate": [*TINY, "--steps", "2"], "bench e2e": [*TINY, "--repeats", "1", "--warmup", "0"]}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Command:
    text: str  # as the README writes it
    env: dict[str, str]  # VAR=value prefixes
    argv: list[str]  # without the prefixes

    @property
    def fastdit_args(self) -> list[str]:
        """The arguments after ``fastdit`` (or after ``torchrun ... -m fastdit``)."""
        if self.argv[0] == "fastdit":
            return self.argv[1:]
        return self.argv[self.argv.index("fastdit") + 1:]

    @property
    def subcommand(self) -> str:
        args = self.fastdit_args
        return " ".join(args[:2]) if args[:1] == ["bench"] and len(args) > 1 else (args[0] if args else "")

    @property
    def gpu_only(self) -> bool:
        """A hub model's weights, or ``bench e2e`` at a real model's size (without ``--quick``)."""
        args = self.fastdit_args
        hub = any(a == "--model" and HUB_ID.match(b) for a, b in zip(args, args[1:]))
        return self.subcommand == "bench e2e" and "--quick" not in args or hub and self.subcommand != "bench e2e"


def _split(text: str) -> Command | None:
    """A README command as a :class:`Command` (``None`` when it is not one of :data:`PROGRAMS`)."""
    try:
        words = shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError:
        return None
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words or words[0] not in PROGRAMS or words == ["fastdit"] or any(w.startswith("[") for w in words):
        return None  # a name or a usage line (``fastdit app [--host]``), not a command
    return Command(" ".join(text.split()), env, words)


def readme_commands() -> list[Command]:
    """Every command of the README: the lines of its non-Python code blocks (with ``\\`` continuations), and
    its inline code that starts with a program (an inline command may wrap over lines)."""
    found: list[Command] = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S):
        if lang == "python":
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            if (command := _split(line)) is not None:
                found.append(command)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        if (command := _split(span)) is not None:
            found.append(command)
    return list({c.text: c for c in found}.values())


COMMANDS = readme_commands()
FASTDIT = [c for c in COMMANDS if "fastdit" in c.argv and "..." not in c.argv]


def _runnable(command: Command) -> bool:
    return command.subcommand in RUNNABLE and not command.gpu_only


def test_the_readme_shows_the_commands_this_test_checks():
    texts = [c.text for c in COMMANDS]
    assert any("--parallel ulysses=2" in t and t.startswith("torchrun") for t in texts)
    assert any(t.startswith("pip install") for t in texts) and "make install-check" in texts
    assert sum(_runnable(c) for c in FASTDIT) >= 6


@pytest.mark.parametrize("command", FASTDIT, ids=[c.text[:80] for c in FASTDIT])
def test_every_fastdit_command_of_the_readme_parses(command):
    from fastdit.cli import build_parser

    try:
        build_parser().parse_args(command.fastdit_args)
    except SystemExit as exit:
        pytest.fail(f"{command.text!r} no longer parses (exit {exit.code})")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv[0] == "make"], ids=lambda c: c.text)
def test_every_make_target_of_the_readme_exists(command):
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert [a for a in command.argv[1:] if "=" not in a and a not in targets] == [], command.text


def _run(command: Command, cwd: Path, env: dict[str, str], extra: list[str]) -> subprocess.CompletedProcess:
    argv = [*command.argv, *extra]
    if argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    else:
        argv = [sys.executable, "-m", "fastdit", *command.fastdit_args, *extra]
    return subprocess.run(argv, cwd=cwd, env={**env, **command.env}, text=True, capture_output=True, timeout=600)


@pytest.mark.slow
def test_the_readme_commands_on_the_bundled_sample_run(tmp_path, cli_env):
    """In README order in one folder, so a command runs on what an earlier one wrote (a calibration file)."""
    env = {**cli_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), cli_env.get("PYTHONPATH")]))}
    ran = []
    for command in (c for c in FASTDIT if _runnable(c)):
        result = _run(command, tmp_path, env, RUNNABLE[command.subcommand])
        assert result.returncode == 0, f"{command.text}\n{result.stderr[-3000:]}"
        ran.append(command.subcommand)
    assert {"generate", "compare", "calibrate", "bench e2e"} <= set(ran)


def _hub_ready(command: Command) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    from huggingface_hub import try_to_load_from_cache

    args = command.fastdit_args
    ids = [b for a, b in zip(args, args[1:]) if a == "--model" and command.subcommand != "bench e2e"]
    return all(isinstance(try_to_load_from_cache(i, "model_index.json"), str) for i in ids)


GPU = [c for c in FASTDIT if c.gpu_only and c.subcommand in RUNNABLE]


@pytest.mark.gpu
@pytest.mark.parametrize("command", GPU, ids=[c.text[:80] for c in GPU])
def test_the_readme_commands_on_hub_models_run_on_a_gpu(command, tmp_path, cli_env):
    if not _hub_ready(command):
        pytest.skip("needs a CUDA GPU and the model's weights in the Hugging Face cache (nothing is downloaded)")
    result = _run(command, tmp_path, cli_env, ["--steps", "2"] if command.subcommand != "bench e2e" else [])
    assert result.returncode == 0, result.stderr[-3000:]
