"""The labeler interface: a batch of sentences in, one validated signed-label set per sentence out.

Every labeler screens its input first (:mod:`monai_vecl.labeling.screen`): empty, binary and non-English text
is rejected with a reason and labeled No Mention without asking the backend; text that addresses a model goes
to the rules labeler; very long text is cut to the labeling cap. Subclasses implement :meth:`Labeler._label`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from monai_vecl.labeling.screen import MAX_LABEL_CHARS, REJECT, RULES, Screened, screen
from monai_vecl.taxonomy import NO_MENTION_LABEL, normalize_label_set


@dataclass(frozen=True)
class LabelResult:
    """Signed labels of one sentence and the backend that produced them.

    ``backend`` is ``"rules"``, ``"transformers"``, ``"openai"`` or ``"rejected"``; ``repaired`` is set when the
    LLM's first answer was invalid and a repair prompt fixed it; ``fallback`` when the rules backend had to
    answer instead; ``reason`` says why a sentence was rejected, kept from the LLM or truncated
    (:data:`monai_vecl.labeling.screen.REASONS`).
    """

    labels: tuple[str, ...]
    backend: str
    repaired: bool = False
    fallback: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", normalize_label_set(self.labels))


@dataclass
class LabelStats:
    """Counters a labeling run reports in its summary.

    ``llm_calls`` counts requests (first tries and repairs); of the sentences an LLM was asked about,
    ``valid_first`` were answered validly on the first try, ``repaired`` after the repair prompt, and
    ``fallbacks`` by the rules labeler (``repairs`` counts repair prompts sent). ``rejected`` and ``flagged``
    count screening outcomes by reason; ``errors`` counts batches whose backend raised (labeled by rules).
    """

    sentences: int = 0
    distinct: int = 0
    cache_hits: int = 0
    llm_calls: int = 0
    valid_first: int = 0
    repairs: int = 0
    repaired: int = 0
    fallbacks: int = 0
    errors: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)

    COUNTERS = ("llm_calls", "valid_first", "repairs", "repaired", "fallbacks", "errors")

    def count_labels(self, labels: Sequence[str]) -> None:
        for label in labels:
            self.label_counts[label] = self.label_counts.get(label, 0) + 1

    def count_reason(self, result: LabelResult) -> None:
        if result.reason:
            table = self.rejected if result.backend == "rejected" else self.flagged
            table[result.reason] = table.get(result.reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """The additive counters, to take differences between two points of a run."""
        return {name: getattr(self, name) for name in self.COUNTERS}

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Labeler(ABC):
    """Base class of every backend; ``identity`` keys the cache, so it must change whenever answers may.

    Args:
        max_chars: labeling cap: longer sentences are labeled on their first ``max_chars`` characters.
    """

    backend: str = ""

    def __init__(self, max_chars: int = MAX_LABEL_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.max_chars = max_chars
        self.stats = LabelStats()

    @property
    @abstractmethod
    def identity(self) -> str:
        """``backend/model/prompt-or-rules-version``: labels from different identities never mix in a cache."""

    @abstractmethod
    def _label(self, items: Sequence[Screened]) -> list[LabelResult]:
        """Label screened sentences (action ``label`` or ``rules``); aligned with ``items`` by index."""

    def label_batch(self, sentences: Sequence[str]) -> list[LabelResult]:
        """Label each sentence; the result list aligns with ``sentences`` by index. Never raises on content."""
        screened = [screen(s, self.max_chars) for s in sentences]
        todo = [i for i, s in enumerate(screened) if s.action != REJECT]
        results: list[LabelResult | None] = [None] * len(sentences)
        for i, s in enumerate(screened):
            if s.action == REJECT:
                results[i] = LabelResult((NO_MENTION_LABEL,), "rejected", reason=s.reason)
        if todo:
            labeled = self._label([screened[i] for i in todo])
            if len(labeled) != len(todo):
                raise RuntimeError(f"{type(self).__name__} returned {len(labeled)} results for {len(todo)} sentences")
            for i, result in zip(todo, labeled):
                reason = screened[i].reason
                results[i] = result if result.reason or not reason else LabelResult(
                    result.labels, result.backend, result.repaired, result.fallback, reason)
        return results  # type: ignore[return-value]

    def label(self, sentence: str) -> LabelResult:
        """Label one sentence."""
        return self.label_batch([sentence])[0]


__all__ = ["LabelResult", "LabelStats", "Labeler", "RULES"]
