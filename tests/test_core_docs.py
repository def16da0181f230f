"""Citations of the method document: no file cites the internal design note (not in the repository),
and every ``docs/method.md §Section`` citation or ``method.md#anchor`` link names a section that exists."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "method.md"
SCANNED = ("monai_vecl", "tests", "docs", "bundles")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".txt", ".conf", ".cfg", ".toml", ".rst"}
SKIPPED_DIRS = {"__pycache__", "outputs", "eval"}  # caches and run outputs, not sources
DESIGN_CITATION = re.compile(r"\bDESIGN(?:\.md)?\s*§")
SECTION_CITATION = re.compile(r"docs/method\.md\s*§")
ANCHOR_LINK = re.compile(r"method\.md#([A-Za-z0-9_-]+)")


def headings(text: str) -> list[str]:
    """Second-level headings of a markdown text."""
    return [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def citation_problems(text: str, names: Sequence[str]) -> list[str]:
    """Problems of one text: design-note citations and method citations of sections not in ``names``."""
    problems = [f"line {text.count(chr(10), 0, m.start()) + 1}: cites the design note" for m in
                DESIGN_CITATION.finditer(text)]
    for m in SECTION_CITATION.finditer(text):
        rest = text[m.end():]
        # The longest heading the citation starts with, ending at a word boundary ("§Loss." yes, "§Lossy" no).
        if not any(rest.startswith(n) and not rest[len(n):len(n) + 1].isalnum() for n in names):
            problems.append(f"line {text.count(chr(10), 0, m.start()) + 1}: no section {rest[:30]!r}")
    anchors = {anchor(n) for n in names}
    for m in ANCHOR_LINK.finditer(text):
        if m.group(1) not in anchors:
            problems.append(f"line {text.count(chr(10), 0, m.start()) + 1}: no anchor #{m.group(1)}")
    return problems


def source_files() -> Iterator[Path]:
    """Text files of the scanned folders, except this test (whose examples are deliberately bad)."""
    for top in SCANNED:
        for folder, dirs, files in os.walk(REPO / top):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            for name in files:
                path = Path(folder) / name
                if path.suffix in SUFFIXES and path.resolve() != Path(__file__).resolve():
                    yield path


def test_method_document_has_the_sections_the_code_cites():
    names = headings(METHOD.read_text(encoding="utf-8"))
    for required in ("Taxonomy", "Relation targets", "Loss", "Network", "Scoring", "Preprocessing"):
        assert required in names, f"docs/method.md lacks '## {required}'"
    assert len(set(names)) == len(names), f"duplicate sections in docs/method.md: {names}"


def test_every_citation_names_an_existing_section():
    names = headings(METHOD.read_text(encoding="utf-8"))
    problems, cited = [], 0
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        cited += len(SECTION_CITATION.findall(text))
        problems += [f"{path.relative_to(REPO)}: {p}" for p in citation_problems(text, names)]
    assert not problems, "\n".join(problems)
    assert cited >= 15, f"only {cited} citations of docs/method.md found: did the scan miss the sources?"


def test_checker_flags_bad_citations():
    names = ["Loss", "Relation targets"]
    assert citation_problems("see docs/method.md §Loss. and docs/method.md §Relation targets)", names) == []
    assert citation_problems("[docs/method.md §Loss](method.md#loss)", names) == []
    assert len(citation_problems("docs/method.md §Lossy", names)) == 1
    assert len(citation_problems("docs/method.md §Scoring", names)) == 1
    assert len(citation_problems("(method.md#relation)", names)) == 1
    assert citation_problems("a\n(DESIGN §3)", names) == ["line 2: cites the design note"]
    assert len(citation_problems("DESIGN.md §9", names)) == 1
