"""The project's Markdown renders: every table is a table and every relative link resolves;
no tracked file refers to a tracker's issue by number; the README's set-up commands and pip
extras exist.

GitHub drops a table whose delimiter row has a different number of cells than its header (it
shows the pipes as text), and a link to a renamed figure shows a broken image. Neither is caught
by reading the diff, so the docs are checked here.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
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
    "build",
    "dist",
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


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation and symbols dropped (letters,
    digits, ``_``, ``-`` and spaces kept), spaces turned into ``-``."""
    text = re.sub(r"`", "", heading.strip().lower())
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one gets ``-1``, ``-2``…)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_anchors(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or "#" not in target:
            continue
        local, fragment = target.split("#", 1)
        doc = (path.parent / local) if local else path
        if doc.suffix == ".md" and doc.is_file() and fragment not in anchors(doc):
            out.append(target)
    return out


def test_slug_matches_github() -> None:
    assert slug("The bundled models — read this first") == "the-bundled-models--read-this-first"
    assert slug("x86 AVX-512 + bf16, 2 cores") == "x86-avx-512--bf16-2-cores"
    assert slug("INT8 on CPU — `benchmarks/int8_cpu.py`") == "int8-on-cpu--benchmarksint8_cpupy"


def test_anchor_checker_catches_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n## Two words\n")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md#two-words) [again](a.md#two-words-1) [self](#here)\n\n# Here\n")
    assert broken_anchors(doc) == []
    doc.write_text("[bad](a.md#three-words) [gone](#nowhere)\n")
    assert broken_anchors(doc) == ["a.md#three-words", "#nowhere"]


def test_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/BENCHMARKS.md", "edge_sameo/models/detector/MODEL_CARD.md"} <= names


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


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_anchors_resolve(path: Path) -> None:
    """A link to ``file.md#heading`` (or ``#heading``) names a heading that exists."""
    assert broken_anchors(path) == []


#: A reference to a tracker's issue by number ("issue #3", "Issue 12"): the docs and the code
#: say what a thing is instead, so a reader needs no access to the tracker.
ISSUE_NUMBER = re.compile(r"\b[Ii]ssues?\s*#?\s*\d+")


def tracked_text_files() -> list[Path]:
    """Files git tracks outside tests/ (whose bad-input corpus may quote anything), text only."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    out = []
    for name in listing.decode().split("\0"):
        path = ROOT / name
        if not name or name.startswith("tests/") or not path.is_file():
            continue
        if b"\0" in path.read_bytes()[:8192]:  # binary: weights, images
            continue
        out.append(path)
    return out


def test_issue_pattern_matches_what_was_written() -> None:
    for text in ("issue #3's format", "(issue #23)", "Issue 12", "issues #4"):
        assert ISSUE_NUMBER.search(text), text
    for text in ("an issue with the stream", "tissue 3", "#3 of 5", "issued 2 warnings"):
        assert not ISSUE_NUMBER.search(text), text


def test_no_issue_numbers_in_tracked_files() -> None:
    files = tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert hits == []


def readme_commands() -> list[str]:
    """The shell lines of the README's code blocks, comments stripped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.split("#", 1)[0].strip() for b in blocks for line in b.splitlines()]


def test_readme_has_exactly_the_two_set_up_commands() -> None:
    makes = [c for c in readme_commands() if c.startswith("make")]
    assert makes == ["make demo", "make test"]
    targets = re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert {"demo", "test"} <= set(targets)


def test_readme_extras_exist() -> None:
    """Every ``edge-sameo[extra]`` the README tells users to install is declared."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = set(re.findall(r"edge-sameo\[([a-z0-9_-]+)\]", (ROOT / "README.md").read_text()))
    assert {"openvino", "trt", "supervision", "mcap"} <= named
    assert named <= set(declared)
