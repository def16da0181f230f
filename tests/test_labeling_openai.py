"""OpenAI-compatible backend against a local stand-in server: good, malformed, failing and slow answers."""

import pytest

from labeling_openai_standin import StandIn
from monai_vecl.labeling import build_labeler
from monai_vecl.labeling.rules import RulesLabeler


def _labeler(url, **kw):
    options = {"backend": "openai", "base_url": url, "model": "stand-in", "concurrency": 3, "timeout": 5.0,
               "retries": 2, "backoff": 0.01}
    options.update(kw)
    return build_labeler(options)


def test_good_malformed_and_failing_answers():
    sentences = ["No effusion.", "Small pneumothorax.", "REPAIRABLE heart.", "MALFORMED no pneumothorax.",
                 "FAIL moderate cardiomegaly.", "FLAKY small effusion.", "GARBAGE no edema."]
    with StandIn(delay=0.05) as server:  # the delay makes requests overlap
        labeler = _labeler(server.url)
        results = labeler.label_batch(sentences)
        labeler.close()
    rules = RulesLabeler()
    by = dict(zip(sentences, results))
    assert by["No effusion."].labels == ("2-",) and by["No effusion."].backend == "openai"
    assert by["REPAIRABLE heart."].labels == ("2+",) and by["REPAIRABLE heart."].repaired
    assert by["FLAKY small effusion."].backend == "openai"  # retried after the 503
    for s in ("MALFORMED no pneumothorax.", "FAIL moderate cardiomegaly.", "GARBAGE no edema."):
        assert by[s].fallback and by[s].backend == "rules" and by[s].labels == rules.labels_of(s)
    # FAIL: 3 attempts; MALFORMED: first answer + repair; GARBAGE: 3 unreadable bodies
    assert server.requests["FAIL moderate cardiomegaly."] == 3
    assert server.requests["MALFORMED no pneumothorax."] == 2
    assert server.requests["FLAKY small effusion."] == 2
    assert server.requests["GARBAGE no edema."] == 3
    assert (labeler.stats.repairs, labeler.stats.fallbacks, labeler.failed_requests) == (2, 3, 2)
    assert 1 < server.max_in_flight <= 3
    assert labeler.identity == "openai/stand-in/p1"


def test_timeout_falls_back_and_concurrency_is_bounded():
    with StandIn(delay=0.05, slow_seconds=2.5) as server:
        labeler = _labeler(server.url, concurrency=2, timeout=1.0, retries=1)
        results = labeler.label_batch([f"Effusion number {i}." for i in range(8)] + ["SLOW effusion."])
        labeler.close()
    assert server.max_in_flight <= 2
    assert all(r.backend == "openai" for r in results[:8])
    assert results[8].fallback and server.requests["SLOW effusion."] == 2


def test_configuration_errors(monkeypatch):
    with pytest.raises(ValueError, match="concurrency"):
        _labeler("http://127.0.0.1:9/v1", concurrency=0)
    monkeypatch.delenv("VECL_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="VECL_TEST_KEY"):
        _labeler("http://127.0.0.1:9/v1", api_key_env="VECL_TEST_KEY")
