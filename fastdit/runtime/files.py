"""Writing fastdit's files atomically: a failed or interrupted write leaves no partial file under the final name.

The calibration file (this tier) and every tool's videos, images and reports write through here. A write that
fails (a full disk, a quota, a file-size limit, a writer that reports an error) raises :class:`WriteError`,
which names the file, so a command line can report it in one line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

__all__ = ["WriteError", "atomic_path", "write_text", "usual_permissions"]


class WriteError(OSError):
    """A file could not be written (nothing was left under its name); ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"can't write {str(path)!r}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers pick the right format); on success
    rename it onto ``path``, on failure or interruption delete it.

    Raises:
        WriteError: the writer or the rename failed with an ``OSError`` (a full disk, for one).
    """
    path = Path(path)
    # named, not created: the writer creates it with the user's usual permissions (mkstemp's are 0600)
    tmp = path.with_name(f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err.strerror or str(err)) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` as the file ``path``, written atomically.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def usual_permissions(*paths: str | os.PathLike) -> None:
    """Give the files ``paths`` the permissions a file the user creates gets: 0666 less the umask. safetensors
    writes through a private temporary file and leaves its files 0600, so weights meant to be shared would be
    unreadable to anyone else."""
    mask = os.umask(0)  # the only way to read it: set, then put back at once
    os.umask(mask)
    for path in paths:
        Path(path).chmod(0o666 & ~mask)
