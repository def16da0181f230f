"""Hybrid labeling: the rules labeler for every sentence, an LLM only where the rules are unsure.

A sentence goes to the LLM when the rules labeler finds a finding mentioned only with doubt ("possible
pneumonia", "cannot exclude effusion") — the mentions its uncertainty policy would otherwise decide blindly.
The LLM decides those findings only; the rules' labels for the findings they read with certainty stay
(:func:`merge_doubtful`). Every other sentence keeps its rules labels, so most LLM calls are saved
(``calls_saved`` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai_vecl.labeling.base import Labeler, LabelResult
from monai_vecl.labeling.llm import LLMLabeler
from monai_vecl.labeling.rules import RulesLabeler
from monai_vecl.labeling.screen import RULES, Screened
from monai_vecl.taxonomy import NO_MENTION_LABEL, code_of, normalize_label_set


def merge_doubtful(rules_labels: Sequence[str], doubtful: frozenset[int], llm_labels: Sequence[str]) -> tuple[str, ...]:
    """The rules' labels for findings read with certainty, the LLM's for the ``doubtful`` findings."""
    kept = {x for x in rules_labels if x != NO_MENTION_LABEL and code_of(x) not in doubtful}
    kept |= {x for x in llm_labels if x != NO_MENTION_LABEL and code_of(x) in doubtful}
    return normalize_label_set(kept) if kept else (NO_MENTION_LABEL,)


class HybridLabeler(Labeler):
    """Args:
        llm: the LLM labeler asked about the sentences the rules are unsure of (its fallback is the rules).
        rules: the rules labeler (default: the LLM's fallback).
    """

    backend = "hybrid"

    def __init__(self, llm: LLMLabeler, rules: RulesLabeler | None = None) -> None:
        super().__init__(llm.max_chars)
        self.llm = llm
        self.rules = rules or llm.fallback
        self.stats = llm.stats  # LLM counters are the run's counters
        self.calls_saved = 0

    @property
    def identity(self) -> str:
        return f"hybrid/{self.llm.identity}/{self.rules.identity}"

    def _label(self, items: Sequence[Screened]) -> list[LabelResult]:
        analysed = [self.rules.analyse(s.text) for s in items]
        unsure = [i for i, (_, doubtful) in enumerate(analysed) if doubtful and items[i].action != RULES]
        self.calls_saved += len(items) - len(unsure)
        results = [LabelResult(labels, self.rules.backend) for labels, _ in analysed]
        if unsure:
            for i, result in zip(unsure, self.llm._label([items[i] for i in unsure])):
                labels, doubtful = analysed[i]
                results[i] = LabelResult(merge_doubtful(labels, doubtful, result.labels), result.backend,
                                         result.repaired, result.fallback, result.reason)
        return results
