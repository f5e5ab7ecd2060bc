"""The project's Markdown renders: every table is a table and every relative link resolves.

GitHub drops a table whose delimiter row has a different number of cells than its header (it
shows the pipes as text), and a link to a renamed figure shows a broken image. Neither is caught
by reading the diff, so the docs are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {
    ".venv",
    ".git",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "runs",
    "data",
    "node_modules",
}
DELIMITER = re.compile(r"\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.md") if not SKIP.intersection(p.relative_to(ROOT).parts[:-1])
    )


def cells(row: str) -> int:
    """Cells in a GFM table row: split on pipes not escaped with a backslash."""
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return len(re.split(r"(?<!\\)\|", body))


def table_errors(text: str) -> list[str]:
    lines = text.splitlines()
    errors = []
    in_code = False
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        elif (
            not in_code
            and i + 1 < len(lines)
            and lines[i].lstrip().startswith("|")
            and DELIMITER.fullmatch(lines[i + 1])
        ):
            width = cells(lines[i])
            if cells(lines[i + 1]) != width:
                errors.append(
                    f"line {i + 2}: delimiter has {cells(lines[i + 1])} cells, header {width}"
                )
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                if cells(lines[j]) != width:
                    errors.append(f"line {j + 1}: row has {cells(lines[j])} cells, header {width}")
                j += 1
            i = j
            continue
        i += 1
    return errors


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        local = target.split("#", 1)[0]
        if local and not (path.parent / local).exists():
            out.append(target)
    return out


def test_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/BENCHMARKS.md", "models/detector/MODEL_CARD.md"} <= names


def test_table_checker_catches_a_short_delimiter() -> None:
    good = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert table_errors(good) == []
    assert table_errors("| a | b | c |\n|---|---|\n| 1 | 2 | 3 |\n") == [
        "line 2: delimiter has 2 cells, header 3"
    ]
    assert table_errors("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n") == [
        "line 3: row has 3 cells, header 2"
    ]
    assert table_errors("| a \\| b | c |\n|---|---|\n") == []
    assert table_errors("```\n| a | b |\n|---|\n```\n") == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_tables_render(path: Path) -> None:
    assert table_errors(path.read_text()) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []
