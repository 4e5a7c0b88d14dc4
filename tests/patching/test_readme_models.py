"""The README's model table and ``fastdit info`` come from the same data: every registered family has its row
with its model classes and its path, and every class fastdit refuses is named with the refusal."""

from __future__ import annotations

import re
from pathlib import Path

from fastdit.patching.families import UNSUPPORTED, families

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, str]:
    text = README.read_text()
    table = text[text.index("## Supported models"):text.index("**Not supported**")]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, re.M)}


def test_every_family_has_its_row_with_its_classes_and_path():
    rows = _rows()
    assert set(rows) == set(families())
    for name, family in families().items():
        assert all(f"`{cls}`" in rows[name] for cls in family.model_classes), name
        assert ("generic path" in rows[name]) == (family.processor is None), name


def test_every_refused_class_is_named_in_the_readme():
    text = README.read_text()
    refused = text[text.index("**Not supported**"):]
    assert all(f"`{cls}`" in refused[:600] for cls in UNSUPPORTED)
