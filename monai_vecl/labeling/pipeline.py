"""Label a corpus of sentences once per distinct normalised sentence, through the cache, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monai_vecl.labeling.base import Labeler, LabelResult, LabelStats
from monai_vecl.labeling.cache import LabelCache
from monai_vecl.reports import normalize_sentence


def label_sentences(sentences: Sequence[str], labeler: Labeler, cache: LabelCache | None = None,
                    batch_size: int = 64, progress: Callable[[int], None] | None = None,
                    ) -> tuple[list[LabelResult], LabelStats]:
    """Labels for ``sentences`` (aligned by index) and the run's counters.

    Each distinct normalised sentence is labeled at most once; labels found in ``cache`` under the
    labeler's identity are reused, new ones are committed after every batch of ``batch_size``.
    ``progress`` receives the number of distinct sentences finished after each step. The LLM counters of
    the returned stats (calls, valid on first try, repaired, fell back to rules, errors) cover this run only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    keys = [normalize_sentence(s) if isinstance(s, str) else "" for s in sentences]
    first: dict[str, str] = {}
    for key, sentence in zip(keys, sentences):
        first.setdefault(key, sentence)
    before = labeler.stats.snapshot()
    done = cache.get_many(labeler.identity, first) if cache is not None else {}
    stats = LabelStats(sentences=len(sentences), distinct=len(first), cache_hits=len(done))
    if progress:
        progress(len(done))
    todo = [k for k in first if k not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        results = dict(zip(batch, labeler.label_batch([first[k] for k in batch])))
        if cache is not None:
            cache.put_many(labeler.identity, results)
        done.update(results)
        if progress:
            progress(len(batch))
    for name, value in labeler.stats.snapshot().items():
        setattr(stats, name, value - before[name])
    for key in first:
        stats.count_reason(done[key])
    out = [done[k] for k in keys]
    for result in out:
        stats.count_labels(result.labels)
    return out, stats
