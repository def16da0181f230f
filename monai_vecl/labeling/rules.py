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
from monai_vecl.labeling.screen import MAX_LABEL_CHARS, Screened
from monai_vecl.taxonomy import FINDINGS, NO_MENTION_LABEL, SYNONYMS, normalize_label_set

RULES_VERSION = "rules-v2"

#: How an uncertain mention is labeled: as a positive mention, a negative one, or not at all.
UNCERTAINTY_POLICIES = ("positive", "negative", "no_mention")
#: The default policy, chosen on the Open-I report-level benchmark (docs/labeling.md): uncertain mentions
#: dropped score macro F1 0.89 there, counted as positive 0.84.
DEFAULT_UNCERTAINTY = "no_mention"

# The rules lexicon is the taxonomy's, read the way a radiologist reads a chest film report: words that name
# another entity are taken out ("scarring" is a scar, not pulmonary fibrosis; "hyperinflation" is a sign, not
# emphysema; a "nodular opacity" is an opacity; "infection" alone does not say pneumonia), and report spellings
# the taxonomy lacks are added.
_LEXICON_DROP: dict[int, frozenset[str]] = {
    6: frozenset({"infection", "infectious process"}),
    9: frozenset({"nodular"}),
    11: frozenset({"scarring"}),
    12: frozenset({"hyperinflation", "hyperinflated"}),
}
_LEXICON_ADD: dict[int, tuple[str, ...]] = {
    2: ("hydropneumothorax",),
    6: ("pneumonitis", "bronchopneumonia"),
    7: ("masslike", "mass-like"),
    11: ("fibrotic changes", "fibrotic change", "pulmonary fibrosis", "interstitial fibrosis"),
    12: ("emphysematous changes", "bullous emphysema", "bullae"),
    14: ("hiatus hernia",),
    20: ("device", "pacer", "aicd", "icd", "generator", "leads", "endotracheal", "tracheostomy", "nasogastric",
         "drain", "stimulator", "prosthesis", "prosthetic", "valve replacement", "hardware", "staples", "electrodes",
         "port-a-cath", "portacath", "wire"),
}


def rules_lexicon() -> dict[int, tuple[str, ...]]:
    """Surface forms per finding used by the rules labeler by default: the taxonomy's synonyms less the
    words that name another entity, plus report spellings the taxonomy lacks."""
    out = {}
    for code in FINDINGS:
        forms = [t for t in SYNONYMS.get(code, ()) if t not in _LEXICON_DROP.get(code, ())]
        out[code] = tuple(forms + [t for t in _LEXICON_ADD.get(code, ()) if t not in forms])
    return out


# Phrases that look like findings but are not the taxonomy's (None), or that name a finding the lexicon lacks.
# Regular expressions; matched on lower-case text; at one position the longest match wins.
_RULE_TERMS: tuple[tuple[str, int | None], ...] = (
    (r"pericardial effusions?", None),
    (r"mass effect", None),
    (r"no acute (?:cardiopulmonary|intrathoracic|osseous)?\s*(?:process|abnormality|disease|findings?)", None),
    (r"kerley\s+b?\s*lines", 8),
    (r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size)(?:(?!\bnot\b|\bno\b)[^,;])*?\b(?:enlarg\w*|large)\b",
     4),
    (r"enlargement of the (?:heart|cardiac silhouette)", 4),
    (r"(?:subcutaneous|soft tissue|mediastinal|interstitial) emphysema", None),
    (r"(?:enlarged|widened|prominent) (?:cardio)?mediastin\w*", 17),
    (r"(?:cardio)?mediastin\w* (?:is |are )?(?:widened|enlarged|prominent)", 17),
    (r"cystic fibrosis", None),
    # granulomatous disease and its calcified residua are granulomas, not pneumonia or calcified tissue
    (r"granulomatous (?:infection|disease|process|exposure|changes?)", 22),
    (r"calcified (?:(?!non\b|not\b)[\w,-]+ ){0,6}?granulom\w*", 23),
    (r"granulom\w* (?:(?!not\b|non\b)\w+ ){0,5}?(?:densely )?calcified", 23),
    (r"granulomatous calcifications?", 23),
    # calcification called atherosclerotic names atherosclerosis, a vascular disease, not tissue calcification
    (r"(?:atherosclerotic|atheromatous) (?:\w+ )?calcifications?", None),
    # a line or tube named by where its tip lies, also where the device word itself was de-identified
    (r"\btips?\b(?= (?:\w+ ){0,4}?(?:at|in|over|within|terminat\w*|project\w*|overl\w*|near|above|below|lies|"
     r"ends?|positioned|located)\b)", 20),
    (r"\blead\s+(?:to|us)\b", None),
    (r"\bline of\b|\bpleural line\b|\bskin ?folds?\b|\bmidline\b", None),
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
    # "no definite effusion seen, left hilar calcifications ...": a closed statement ends its clause
    r"\b(?:seen|identified|noted|present|demonstrated|visualized|appreciated)\s*,",
)


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


class RulesLabeler(Labeler):
    """Lexicon + negation/uncertainty-scope labeler.

    Args:
        uncertainty: policy for uncertain mentions, one of :data:`UNCERTAINTY_POLICIES`
            (default :data:`DEFAULT_UNCERTAINTY`).
        synonyms: surface forms per finding code (default: :func:`rules_lexicon`).
        max_chars: labeling cap (see :mod:`monai_vecl.labeling.screen`).
    """

    backend = "rules"

    def __init__(self, uncertainty: str = DEFAULT_UNCERTAINTY, synonyms: Mapping[int, Sequence[str]] | None = None,
                 max_chars: int = MAX_LABEL_CHARS) -> None:
        super().__init__(max_chars)
        if uncertainty not in UNCERTAINTY_POLICIES:
            raise ValueError(f"uncertainty policy must be one of {UNCERTAINTY_POLICIES}, got {uncertainty!r}")
        self.uncertainty = uncertainty
        synonyms = rules_lexicon() if synonyms is None else synonyms
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

    def _label(self, items: Sequence[Screened]) -> list[LabelResult]:
        return [LabelResult(self.labels_of(s.text), self.backend) for s in items]

    def labels_of(self, sentence: str) -> tuple[str, ...]:
        """Signed labels of one sentence (validated, sorted)."""
        return self.analyse(sentence)[0]

    def uncertain(self, sentence: str) -> frozenset[int]:
        """Findings of ``sentence`` mentioned only with doubt ("possible", "cannot be excluded", ...): the
        mentions the uncertainty policy decides, which a hybrid labeler may hand to an LLM."""
        return self.analyse(sentence)[1]

    def analyse(self, sentence: str) -> tuple[tuple[str, ...], frozenset[int]]:
        """Signed labels of one sentence and the findings it mentions only with doubt."""
        text = sentence.lower()
        doubtful: set[int] = set()
        affirmed: set[int] = set()
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
            if not negated:
                (doubtful if uncertain else affirmed).add(code)
            if sign and labels.get(code) != "+":
                labels[code] = sign
        doubtful -= affirmed
        if not labels:
            return (NO_MENTION_LABEL,), frozenset(doubtful)
        return normalize_label_set(f"{code}{sign}" for code, sign in labels.items()), frozenset(doubtful)

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
