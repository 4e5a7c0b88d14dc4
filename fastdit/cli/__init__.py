"""The ``fastdit`` command line: ``info``, ``generate``, ``compare``, ``calibrate``, ``bench``, ``app``,
``train-lora``.

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``, named in :data:`COMMANDS`:
most live in this package; the web demo's (``fastdit.app.command``) and the benchmark suites
(``fastdit.bench``, collected by ``bench.py``) live with what they run, above this package, and use its helpers.
A user mistake raises :class:`CLIError`, which prints one line and exits with status 2, as does an output that
can't be written (a full disk). Nothing heavy is imported before :func:`main` runs (the ``fastdit`` package
is lazy), so a Ctrl-C at any point is handled here; SIGTERM is handled as a Ctrl-C, so either one removes the
temporary file of an output being written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading
import warnings
from typing import Iterator

__all__ = ["main", "CLIError"]

# command -> (module, help); commands whose module is missing from this install are not offered
COMMANDS = {
    "info": ("fastdit.cli.info", "methods, presets, backends and devices this install can use"),
    "generate": ("fastdit.cli.generate", "generate a video (or image) with sparse attention"),
    "compare": ("fastdit.cli.compare", "the same prompt and seed dense and sparse: speed and quality side by side"),
    "calibrate": ("fastdit.cli.calibrate",
                  "tune sparsity per layer and head to a quality target; writes a calibration file"),
    "bench": ("fastdit.cli.bench", "benchmarks: kernels, fidelity, end to end"),
    "app": ("fastdit.app.command", "start the web demo (Gradio)"),
    "train-lora": ("fastdit.cli.train_lora",
                   "fine-tune a LoRA of a toy-world model for longer videos under sparse attention"),
}


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that cleanup (``finally``) runs, as it does for a Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# a write that failed for want of space (ENOSPC, a quota, a file-size limit): the user's to fix, not a bug
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` while the command runs (signals can be set in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (a bad flag or value) are one line on stderr and exit status 2, like every user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from fastdit import __version__

    parser = _Parser(prog="fastdit", description="Training-free sparse attention for diffusers.")
    parser.add_argument("--version", action="version", version=f"fastdit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, cmd in add_module_parsers(sub, COMMANDS):
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def add_module_parsers(sub, table: dict[str, tuple[str, str]]):
    """Yield ``(module, parser)`` for each command of ``table`` (name -> (module, help)) this install has.

    A module missing from the install is skipped; an import error inside a present module is raised.
    """
    for name, (module_name, help_text) in table.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        yield module, sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, above any progress bar: Python's default adds the file and the source
    line that warned, which a user can do nothing with, and writes them into a running tqdm bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error or a write that failed (a full disk) is one line and status 2, a Ctrl-C
    (even while torch is still being imported, which building the parser does) is one line and status 130,
    SIGTERM the same with status 143; warnings are one line each."""
    with warnings.catch_warnings():  # restores the caller's warning display (main also runs in-process)
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    command = "fastdit"
    try:
        with _sigterm_interrupts():
            parser = build_parser()
            args = parser.parse_args(argv)
            if not hasattr(args, "_run"):
                parser.print_help()
                return 0
            command = f"fastdit {args.command}"
            return int(args._run(args) or 0)
    except CLIError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        from fastdit.runtime.files import WriteError  # here: imported already if one was raised

        if isinstance(err, WriteError):
            message = str(err)
        elif err.errno in _NO_SPACE:
            message = f"can't write {str(err.filename)!r}: {err.strerror}" if err.filename else err.strerror
        else:
            raise
        print(f"{command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"{command}: interrupted", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
