"""The README's Python names every public call as it is spelled (``fastdit.X`` exists, ``ChunkOrder`` among
them), and its code passes diffusers the argument names diffusers documents now (``dtype``, not the deprecated
``torch_dtype``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import fastdit

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_fastdit_name_in_the_readme_exists():
    names = set(re.findall(r"\bfastdit\.([A-Za-z_]\w*)", README)) - {"json"}  # fastdit.json: a model folder's file
    names |= {n for row in re.findall(r"`fastdit\.RasterOrder`[^|]*", README) for n in re.findall(r"`(\w+)`", row)}
    assert "ChunkOrder" in names
    missing = sorted(n for n in names if not hasattr(fastdit, n) and importlib.util.find_spec(f"fastdit.{n}") is None)
    assert missing == []


def test_the_readme_code_uses_dtype_not_torch_dtype():
    code = "\n".join(re.findall(r"```python\n(.*?)```", README, re.S))
    assert "from_pretrained" in code and "torch_dtype" not in code
