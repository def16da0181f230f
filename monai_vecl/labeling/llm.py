"""What every LLM backend shares: prompt, strict parse, one repair attempt, then the rules fallback.

Per run the counters say how each sentence an LLM was asked about got its labels: valid on the first try
(``valid_first``), after the repair prompt (``repaired``), or from the rules labeler (``fallbacks``). With
constrained decoding (transformers backend, or a server that honours the JSON schema) every first answer is
valid; the repair and fallback path is for servers that ignore constraints and for failed requests.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence

from monai_vecl.labeling.base import Labeler, LabelResult
from monai_vecl.labeling.prompt import (PROMPT_VERSION, AnswerError, messages_for, parse_answer, repair_messages,
                                        system_prompt)
from monai_vecl.labeling.rules import RulesLabeler
from monai_vecl.labeling.screen import MAX_LABEL_CHARS, RULES, Screened

Conversation = list[dict[str, str]]
logger = logging.getLogger(__name__)


class LLMLabeler(Labeler):
    """Labels through a chat model; subclasses only implement :meth:`complete`.

    An invalid answer gets one repair prompt (the answer and the parser's complaint are sent back); a
    request that failed outright or a second invalid answer is labeled by ``fallback`` (rules by default),
    and the result says so. Text that addresses a model (screening reason ``instructions``) is never sent:
    the fallback labels it. A backend that raises on a batch does not stop the run: the batch is labeled by
    the fallback and counted in ``stats.errors``.

    Args:
        fallback: the rules labeler for what the LLM does not answer; its uncertainty policy is the one the
            prompt asks the LLM to follow.
        answer_format: ``codes`` or ``json`` (see :mod:`monai_vecl.labeling.prompt`).
        max_chars: labeling cap.
    """

    answer_format = "codes"

    def __init__(self, fallback: RulesLabeler | None = None, answer_format: str | None = None,
                 max_chars: int = MAX_LABEL_CHARS) -> None:
        super().__init__(max_chars)
        self.fallback = fallback or RulesLabeler(max_chars=max_chars)
        self.answer_format = answer_format or type(self).answer_format
        self.uncertainty = self.fallback.uncertainty
        self.system = system_prompt(self.uncertainty, self.answer_format)

    @property
    def prompt_identity(self) -> str:
        """Prompt version, answer format and uncertainty policy: part of the cache identity."""
        return f"{PROMPT_VERSION}-{self.answer_format}-{self.uncertainty}"

    @abstractmethod
    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        """Greedy answers to each conversation; ``None`` where the request failed for good."""

    def _label(self, items: Sequence[Screened]) -> list[LabelResult]:
        results: list[LabelResult | None] = [None] * len(items)
        ask = [i for i, s in enumerate(items) if s.action != RULES]
        try:
            self._answer([items[i].text for i in ask], ask, results)
        except Exception:  # noqa: BLE001 - a backend failure must not stop a labeling run
            logger.exception("%s failed on a batch of %d sentences; the rules labeler labels it",
                             type(self).__name__, len(ask))
            self.stats.errors += 1
        for i, result in enumerate(results):
            if result is None:
                if i in ask:
                    self.stats.fallbacks += 1
                results[i] = LabelResult(self.fallback.labels_of(items[i].text), self.fallback.backend,
                                         fallback=True)
        return results  # type: ignore[return-value]

    def _answer(self, texts: list[str], where: list[int], results: list[LabelResult | None]) -> None:
        if not texts:
            return
        answers = self._ask([messages_for(t, self.system) for t in texts])
        to_repair: list[tuple[int, str, str]] = []
        for k, answer in enumerate(answers):
            if answer is None:
                continue
            try:
                results[where[k]] = LabelResult(parse_answer(answer), self.backend)
                self.stats.valid_first += 1
            except AnswerError as err:
                to_repair.append((k, answer, str(err)))
        if to_repair:
            self.stats.repairs += len(to_repair)
            repaired = self._ask([repair_messages(texts[k], a, e, self.system, self.answer_format)
                                  for k, a, e in to_repair])
            for (k, _, _), answer in zip(to_repair, repaired):
                try:
                    results[where[k]] = LabelResult(parse_answer(answer or ""), self.backend, repaired=True)
                    self.stats.repaired += 1
                except AnswerError:
                    pass

    def _ask(self, conversations: Sequence[Conversation]) -> list[str | None]:
        self.stats.llm_calls += len(conversations)
        answers = self.complete(conversations)
        if len(answers) != len(conversations):
            raise RuntimeError(f"{type(self).__name__} returned {len(answers)} answers for {len(conversations)} prompts")
        return answers
