"""The labeler interface: a batch of sentences in, one validated signed-label set per sentence out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from monai_vecl.taxonomy import normalize_label_set


@dataclass(frozen=True)
class LabelResult:
    """Signed labels of one sentence and the backend that produced them.

    ``backend`` is ``"rules"``, ``"transformers"`` or ``"openai"``; ``repaired`` is set when the LLM's first
    answer was invalid and a repair prompt fixed it; ``fallback`` when the rules backend had to answer instead.
    """

    labels: tuple[str, ...]
    backend: str
    repaired: bool = False
    fallback: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", normalize_label_set(self.labels))


@dataclass
class LabelStats:
    """Counters a labeling run reports in its summary."""

    sentences: int = 0
    distinct: int = 0
    cache_hits: int = 0
    llm_calls: int = 0
    repairs: int = 0
    fallbacks: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)

    def count_labels(self, labels: Sequence[str]) -> None:
        for label in labels:
            self.label_counts[label] = self.label_counts.get(label, 0) + 1


class Labeler(ABC):
    """Base class of every backend; ``identity`` keys the cache, so it must change whenever answers may."""

    backend: str = ""

    def __init__(self) -> None:
        self.stats = LabelStats()

    @property
    @abstractmethod
    def identity(self) -> str:
        """``backend/model/prompt-or-rules-version``: labels from different identities never mix in a cache."""

    @abstractmethod
    def label_batch(self, sentences: Sequence[str]) -> list[LabelResult]:
        """Label each sentence; the result list aligns with ``sentences`` by index."""

    def label(self, sentence: str) -> LabelResult:
        """Label one sentence."""
        return self.label_batch([sentence])[0]
