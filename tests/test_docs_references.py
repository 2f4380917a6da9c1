"""The docs name the tests that prove each rule; every one of those names must exist.

A renamed or deleted test would otherwise leave ``docs/security-model.md`` claiming a proof
that no longer runs. References are backticked: ``tests/path.py``, ``tests/dir/``,
``tests/path.py::test_name`` or, after one of those on the same line, ``::test_name``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "SECURITY.md"])
_REFERENCE = re.compile(r"`(tests/[^`\s]*|::[A-Za-z_][A-Za-z0-9_]*)`")


def _references() -> list[tuple[str, int, str, str | None]]:
    """(document, line number, path, test name or None) for every reference."""
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            last_path: str | None = None
            for match in _REFERENCE.finditer(line):
                text = match.group(1)
                if text.startswith("::"):
                    if last_path is not None:
                        found.append((doc.name, number, last_path, text[2:]))
                    continue
                path, _, name = text.partition("::")
                last_path = path
                found.append((doc.name, number, path, name or None))
    return found


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_the_docs_name_tests() -> None:
    assert len(_references()) > 50


@pytest.mark.parametrize(
    ("doc", "line", "path", "name"), _references(), ids=lambda v: str(v) if v else ""
)
def test_every_named_test_exists(doc: str, line: int, path: str, name: str | None) -> None:
    target = ROOT / path
    assert target.exists(), f"{doc}:{line} names {path}, which does not exist"
    if name is not None:
        assert target.is_file(), f"{doc}:{line}: {path} is not a file"
        base = name.split("[", 1)[0]
        assert base in _test_names(target), f"{doc}:{line} names {path}::{name}, not found"
