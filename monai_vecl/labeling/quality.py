"""Scoring labelers: per-finding precision/recall against sentence-level or report-level ground truth."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monai_vecl.taxonomy import FINDINGS, LABEL_INDEX, code_of


@dataclass(frozen=True)
class Score:
    """Counts and ratios for one class; ratios are ``None`` where undefined (no predictions / no truth)."""

    name: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.support if self.support else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None


def score_sets(predicted: Sequence[Iterable], truth: Sequence[Iterable], classes: Iterable,
               names: dict | None = None) -> list[Score]:
    """Per-class counts over paired items (sentences or reports), each a set of classes."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions vs {len(truth)} ground-truth items")
    pairs = [(set(p), set(t)) for p, t in zip(predicted, truth)]
    return [Score(str((names or {}).get(c, c)), sum(c in p and c in t for p, t in pairs),
                  sum(c in p and c not in t for p, t in pairs), sum(c not in p and c in t for p, t in pairs))
            for c in classes]


def micro(scores: Sequence[Score], name: str = "micro") -> Score:
    """Pooled counts over classes."""
    return Score(name, sum(s.tp for s in scores), sum(s.fp for s in scores), sum(s.fn for s in scores))


def positive_codes(sentence_labels: Iterable[Iterable[str]]) -> set[int]:
    """Findings with a positive mention in any sentence of a report."""
    return {code_of(x) for labels in sentence_labels for x in labels if x.endswith("+")}


def signed_label_names() -> dict[str, str]:
    """Readable names of the 49 signed labels (``"2+"`` → ``"Pleural Effusion +"``)."""
    return {label: f"{FINDINGS[code_of(label)]} {label[-1]}" if label != "25" else "No Mention"
            for label in LABEL_INDEX}


def markdown_table(scores: Sequence[Score], first: str = "finding") -> str:
    """A markdown table of scores, skipping classes with neither truth nor predictions."""
    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    rows = [f"| {first} | support | TP | FP | FN | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {s.name} | {s.support} | {s.tp} | {s.fp} | {s.fn} | {fmt(s.precision)} | {fmt(s.recall)} | {fmt(s.f1)} |"
             for s in scores if s.support or s.fp]
    return "\n".join(rows)
