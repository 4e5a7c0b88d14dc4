"""Writing fastdit's files atomically: a failed or interrupted write leaves no partial file under the final name.

The calibration file (this tier) and every tool's videos, images and reports write through here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers pick the right format); on success
    rename it onto ``path``, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named, not created: the writer creates it with the user's usual permissions (mkstemp's are 0600)
    tmp = path.with_name(f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` as the file ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
