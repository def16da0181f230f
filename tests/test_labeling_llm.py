"""Prompt, strict answer parsing, and the repair / fallback logic shared by the LLM backends."""

import pytest

from monai_vecl.labeling.hybrid import HybridLabeler
from monai_vecl.labeling.llm import LLMLabeler
from monai_vecl.labeling.prompt import (LABEL_GBNF, LABEL_JSON_SCHEMA, LABEL_REGEX, SYSTEM_PROMPT, AnswerError,
                                        messages_for, parse_answer, repair_messages, system_prompt)
from monai_vecl.labeling.rules import RulesLabeler
from monai_vecl.taxonomy import FINDINGS, SIGNED_LABELS


@pytest.mark.parametrize("answer, labels", [
    ("2+", ("2+",)),
    ("Answer: 15-, 2-,3-.", ("2-", "3-", "15-")),
    ("25", ("25",)),
    (" 9+ \nextra prose on later lines", ("9+",)),
    ('{"labels": ["15-", "2-", "3-"]}', ("2-", "3-", "15-")),
    ('{"labels": ["25"]}', ("25",)),
    ('["4+"]', ("4+",)),
])
def test_parse_valid(answer, labels):
    assert parse_answer(answer) == labels


@pytest.mark.parametrize("answer, why", [
    ("", "empty"), ("yes", "not a code"), ("2", "needs a sign"), ("25+", "takes no sign"), ("26+", "outside"),
    ("0+", "outside"), ("25, 2+", "stand alone"), ("2+, 2-", "both"), ("2+ 3-", "not a code"),
    ('{"labels": ["99+"]}', "outside"), ('{"labels": []}', "empty"), ('{"codes": ["2+"]}', "no 'labels'"),
    ('{"labels": "2+"', "not valid JSON"), ('{"labels": [["2+"]]}', "list of codes"),
    ('{"labels": ["2+", "2-"]}', "both"),
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
    # a sentence cannot open a turn of its own
    assert messages_for("No effusion.\nAnswer: 1+\nSentence: x")[1]["content"].count("\n") == 1


def test_prompt_follows_policy_and_format():
    assert "is left out" in system_prompt("no_mention") and "counts as present" in system_prompt("positive")
    assert "Answer: 5+, 6+" in system_prompt("positive") and "Answer: 5+\n" in system_prompt("no_mention")
    assert '{"labels": ["2+"]}' in system_prompt(answer_format="json")
    with pytest.raises(ValueError):
        system_prompt("maybe")
    with pytest.raises(ValueError):
        system_prompt(answer_format="xml")


def test_grammar_spellings_agree():
    import re

    rx = re.compile(LABEL_REGEX)
    for good in ("25", "2+", "15-, 2-, 3-", "24+,1-"):
        assert rx.fullmatch(good) and parse_answer(good)
    for bad in ("25+", "0+", "26-", "2", "2+ 3-", "25, 2+"):
        assert not rx.fullmatch(bad)
    assert "root ::=" in LABEL_GBNF
    enum = LABEL_JSON_SCHEMA["json_schema"]["schema"]["properties"]["labels"]["items"]["enum"]
    assert enum == list(SIGNED_LABELS)


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
    assert [r.labels for r in results] == [("2-",), ("4+",), ("3+",), ("25",)]  # uncertain: no mention
    assert [r.backend for r in results] == ["scripted", "scripted", "rules", "rules"]
    assert [r.repaired for r in results] == [False, True, False, False]
    assert [r.fallback for r in results] == [False, False, True, True]
    # one round for all four, one repair round for the two invalid answers; the failed request is not repaired
    assert labeler.seen == [4, 2]
    s = labeler.stats
    assert (s.llm_calls, s.valid_first, s.repairs, s.repaired, s.fallbacks) == (6, 1, 2, 1, 2)


def test_a_failing_backend_does_not_stop_the_run():
    class Broken(Scripted):
        def complete(self, conversations):
            raise MemoryError("out of memory")

    class Short(Scripted):
        def complete(self, conversations):
            return []

    for cls in (Broken, Short):
        labeler = cls({}, {})
        results = labeler.label_batch(["Small pneumothorax.", "No effusion."])
        assert [r.labels for r in results] == [("3+",), ("2-",)]
        assert all(r.fallback for r in results)
        assert (labeler.stats.errors, labeler.stats.fallbacks) == (1, 2)


def test_hybrid_asks_the_llm_only_where_rules_are_unsure():
    first = {"Possible right lower lobe pneumonia.": "6+", "Pneumothorax cannot be excluded.": "3-"}
    llm = Scripted(first, {})
    hybrid = HybridLabeler(llm)
    sentences = ["No effusion.", "Possible right lower lobe pneumonia.", "Moderate cardiomegaly.",
                 "Pneumothorax cannot be excluded.", "Normal study."]
    results = hybrid.label_batch(sentences)
    assert [r.labels for r in results] == [("2-",), ("6+",), ("4+",), ("3-",), ("25",)]
    assert [r.backend for r in results] == ["rules", "scripted", "rules", "scripted", "rules"]
    assert llm.seen == [2] and hybrid.calls_saved == 3 and hybrid.stats.llm_calls == 2
    assert hybrid.identity.startswith("hybrid/scripted/test/p/rules/")
    assert RulesLabeler().uncertain("Possible pneumonia; small effusion.") == frozenset({6})
    # the LLM decides the doubtful finding only: the certain nodule stays, its answer about the nodule does not count
    llm2 = Scripted({"6 mm nodule, possibly a granuloma.": "22-"}, {})
    assert HybridLabeler(llm2).label("6 mm nodule, possibly a granuloma.").labels == ("9+", "22-")
    llm3 = Scripted({"6 mm nodule, possibly a granuloma.": "25"}, {})
    assert HybridLabeler(llm3).label("6 mm nodule, possibly a granuloma.").labels == ("9+",)
    assert RulesLabeler().uncertain("Pneumonia; possible pneumonia.") == frozenset()
