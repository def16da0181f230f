"""Report text handling: sections, sentences, normalisation and the sampling-time length cap.

VECL trains on the FINDINGS and IMPRESSION sections of MIMIC-CXR reports, split into sentences,
one sentence sampled per image and step, capped at 97 characters (VECL reference code,
docs/method.md §Training samples).
Everything here is plain text processing: no model, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Sections VECL trains on, in report order.
DEFAULT_SECTIONS: tuple[str, ...] = ("findings", "impression")

#: Sampling-time cap on a sentence's length in characters (VECL reference code).
MAX_SENTENCE_CHARS = 97

# Header spellings seen in MIMIC-CXR and Open-I reports, mapped to one canonical name.
_SECTION_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "indication": "indication",
    "indications": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "procedure": "examination",
    "final report": "final report",
    "wet read": "wet read",
    "notification": "notification",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "recommendation(s)": "recommendation",
    "addendum": "addendum",
}

_HEADER = re.compile(
    r"(?<![A-Za-z])("
    + "|".join(sorted((re.escape(a) for a in _SECTION_ALIASES), key=len, reverse=True)).replace(r"\ ", r"\s+")
    + r")\s*:",
    re.IGNORECASE,
)
# "FINAL REPORT" is a title line without a colon in MIMIC-CXR.
_TITLE = re.compile(r"^\s*final\s+report\s*$", re.IGNORECASE | re.MULTILINE)

# Tokens after which a period never ends a sentence.
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "cf", "fig", "st", "no", "nos", "resp", "incl"}
)
# Tokens after which a period ends a sentence only before an upper-case word ("at 3 p.m. The ...").
_SOFT_ABBREVIATIONS = frozenset({"a.m", "p.m", "etc"})
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.)](?!\d)|[-*\u2022])\s*")
_BOUNDARY = re.compile(r"[.!?]+(?=\s|$)")
_INLINE_LIST = re.compile(r"(?<=[.!?;])\s+(?=\(?\d{1,2}[.)]\s)")
_DEID = re.compile(r"_{2,}")
_SPACE = re.compile(r"\s+")
_TRAILING_PUNCT = re.compile(r"[\s.!?;:,]+$")


def extract_sections(text: str) -> dict[str, str]:
    """Split a report into sections keyed by canonical lower-case name (``"findings"``, ``"impression"``, ...).

    Headers are matched case-insensitively wherever they stand (``FINDINGS:``, ``Impression:``, or inline as in
    ``"... FINDINGS: ... IMPRESSION: ..."``). A section repeated in a report is concatenated. Text before the
    first header goes under ``"preamble"``; a report without any known header is returned whole as
    ``{"findings": text}`` so headerless reports (phantom, some Open-I rows) are not lost.
    """
    text = _TITLE.sub(" ", text)
    matches = list(_HEADER.finditer(text))
    if not matches:
        body = text.strip()
        return {"findings": body} if body else {}
    sections: dict[str, str] = {}
    pre = text[: matches[0].start()].strip()
    if pre:
        sections["preamble"] = pre
    for m, nxt in zip(matches, matches[1:] + [None]):
        name = _SECTION_ALIASES[_SPACE.sub(" ", m.group(1).lower())]
        body = text[m.end() : nxt.start() if nxt else len(text)].strip()
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def split_sentences(text: str) -> list[str]:
    """Split report text into cleaned sentences.

    Handles numbered lists (``"1. No effusion. 2. ..."``, markers stripped), decimals (``"1.5 cm"``),
    abbreviations (``"Dr. ___"``, ``"e.g."``, ``"approx."``), line wraps inside a sentence and blank-line
    paragraph breaks. De-identification blanks (``___``) are kept as ``___``.
    """
    sentences: list[str] = []
    for paragraph in _paragraphs(text):
        for piece in _split_paragraph(paragraph):
            cleaned = clean_sentence(piece)
            if any(c.isalnum() for c in cleaned):
                sentences.append(cleaned)
    return sentences


def report_sentences(text: str, sections: Sequence[str] = DEFAULT_SECTIONS) -> list[str]:
    """Sentences of the chosen sections of a report, in report order of ``sections``."""
    parts = extract_sections(text)
    return [s for name in sections for s in split_sentences(parts.get(name, ""))]


def clean_sentence(sentence: str) -> str:
    """Collapse whitespace, unify de-identification blanks and strip a leading list marker."""
    sentence = _DEID.sub("___", _SPACE.sub(" ", sentence)).strip()
    return _LIST_MARKER.sub("", sentence, count=1).strip()


def normalize_sentence(sentence: str) -> str:
    """Canonical form used as a label-cache key: cleaned, lower-case, no trailing punctuation."""
    text = clean_sentence(sentence).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return _TRAILING_PUNCT.sub("", text)


def cap_sentence(sentence: str, max_chars: int = MAX_SENTENCE_CHARS) -> str:
    """Cut a sentence to at most ``max_chars`` characters, as the reference code does when sampling."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    return sentence[:max_chars]


def _paragraphs(text: str) -> list[str]:
    """Blank lines and lines opening with a list marker start a new block; other line breaks are wraps."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            blocks.append([])
        elif _LIST_MARKER.match(line) and blocks[-1]:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return [" ".join(b) for b in blocks if b]


def _split_paragraph(paragraph: str) -> list[str]:
    pieces: list[str] = []
    for chunk in _INLINE_LIST.split(paragraph):
        start = 0
        for m in _BOUNDARY.finditer(chunk):
            if _is_boundary(chunk, m.start(), m.end()):
                pieces.append(chunk[start : m.end()])
                start = m.end()
        pieces.append(chunk[start:])
    return pieces


def _is_boundary(text: str, punct_start: int, punct_end: int) -> bool:
    if text[punct_start] != ".":
        return True
    token = text[:punct_start].rsplit(None, 1)[-1].lower() if text[:punct_start].strip() else ""
    token = token.lstrip("([")
    rest = text[punct_end:].lstrip()
    if not rest:
        return True
    if token in _SOFT_ABBREVIATIONS:
        return rest[0].isupper()
    if token in _ABBREVIATIONS:
        return False
    # A lone initial ("J. Smith") or a list marker ("1.") is not a sentence end.
    return not (len(token) == 1 and token.isalpha()) and not (token.isdigit() and len(token) <= 2 and
                                                              text[:punct_start].strip() == token)
