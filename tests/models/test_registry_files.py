"""The shipped registry is portable: no file under models/registry names an absolute path."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import REPO_ROOT

REGISTRY = REPO_ROOT / "models" / "registry"
#: An absolute path: POSIX ("/work/..."), a Windows drive ("C:\\..." or "C:/...") or a UNC share.
ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/]|\\\\)")
#: The same inside running text: an absolute path starts a word.
ABSOLUTE_IN_TEXT = re.compile(r"(?:^|[\s\"'`(=<\[])(/[\w.-]+/|[A-Za-z]:[\\/][\w.-]|\\\\[\w.-])")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def absolute_paths(path: Path) -> list[str]:
    """Every absolute path named in one JSON, CSV or Markdown file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [s for s in _strings(json.loads(text)) if ABSOLUTE.match(s.strip())]
    if path.suffix == ".csv":
        return [cell for row in csv.reader(text.splitlines()) for cell in row if ABSOLUTE.match(cell.strip())]
    return [m.group(1) for m in ABSOLUTE_IN_TEXT.finditer(text)]


REGISTRY_FILES = sorted(p for p in REGISTRY.rglob("*") if p.suffix in {".json", ".csv", ".md"})


def test_the_registry_has_files_to_check():
    names = {p.name for p in REGISTRY_FILES}
    assert {"card.json", "default.json", "README.md", "split.csv"} <= names


@pytest.mark.parametrize("path", REGISTRY_FILES, ids=lambda p: p.relative_to(REGISTRY).as_posix())
def test_no_absolute_path(path):
    assert absolute_paths(path) == [], f"{path.relative_to(REPO_ROOT)} names an absolute path"


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        (".json", '{"training": {"data_dir": "/work/shared/datasets/iq-othnccd"}}'),
        (".json", '{"a": ["C:\\\\data\\\\x"]}'),
        (".csv", "path,label\nD:/data/a.jpg,normal\n"),
        (".md", "trained on data in /home/me/data and more"),
        (".md", "see `C:\\data`"),
    ],
)
def test_the_check_finds_absolute_paths(tmp_path, suffix, content):
    path = tmp_path / f"x{suffix}"
    path.write_text(content, encoding="utf-8")
    assert absolute_paths(path)


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        (".json", '{"data_dir": "../shared/datasets/iq-othnccd", "split": "models/registry/x.csv"}'),
        (".csv", "path,label\nBengin cases/a.jpg,benign\n"),
        (".md", "splits the groups 70/15/15, see `<id>/card.json` and models/registry/README.md"),
    ],
)
def test_the_check_accepts_relative_paths(tmp_path, suffix, content):
    path = tmp_path / f"x{suffix}"
    path.write_text(content, encoding="utf-8")
    assert absolute_paths(path) == []
