"""Benchmark reports: one JSON file (the numbers, plus the machine and versions) and one markdown file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from fastdit.runtime.files import write_text


def environment() -> dict[str, Any]:
    """Machine and versions, so every number in a report can be traced to what produced it."""
    import torch

    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return env


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                   floatfmt: str = ".3g") -> str:
    """A GitHub markdown table of ``rows`` (dicts), in ``columns`` order."""
    if not rows:
        return "_no rows_\n"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def check_report_name(name: str) -> str:
    """``name`` if it can name the report files inside the output folder, else a ``ValueError``: a path
    (``sub/x``) would write elsewhere, or fail after a benchmark's minutes of work when its folder is missing.

    Args:
        name: the report file name without extension.

    Returns:
        ``name`` unchanged.
    """
    separators = {os.sep, os.altsep or os.sep, "/"}
    if not name or name in (".", "..") or any(s in name for s in separators) or "\0" in name:
        raise ValueError(f"report name must be a file name without a folder, got {name!r} (use --out for the folder)")
    return name


def write_report(out_dir: str | Path, name: str, title: str, data: dict[str, Any], markdown_body: str,
                 command: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir``; the markdown names the command and machine.
    Each is written atomically: a full disk leaves the previous report, never a truncated one.

    Returns:
        The two paths, JSON first.
    """
    out = Path(out_dir)
    check_report_name(name)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    write_text(json.dumps({"command": command, "environment": env, **data}, indent=2) + "\n", json_path)
    env_line = ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)
    write_text(f"# {title}\n\nCommand: `{command}`\n\nMachine: {env_line}\n\n{markdown_body}", md_path)
    return json_path, md_path
