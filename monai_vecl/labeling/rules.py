"""Offline, deterministic labeler: the taxonomy's synonym lexicon with negation and uncertainty scope.

The scope rules follow the NegEx idea (Chapman et al., 2001: trigger phrases that open a scope running to
the end of the clause, pseudo-triggers such as "no change" that do not) and the CheXpert labeler's split of
mentions into positive, negative and uncertain (Irvin et al., 2019). The phrase lists are our own.

Per sentence: every finding mention is positive unless a negation trigger precedes it in its clause
("no A, B or C", "without", "free of", "negative for", "resolved") or a post-trigger follows it
("... has resolved", "... is not seen"). Uncertain mentions ("possible", "cannot be excluded") follow a
configurable policy. A finding both affirmed and negated in one sentence counts as positive. A sentence
without any finding mention is No Mention (``25``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence

from monai_vecl.labeling.base import Labeler, LabelResult
from monai_vecl.taxonomy import FINDINGS, NO_MENTION_LABEL, SYNONYMS, normalize_label_set

RULES_VERSION = "rules-v1"

#: How an uncertain mention is labeled: as a positive mention, a negative one, or not at all.
UNCERTAINTY_POLICIES = ("positive", "negative", "no_mention")

# Phrases that look like findings but are not the taxonomy's (None), or that name a finding the shared
# lexicon lacks. Regular expressions; matched on lower-case text.
_RULE_TERMS: tuple[tuple[str, int | None], ...] = (
    (r"pericardial effusions?", None),
    (r"mass effect", None),
    (r"no acute (?:cardiopulmonary|intrathoracic|osseous)?\s*(?:process|abnormality|disease|findings?)", None),
    (r"kerley\s+b?\s*lines", 8),
    (r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size)(?:(?!\bnot\b|\bno\b)[^,;])*?\b(?:enlarg\w*|large)\b",
     4),
    (r"enlargement of the (?:heart|cardiac silhouette)", 4),
    (r"(?:subcutaneous|soft tissue) emphysema", None),
    (r"(?:enlarged|widened|prominent) (?:cardio)?mediastin\w*", 17),
    (r"(?:cardio)?mediastin\w* (?:is |are )?(?:widened|enlarged|prominent)", 17),
)

# Statements of normality that are negative mentions by themselves.
_NORMAL_STATEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\b(?:heart|heart size|cardiac silhouette|cardiac size)\b[^,;]*?\b(?:normal|within normal limits|"
     r"not enlarged|unremarkable)", ("4-",)),
    (r"\bnormal (?:heart|cardiac) (?:size|silhouette)", ("4-",)),
    (r"\bcardiomediastinal (?:silhouette|contours?)\b[^,;]*?\b(?:normal|within normal limits|unremarkable)",
     ("4-", "17-")),
    (r"\bmediastin\w* (?:silhouette|contours?)?[^,;]*?\b(?:normal|within normal limits|unremarkable|not widened)",
     ("17-",)),
    (r"\blungs? (?:are |is |remain |appear )?(?:\w+ )?clear\b|\bclear lungs?\b", ("5-",)),
    (r"\bcostophrenic angles? (?:are |is |remain )?(?:sharp|clear)", ("2-",)),
    (r"\bno acute (?:osseous|bony) (?:abnormality|abnormalities|process|findings?)|\bosseous structures are intact",
     ("16-",)),
    (r"\b(?:pulmonary )?vascularity\b[^,;]*?\b(?:normal|within normal limits|not engorged)|"
     r"\b(?:pulmonary )?vasculature\b[^,;]*?\b(?:normal|within normal limits|not engorged)|"
     r"\bnormal pulmonary vascul\w+", ("8-",)),
)

_NEG_PRE = (
    r"\bno\b(?!\s+(?:significant\s+|interval\s+|substantial\s+|appreciable\s+|marked\s+)?"
    r"(?:change|increase|decrease|worsening|improvement|difference)\b)",
    r"\bnot\b", r"\bwithout\b(?!\s+(?:significant\s+|interval\s+)?change)", r"\bfree of\b", r"\bnegative for\b",
    r"\babsence of\b", r"\bresolution of\b", r"\bresolved\b", r"\bnor\b", r"\bneither\b", r"\bclear of\b",
    r"\bremoval of\b", r"\bruled out\b", r"\bexclude[sd]?\b",
)
_NEG_POST = (
    r"\b(?:is|are|was|were)\s+(?:now\s+)?absent\b", r"\b(?:has|have)\s+(?:now\s+)?(?:resolved|cleared)\b",
    r"\bresolved\b", r"\bno longer\b", r"\b(?:has|have)\s+been\s+removed\b", r"\bremoved\b",
    r"\bnot\s+(?:seen|identified|present|visualized|appreciated|evident|demonstrated|detected|noted)\b",
)
# Phrases holding a negation word that express doubt, not absence; removed before negation is matched.
_UNCERTAIN_BOTH = (
    r"\bcannot\s+be\s+(?:excluded|ruled\s+out|entirely\s+excluded)\b", r"\bcan\s+not\s+be\s+(?:excluded|ruled out)\b",
    r"\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)\b", r"\bcannot\s+exclude\b", r"\bdifficult\s+to\s+exclude\b",
    r"\b(?:is|are)\s+(?:possible|suspected|likely|questioned|not\s+excluded)\b", r"\?",
)
_UNCERTAIN_PRE = (
    r"\bmay\b", r"\bmight\b", r"\bcould\b", r"\bpossibl[ey]\b", r"\bprobabl[ey]\b", r"\blikely\b",
    r"\bsuggest\w*\b", r"\bsuspicious\b", r"\bsuspected\b", r"\bconcern(?:ing)?\s+for\b", r"\bquestionable\b",
    r"\bquestion\s+of\b", r"\bversus\b", r"\bvs\b", r"\bdifferential\b", r"\bconsider\w*\b", r"\bequivocal\b",
    r"\bpresumed\b", r"\bworrisome\b", r"\brule\s+out\b", r"\br/o\b", r"\bindeterminate\b",
)
_TERMINATORS = (
    r";", r":", r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"\bapart\s+from\b",
    r"\baside\s+from\b", r"\bother\s+than\b", r"\bwhich\b", r"\bwhereas\b", r"\bwhile\b", r"\byet\b",
    r"\bthere\s+(?:is|are|has|have)\b", r",?\s+and\s+(?:the|there)\b", r",\s*with\b",
)


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


class RulesLabeler(Labeler):
    """Lexicon + negation/uncertainty-scope labeler.

    Args:
        uncertainty: policy for uncertain mentions, one of :data:`UNCERTAINTY_POLICIES`.
        synonyms: surface forms per finding code (default: :data:`monai_vecl.taxonomy.SYNONYMS`).
    """

    backend = "rules"

    def __init__(self, uncertainty: str = "positive", synonyms: Mapping[int, Sequence[str]] | None = None) -> None:
        super().__init__()
        if uncertainty not in UNCERTAINTY_POLICIES:
            raise ValueError(f"uncertainty policy must be one of {UNCERTAINTY_POLICIES}, got {uncertainty!r}")
        self.uncertainty = uncertainty
        synonyms = SYNONYMS if synonyms is None else synonyms
        unknown = set(synonyms) - set(FINDINGS)
        if unknown:
            raise ValueError(f"synonyms for unknown finding codes {sorted(unknown)}")
        self._terms: dict[str, int] = {
            _squash(t.lower()): code for code, forms in synonyms.items() for t in forms
        }
        literal = sorted(self._terms, key=len, reverse=True)
        self._lexicon = re.compile(
            r"\b(?:" + "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in literal) + r")(?:e?s)?\b"
        )
        self._rule_terms = [(re.compile(p), code) for p, code in _RULE_TERMS]
        self._normal = [(re.compile(p), labels) for p, labels in _NORMAL_STATEMENTS]
        self._neg_pre = _alternation(_NEG_PRE)
        self._neg_post = _alternation(_NEG_POST)
        self._unc_both = _alternation(_UNCERTAIN_BOTH)
        self._unc_pre = _alternation(_UNCERTAIN_PRE)
        self._terminators = _alternation(_TERMINATORS)

    @property
    def identity(self) -> str:
        return f"rules/{RULES_VERSION}/uncertainty={self.uncertainty}"

    def label_batch(self, sentences: Sequence[str]) -> list[LabelResult]:
        return [LabelResult(self.labels_of(s), self.backend) for s in sentences]

    def labels_of(self, sentence: str) -> tuple[str, ...]:
        """Signed labels of one sentence (validated, sorted)."""
        text = sentence.lower()
        labels: dict[int, str] = {}
        for pattern, statement in self._normal:
            if pattern.search(text):
                for label in statement:
                    labels.setdefault(int(label[:-1]), label[-1])
        clause_starts = [m.end() for m in self._terminators.finditer(text)]
        doubt = [m.span() for m in self._unc_both.finditer(text)]
        neg_pre = [m for m in self._neg_pre.finditer(text) if not _inside(m.span(), doubt)]
        neg_post = [m for m in self._neg_post.finditer(text) if not _inside(m.span(), doubt)]
        unc_pre = list(self._unc_pre.finditer(text))

        def clause(pos: int) -> int:
            return bisect.bisect_right(clause_starts, pos)

        for start, end, code in self._mentions(text):
            c = clause(start)
            negated = any(m.end() <= start and clause(m.start()) == c for m in neg_pre) or any(
                m.start() >= end and clause(m.start()) == c for m in neg_post
            )
            uncertain = any(clause(s) == c for s, _ in doubt) or any(
                m.end() <= start and clause(m.start()) == c for m in unc_pre
            )
            sign = "-" if negated else self._uncertain_sign() if uncertain else "+"
            if sign and labels.get(code) != "+":
                labels[code] = sign
        if not labels:
            return (NO_MENTION_LABEL,)
        return normalize_label_set(f"{code}{sign}" for code, sign in labels.items())

    def _uncertain_sign(self) -> str:
        return {"positive": "+", "negative": "-", "no_mention": ""}[self.uncertainty]

    def _mentions(self, text: str) -> list[tuple[int, int, int | None]]:
        """Non-overlapping finding mentions, longest first at each position; excluded phrases dropped."""
        found = [(m.start(), m.end(), self._code_of(m.group())) for m in self._lexicon.finditer(text)]
        for pattern, code in self._rule_terms:
            found.extend((m.start(), m.end(), code) for m in pattern.finditer(text))
        found.sort(key=lambda f: (f[0], f[0] - f[1]))
        kept: list[tuple[int, int, int | None]] = []
        for mention in found:
            if not kept or mention[0] >= kept[-1][1]:
                kept.append(mention)
        return [m for m in kept if m[2] is not None]

    def _code_of(self, surface: str) -> int:
        """Lexicon code of a match, which may carry the plural suffix the pattern allows."""
        surface = _squash(surface)
        for stem in (surface, surface[:-2], surface[:-1]):
            if stem in self._terms:
                return self._terms[stem]
        raise KeyError(surface)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _inside(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(s <= span[0] and span[1] <= e for s, e in spans)
