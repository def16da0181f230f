"""SQLite label cache and the labeling pipeline that goes through it."""

import sqlite3

from monai_vecl.labeling import LabelCache, LabelResult, RulesLabeler, label_sentences


def test_cache_roundtrip_identity_and_first_label_wins(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    with LabelCache(path) as cache:
        cache.put_many("a", {"no effusion": LabelResult(("2-",), "rules"),
                             "big heart": LabelResult(("4+",), "openai", repaired=True)})
        cache.put_many("a", {"no effusion": LabelResult(("2+",), "rules")})
        cache.put_many("b", {"no effusion": LabelResult(("25",), "rules", fallback=True)})
        assert cache.count() == 3 and cache.count("a") == 2
        assert cache.identities() == ["a", "b"]
    with LabelCache(path) as cache:  # persisted
        got = cache.get_many("a", ["no effusion", "big heart", "missing"])
        assert got == {"no effusion": LabelResult(("2-",), "rules"),
                       "big heart": LabelResult(("4+",), "openai", repaired=True)}
        assert cache.get_many("b", ["no effusion"])["no effusion"].fallback
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_keys_are_chunked(tmp_path):
    keys = {f"sentence {i}": LabelResult(("25",), "rules") for i in range(1200)}
    with LabelCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("x", keys)
        assert len(cache.get_many("x", list(keys))) == 1200


class Counting(RulesLabeler):
    def __init__(self):
        super().__init__()
        self.labeled = []

    def label_batch(self, sentences):
        self.labeled.extend(sentences)
        return super().label_batch(sentences)


def test_pipeline_labels_each_distinct_sentence_once(tmp_path):
    sentences = ["No effusion.", "no  effusion", "Small pneumothorax.", "No effusion.", "Normal."]
    progress = []
    with LabelCache(tmp_path / "c.sqlite") as cache:
        labeler = Counting()
        results, stats = label_sentences(sentences, labeler, cache, batch_size=2, progress=progress.append)
        assert [r.labels for r in results] == [("2-",), ("2-",), ("3+",), ("2-",), ("25",)]
        assert labeler.labeled == ["No effusion.", "Small pneumothorax.", "Normal."]
        assert (stats.sentences, stats.distinct, stats.cache_hits) == (5, 3, 0)
        assert stats.label_counts == {"2-": 3, "3+": 1, "25": 1}
        assert sum(progress) == 3

        again = Counting()
        results2, stats2 = label_sentences(sentences + ["New one."], again, cache)
        assert again.labeled == ["New one."]
        assert stats2.cache_hits == 3 and results2[:5] == results
