"""Labeling quality and speed: reproduces the tables and figures of docs/labeling.md.

Quality
  * phantom: every sentence's signed labels vs the generator's ground truth (per signed label), under the
    phantom's own convention (hedged findings positive) and under the default policy;
  * Open-I (torchxrayvision's NLMCXR_reports.tgz, read at run time): report-level positive findings vs the
    reports' MeSH major headings (per finding, macro F1 over findings with >= 15 positives), for each
    uncertainty policy of the rules labeler, under the benchmark's MeSH mapping and the broader one;
  * SmolLM2-135M (``--llm-sample N``): exact-match rate, valid answers, repairs and fallbacks on N phantom
    sentences. The packaged models against the rules on Open-I: bench/bench_labeling_models.py.
Speed (all baselines measured in the same run)
  * rules sentences/s labeling every sentence, vs the cached pipeline that labels each distinct one once;
  * distinct/total sentence ratio on Open-I = the share of LLM calls a cache keeps;
  * SmolLM2 prompts/s with the shared system-prompt KV cache vs without (answers must be identical).

Usage: python bench/bench_labeling.py [--phantom-n 400] [--llm-sample 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from monai_vecl.data.manifest import read_manifest
from monai_vecl.labeling import LabelCache, RulesLabeler, label_sentences
from monai_vecl.labeling.openi import read_openi_reports
from monai_vecl.labeling.quality import markdown_table, micro, score_sets, signed_label_names
from monai_vecl.labeling.rules import DEFAULT_UNCERTAINTY, UNCERTAINTY_POLICIES
from monai_vecl.reports import report_sentences
from monai_vecl.taxonomy import SIGNED_LABELS


def phantom_sentences(n: int, workdir: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """Sentences and true labels of a freshly generated phantom (small images: only the reports matter)."""
    from monai_vecl.data.phantom import generate_phantom

    manifest = generate_phantom(workdir / "phantom", n_images=n, seed=0, image_size=64, workers=1)
    sentences, truth = [], []
    for record in read_manifest(manifest):
        sentences += record.sentences
        truth += [tuple(x) for x in record.sentence_labels]
    return sentences, truth


def phantom_quality(sentences: list[str], truth: list[tuple[str, ...]]) -> None:
    for policy, what in (("positive", "the phantom's convention: hedged findings positive"),
                         (DEFAULT_UNCERTAINTY, "the default policy")):
        predicted = [r.labels for r in label_sentences(sentences, RulesLabeler(uncertainty=policy))[0]]
        exact = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
        scores = score_sets(predicted, truth, SIGNED_LABELS, signed_label_names())
        m = micro(scores)
        print(f"\n### Phantom, rules labeler (uncertain → {policy}, {what}), sentence level ({len(truth)} "
              f"sentences, {len(set(sentences))} distinct): exact label-set match {exact:.3f}, micro precision "
              f"{m.precision:.3f}, recall {m.recall:.3f}\n")
        if policy == "positive":
            print(markdown_table(scores + [m], first="signed label"))


def openi_quality(reports) -> None:
    from monai_vecl.labeling.openi import MESH_CODES_BROAD, benchmark

    with_text = [r for r in reports if r.has_text]
    summary = []
    for mapping_name, mapping in (("benchmark", None), ("broad", MESH_CODES_BROAD)):
        for policy in UNCERTAINTY_POLICIES:
            scores, macro_f1 = benchmark(RulesLabeler(uncertainty=policy), with_text, mapping)
            kept = [s for s in scores if s.support >= 15]
            weakest = min(kept, key=lambda s: s.f1 or 0.0)
            summary.append((mapping_name, policy, macro_f1, len(kept), weakest, micro(scores)))
            if mapping is None and policy in ("no_mention", "positive"):
                print(f"\n### Open-I, rules labeler (uncertain → {policy}), report level vs MeSH "
                      f"({len(with_text)} reports with text; macro F1 {macro_f1:.3f} over {len(kept)} findings "
                      f"with >= 15 positives)\n")
                print(markdown_table(scores + [micro(scores)]))
    print("\n### Open-I, rules labeler: uncertainty policy and MeSH mapping\n")
    print("| MeSH mapping | uncertain → | macro F1 | findings | weakest | micro P | micro R | micro F1 |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for mapping_name, policy, macro_f1, n, weakest, m in summary:
        default = " (default)" if policy == DEFAULT_UNCERTAINTY else ""
        print(f"| {mapping_name} | {policy}{default} | {macro_f1:.3f} | {n} | {weakest.name} {weakest.f1:.2f} | "
              f"{m.precision:.2f} | {m.recall:.2f} | {m.f1:.2f} |")


def rules_speed(flat: list[str], workdir: Path) -> None:
    labeler = RulesLabeler()
    start = time.perf_counter()
    labeler.label_batch(flat)
    every = time.perf_counter() - start
    start = time.perf_counter()
    with LabelCache(workdir / "cache.sqlite") as cache:
        _, stats = label_sentences(flat, labeler, cache, batch_size=256)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        _, warm_stats = label_sentences(flat, labeler, cache, batch_size=256)
        warm = time.perf_counter() - start
    print("\n### Speed (Open-I sentences)\n")
    print(f"- sentences: {len(flat)}, distinct normalised: {stats.distinct} "
          f"(ratio {stats.distinct / len(flat):.3f}); a cache saves {len(flat) - stats.distinct} of {len(flat)} "
          f"LLM calls ({1 - stats.distinct / len(flat):.1%})")
    print(f"- rules, every sentence (baseline): {len(flat) / every:,.0f} sentences/s")
    print(f"- rules through the pipeline, cold SQLite cache: {len(flat) / cold:,.0f} sentences/s "
          f"({every / cold:.2f}x baseline)")
    print(f"- warm cache (all {warm_stats.cache_hits} hits): {len(flat) / warm:,.0f} sentences/s "
          f"({every / warm:.2f}x baseline)")


def llm_sample(sentences: list[str], truth: list[tuple[str, ...]], n: int) -> None:
    from monai_vecl.labeling import build_labeler
    from monai_vecl.labeling.prompt import messages_for

    picked = list(dict.fromkeys(sentences))[:n]
    truth_of = dict(zip(sentences, truth))
    start = time.perf_counter()
    labeler = build_labeler({"backend": "transformers", "batch_size": 8, "max_new_tokens": 16,
                             "fallback": {"uncertainty": "positive"}})  # the phantom's convention
    load = time.perf_counter() - start
    start = time.perf_counter()
    results = labeler.label_batch(picked)
    run = time.perf_counter() - start
    by_backend = {b: sum(r.backend == b for r in results) for b in ("transformers", "rules")}
    exact_llm = sum(r.labels == truth_of[s] for s, r in zip(picked, results) if r.backend == "transformers")
    exact_all = sum(r.labels == truth_of[s] for s, r in zip(picked, results))
    print(f"\n### SmolLM2-135M-Instruct (GGUF Q4_1 via transformers, constrained), {len(picked)} distinct phantom "
          f"sentences\n")
    print(f"- model load {load:.1f} s; labeling {run:.1f} s ({len(picked) / run:.2f} sentences/s incl. repairs)")
    print(f"- answered by the LLM: {by_backend['transformers']} (valid on the first try {labeler.stats.valid_first}, "
          f"after repair {labeler.stats.repaired}), by the rules fallback: {by_backend['rules']}; "
          f"LLM calls {labeler.stats.llm_calls} (constrained decoding)")
    print(f"- exact label-set match: LLM answers {exact_llm}/{by_backend['transformers']}, "
          f"overall {exact_all}/{len(picked)}")
    conversations = [messages_for(s, labeler.system) for s in picked]
    start = time.perf_counter()
    cached = labeler.complete(conversations)
    t_cached = time.perf_counter() - start
    labeler.prefix_cache = False
    start = time.perf_counter()
    plain = labeler.complete(conversations)
    t_plain = time.perf_counter() - start
    print(f"- prompts/s: plain left-padded batches (baseline) {len(picked) / t_plain:.2f}, shared system-prompt "
          f"KV cache {len(picked) / t_cached:.2f} ({t_plain / t_cached:.2f}x); identical answers: {cached == plain}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantom-n", type=int, default=400, help="phantom images (0: skip)")
    parser.add_argument("--llm-sample", type=int, default=0, help="phantom sentences for SmolLM2 (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        reports = read_openi_reports()
        sentences = [report_sentences(r.text) for r in reports]
        flat = [s for ss in sentences for s in ss]
        print(f"Open-I: {len(reports)} reports ({sum(r.has_text for r in reports)} with text), {len(flat)} "
              f"FINDINGS+IMPRESSION sentences")
        rules_speed(flat, workdir)
        openi_quality(reports)
        if args.phantom_n:
            p_sentences, p_truth = phantom_sentences(args.phantom_n, workdir)
            phantom_quality(p_sentences, p_truth)
            if args.llm_sample:
                llm_sample(p_sentences, p_truth, args.llm_sample)


if __name__ == "__main__":
    main()
