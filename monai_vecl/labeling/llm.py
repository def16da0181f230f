"""What every LLM backend shares: prompt, strict parse, one repair attempt, then the rules fallback."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from monai_vecl.labeling.base import Labeler, LabelResult
from monai_vecl.labeling.prompt import AnswerError, messages_for, parse_answer, repair_messages
from monai_vecl.labeling.rules import RulesLabeler

Conversation = list[dict[str, str]]


class LLMLabeler(Labeler):
    """Labels through a chat model; subclasses only implement :meth:`complete`.

    An invalid answer gets one repair prompt (the answer and the parser's complaint are sent back); a
    request that failed outright or a second invalid answer is labeled by ``fallback`` (rules by default),
    and the result says so.
    """

    def __init__(self, fallback: RulesLabeler | None = None) -> None:
        super().__init__()
        self.fallback = fallback or RulesLabeler()

    @abstractmethod
    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        """Greedy answers to each conversation; ``None`` where the request failed for good."""

    def label_batch(self, sentences: Sequence[str]) -> list[LabelResult]:
        results: list[LabelResult | None] = [None] * len(sentences)
        answers = self._ask([messages_for(s) for s in sentences])
        to_repair: list[tuple[int, str, str]] = []
        for i, answer in enumerate(answers):
            if answer is None:
                continue
            try:
                results[i] = LabelResult(parse_answer(answer), self.backend)
            except AnswerError as err:
                to_repair.append((i, answer, str(err)))
        if to_repair:
            self.stats.repairs += len(to_repair)
            repaired = self._ask([repair_messages(sentences[i], a, e) for i, a, e in to_repair])
            for (i, _, _), answer in zip(to_repair, repaired):
                try:
                    results[i] = LabelResult(parse_answer(answer or ""), self.backend, repaired=True)
                except AnswerError:
                    pass
        for i, result in enumerate(results):
            if result is None:
                self.stats.fallbacks += 1
                results[i] = LabelResult(self.fallback.labels_of(sentences[i]), self.fallback.backend, fallback=True)
        return results  # type: ignore[return-value]

    def _ask(self, conversations: Sequence[Conversation]) -> list[str | None]:
        self.stats.llm_calls += len(conversations)
        answers = self.complete(conversations)
        if len(answers) != len(conversations):
            raise RuntimeError(f"{type(self).__name__} returned {len(answers)} answers for {len(conversations)} prompts")
        return answers
