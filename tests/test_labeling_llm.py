"""Prompt, strict answer parsing, and the repair / fallback logic shared by the LLM backends."""

import pytest

from monai_vecl.labeling.llm import LLMLabeler
from monai_vecl.labeling.prompt import SYSTEM_PROMPT, AnswerError, messages_for, parse_answer, repair_messages
from monai_vecl.taxonomy import FINDINGS


@pytest.mark.parametrize("answer, labels", [
    ("2+", ("2+",)),
    ("Answer: 15-, 2-,3-.", ("2-", "3-", "15-")),
    ("25", ("25",)),
    (" 9+ \nextra prose on later lines", ("9+",)),
])
def test_parse_valid(answer, labels):
    assert parse_answer(answer) == labels


@pytest.mark.parametrize("answer, why", [
    ("", "empty"), ("yes", "not a code"), ("2", "needs a sign"), ("25+", "takes no sign"), ("26+", "outside"),
    ("0+", "outside"), ("25, 2+", "stand alone"), ("2+, 2-", "both"), ("2+ 3-", "not a code"),
])
def test_parse_rejects(answer, why):
    with pytest.raises(AnswerError, match=why):
        parse_answer(answer)


def test_prompt_lists_every_finding_and_repair_carries_the_error():
    for code, name in FINDINGS.items():
        assert f"{code}: {name}" in SYSTEM_PROMPT
    msgs = repair_messages("No effusion.", "yes", "bad code")
    assert msgs[:2] == messages_for("No effusion.")
    assert msgs[2] == {"role": "assistant", "content": "yes"}
    assert "bad code" in msgs[3]["content"]


class Scripted(LLMLabeler):
    """Answers from a table: first-round answer and repair answer per sentence; None = request failed."""

    backend = "scripted"
    identity = "scripted/test/p"

    def __init__(self, first, repair):
        super().__init__()
        self.first, self.repair, self.seen = first, repair, []

    def complete(self, conversations):
        self.seen.append(len(conversations))
        out = []
        for c in conversations:
            sentence = c[1]["content"].split("Sentence: ")[1].split("\n")[0]
            out.append((self.repair if len(c) > 2 else self.first)[sentence])
        return out


def test_malformed_answers_get_one_repair_then_rules():
    first = {"No effusion.": "2-", "Big heart.": "cardiomegaly!", "Small pneumothorax.": "3+, 3-",
             "Possible pneumonia.": None}
    repair = {"Big heart.": "4+", "Small pneumothorax.": "still wrong"}
    labeler = Scripted(first, repair)
    results = labeler.label_batch(list(first))
    assert [r.labels for r in results] == [("2-",), ("4+",), ("3+",), ("6+",)]
    assert [r.backend for r in results] == ["scripted", "scripted", "rules", "rules"]
    assert [r.repaired for r in results] == [False, True, False, False]
    assert [r.fallback for r in results] == [False, False, True, True]
    # one round for all four, one repair round for the two invalid answers; the failed request is not repaired
    assert labeler.seen == [4, 2]
    assert (labeler.stats.llm_calls, labeler.stats.repairs, labeler.stats.fallbacks) == (6, 2, 2)


def test_wrong_answer_count_is_an_error():
    class Short(Scripted):
        def complete(self, conversations):
            return []

    with pytest.raises(RuntimeError, match="0 answers for 1"):
        Short({}, {}).label_batch(["x"])
