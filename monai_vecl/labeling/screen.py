"""Screening of sentences before a labeler sees them: what cannot be labeled is rejected with a reason, what
an LLM must not see goes to the rules labeler, and very long text is cut to the labeling cap.

Every labeler runs its input through :func:`screen` (see :meth:`monai_vecl.labeling.base.Labeler.label_batch`):

===============  ==========  ======================================================================
reason           action      what
===============  ==========  ======================================================================
``empty``        reject      nothing to read (no letter or digit)
``binary``       reject      control characters, NUL bytes or undecodable bytes make up the text
``non_english``  reject      mostly a non-Latin script, or the function words of another language
``instructions`` rules       text that addresses a model ("ignore previous instructions ...", chat
                             template tokens): never sent to an LLM, labeled by the rules labeler
``truncated``    label       longer than the labeling cap (:data:`MAX_LABEL_CHARS`): the first
                             ``max_chars`` characters, cut at a word boundary, are labeled
===============  ==========  ======================================================================

A rejected sentence is labeled No Mention (``25``) with backend ``rejected``, so a run never stops on bad
input and never produces a label outside the taxonomy. The cap applies to what a labeler reads; the stored
sentence is never changed (the 97-character cap of :func:`monai_vecl.reports.cap_sentence` is a sampling-time
cap and far shorter: labels cover the whole sentence, as the reference labels do).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Characters a labeler reads of one sentence at most (the longest Open-I sentence has 274).
MAX_LABEL_CHARS = 512

REJECT, RULES, LABEL = "reject", "rules", "label"
REASONS = ("empty", "binary", "non_english", "instructions", "truncated")

_INSTRUCTIONS = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b(?:\W+\w+){0,5}?\W+(?:instructions?|prompts?|rules|directions|"
    r"everything|context)\b"
    r"|\b(?:output|print|reply|respond|answer|return|say)\s+(?:with\s+|only\s+|just\s+)*(?:the\s+)?(?:labels?\b|codes?\b|"
    r"\d{1,2}\s*[+-](?!\w))"
    r"|\bsystem\s+prompt\b|\byou\s+are\s+(?:now\s+)?(?:a|an|the|my)\s+\w+|\bas\s+an?\s+(?:ai|assistant|language\s+model)\b"
    r"|<\|[a-z_]+\|>|\[/?inst\]|<</?sys>>|^\s*(?:system|assistant|user)\s*:",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]+")
# Function words of the languages whose reports are most often met; English ones count against them.
_FOREIGN = frozenset(
    "der das und nicht kein keine keinen ist sind mit ohne bei des dem den eine einer ein auf zur zum im "
    "le la les des du et est pas sans avec une un dans sur aux pour sont "
    "el los las del y sin con hay ni una por para es en se lo "
    "il della di che non sono nel nella gli dei delle "
    "da em com sem não nao uma há "
    "het een en van niet geen zijn met op".split()
)
_ENGLISH = frozenset(
    "the a an no not is are was were be been of and or in on at with without to for from by as there this that "
    "these which but than may can could has have had new old both seen noted present clear normal stable "
    "unchanged heart lungs lung chest size left right upper lower small large mild".split()
)


@dataclass(frozen=True)
class Screened:
    """What a labeler should read of a sentence, and what to do with it."""

    text: str
    action: str = LABEL
    reason: str | None = None


def screen(sentence: str, max_chars: int = MAX_LABEL_CHARS) -> Screened:
    """Classify one sentence; see the module docstring for reasons and actions."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if not isinstance(sentence, str):
        return Screened("", REJECT, "binary")
    junk = sum(1 for c in sentence if c == "\ufffd" or (unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn")
                                                        and c not in "\t\n\r"))
    if junk and junk >= max(1, 0.05 * len(sentence)):
        return Screened("", REJECT, "binary")
    text = "".join(c for c in sentence if c == " " or unicodedata.category(c)[0] != "C" or c in "\t\n\r")
    text = " ".join(text.split())
    if not any(c.isalnum() for c in text):
        return Screened("", REJECT, "empty")
    if _INSTRUCTIONS.search(text):
        return Screened(_cut(text, max_chars), RULES, "instructions")
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) < 0.5 * len(letters):
        return Screened("", REJECT, "non_english")
    words = [w.lower() for w in _WORD.findall(text)]
    foreign = sum(w in _FOREIGN for w in words)
    if foreign >= 2 and foreign > sum(w in _ENGLISH for w in words):
        return Screened("", REJECT, "non_english")
    if len(text) > max_chars:
        return Screened(_cut(text, max_chars), LABEL, "truncated")
    return Screened(text)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut
