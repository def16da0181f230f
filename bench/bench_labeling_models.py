"""Packaged local LLMs vs the rules labeler on a fixed, seeded sample of Open-I reports (docs/labeling.md).

Sample: for each finding with >= 15 positive reports in Open-I's MeSH-derived gold, ``--per-finding`` reports
positive for it, plus ``--normal`` reports with no finding, drawn with ``--seed``; every FINDINGS + IMPRESSION
sentence of those reports is labeled, and a report is positive for a finding when any sentence has ``k+``.
Reported per labeler: report-level precision / recall / F1 per finding and macro (findings with >= 3
positives in the sample), seconds per distinct sentence, peak memory (each model runs in its own process),
and the LLM counters (valid on first try, repaired, fell back to rules). A hybrid row per model uses the
LLM only for the sentences the rules labeler is unsure of (doubtful mentions) and counts the calls saved.

``--decoding N`` also measures, on the first N distinct sentences, how the transformers backend's answers
fare without constraints (parse, one repair, rules fallback), with this package's label-grammar logits
processor, and with llguidance (a maintained structured-generation library, regex grammar), per model.

LLM labels are kept in a SQLite cache (``--cache``), so a rerun only labels what is new; timings of a
labeler are those of the run that labeled it. Run with ``nice -n 15`` on a shared machine.

Usage: nice -n 15 python bench/bench_labeling_models.py [--models smollm2-135m qwen2.5-coder-0.5b ...]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from monai_vecl.labeling import LabelCache, RulesLabeler, label_sentences
from monai_vecl.labeling.openi import read_openi_reports
from monai_vecl.labeling.quality import micro, positive_codes, score_sets
from monai_vecl.reports import normalize_sentence, report_sentences
from monai_vecl.taxonomy import FINDINGS

#: Packaged instruct models (gemma3-270m ships as a pretrained base model without a chat template: not one).
DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def sample(seed: int, per_finding: int, normal: int):
    """(reports, their sentences) of the seeded, finding-stratified sample."""
    reports = [r for r in read_openi_reports() if (r.findings + r.impression).strip()]
    support = Counter(c for r in reports for c in r.codes)
    findings = sorted(c for c, n in support.items() if n >= 15)
    rng = random.Random(seed)
    chosen: list[int] = []
    for code in findings:
        pool = [i for i, r in enumerate(reports) if code in r.codes and i not in chosen]
        rng.shuffle(pool)
        chosen += pool[:per_finding]
    pool = [i for i, r in enumerate(reports) if not r.codes and i not in chosen]
    rng.shuffle(pool)
    chosen += pool[:normal]
    picked = [reports[i] for i in sorted(chosen)]
    return picked, [report_sentences(r.text) for r in picked]


def distinct(sentences: list[list[str]]) -> list[str]:
    first: dict[str, str] = {}
    for s in (s for ss in sentences for s in ss):
        first.setdefault(normalize_sentence(s), s)
    return list(first.values())


def report_scores(labels_of: dict[str, tuple[str, ...]], reports, sentences):
    predicted = [positive_codes(labels_of[normalize_sentence(s)] for s in ss) for ss in sentences]
    return score_sets(predicted, [r.codes for r in reports], FINDINGS, FINDINGS)


def macro(scores, min_support: int = 3) -> float:
    kept = [s for s in scores if s.support >= min_support]
    return sum(s.f1 or 0.0 for s in kept) / len(kept)


# --------------------------------------------------------------------------- one model, in a child process

def run_model(args) -> dict:
    """Label the sample with one packaged model (constrained), and optionally the decoding comparison."""
    import torch

    from monai_vecl.labeling.transformers_backend import TransformersLabeler

    torch.set_num_threads(args.threads)
    reports, sentences = sample(args.seed, args.per_finding, args.normal)
    todo = distinct(sentences)
    out: dict = {"model": args.only}
    start = time.perf_counter()
    labeler = TransformersLabeler(args.only, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  fallback=RulesLabeler())
    out["load_s"] = time.perf_counter() - start
    out["identity"] = labeler.identity
    with LabelCache(args.cache) as cache:
        start = time.perf_counter()
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            print(f"  {args.only}: {done[0]}/{len(todo)} sentences, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)

        results, stats = label_sentences(todo, labeler, cache, batch_size=args.batch_size, progress=progress)
        elapsed = time.perf_counter() - start
    labeled = len(todo) - stats.cache_hits
    if labeled:  # timings and counters are those of the run that labeled the sentences
        save_timing(args.cache, labeler.identity, {"asked": labeled, "s_per_sentence": elapsed / labeled,
                                                   "valid_first": stats.valid_first, "repaired": stats.repaired,
                                                   "fallbacks": stats.fallbacks})
    timing = load_timing(args.cache, labeler.identity)
    out["labels"] = {normalize_sentence(s): list(r.labels) for s, r in zip(todo, results)}
    out["s_per_sentence"] = timing["s_per_sentence"]
    # how each sentence of the sample got its labels (from the cached flags, whichever run labeled it)
    asked = [r for r in results if r.backend != "rejected" and r.reason != "instructions"]
    out["counts"] = {"asked": len(asked), "valid_first": sum(r.backend == "transformers" and not r.repaired for r in asked),
                     "repaired": sum(r.repaired for r in asked), "fallbacks": sum(r.fallback for r in asked)}
    if args.decoding:
        out["decoding"] = decoding_comparison(labeler, todo[: args.decoding])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _timing_path(cache: Path) -> Path:
    return cache.with_suffix(".timing.json")


def save_timing(cache: Path, identity: str, record: dict) -> None:
    path = _timing_path(cache)
    table = json.loads(path.read_text()) if path.exists() else {}
    table[identity] = record
    path.write_text(json.dumps(table, indent=1))


def load_timing(cache: Path, identity: str) -> dict:
    return json.loads(_timing_path(cache).read_text())[identity]


class LLGuidanceProcessor:
    """llguidance's token masks for :data:`LABEL_REGEX`, as a transformers logits processor (one matcher per row)."""

    def __init__(self, tokenizer, eos_ids, vocab_size: int) -> None:
        import llguidance
        import llguidance.hf

        self.llguidance = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos_ids[0])
        from monai_vecl.labeling.prompt import LABEL_REGEX

        self.grammar = llguidance.LLMatcher.grammar_from_regex(LABEL_REGEX)
        self.eos = list(eos_ids)

    def start(self, prompt_length: int, max_new_tokens: int) -> None:
        self.prompt_length, self.matchers, self.mask = prompt_length, None, None

    def __call__(self, input_ids, scores):
        import llguidance.torch as lt

        rows = input_ids.shape[0]
        if self.matchers is None:
            self.matchers = [self.llguidance.LLMatcher(self.tokenizer, self.grammar) for _ in range(rows)]
            self.mask = lt.allocate_token_bitmask(rows, self.tokenizer.vocab_size)
        elif input_ids.shape[1] > self.prompt_length:
            for i, m in enumerate(self.matchers):
                if not m.is_stopped():
                    m.consume_token(int(input_ids[i, -1]))
        for i, m in enumerate(self.matchers):
            lt.fill_next_token_bitmask(m, self.mask, i)
        view = scores[:, : self.tokenizer.vocab_size]
        lt.apply_token_bitmask_inplace(view, self.mask)
        return scores


def decoding_comparison(labeler, todo: list[str]) -> dict:
    """Free decoding vs the label-grammar processor vs llguidance on the same sentences."""
    out = {}
    grammar = labeler.grammar()
    import importlib.util

    modes = ("free", "grammar") + (("llguidance",) if importlib.util.find_spec("llguidance") else ())
    for mode in modes:
        labeler.stats = type(labeler.stats)()
        if mode == "free":
            labeler.constrained = False
        else:
            labeler.constrained = True
            labeler._grammar = grammar if mode == "grammar" else LLGuidanceProcessor(
                labeler.tokenizer, grammar.eos, grammar.vocab_size)
        start = time.perf_counter()
        labeler.label_batch(todo)
        elapsed = time.perf_counter() - start
        s = labeler.stats
        out[mode] = {"n": len(todo), "valid_first": s.valid_first, "repaired": s.repaired, "fallbacks": s.fallbacks,
                     "s_per_sentence": elapsed / len(todo)}
    labeler._grammar, labeler.constrained = grammar, True
    return out


# --------------------------------------------------------------------------- report

def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-finding", type=int, default=2)
    parser.add_argument("--normal", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decoding", type=int, default=0, help="sentences for the decoding comparison (0: skip)")
    parser.add_argument("--decoding-models", nargs="*", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--cache", type=Path, default=Path("var/bench_labeling_models.sqlite"))
    parser.add_argument("--reuse", action="store_true",
                        help="report a model's saved results of the last run on the same sample instead of rerunning it")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    if args.only:
        args.json.write_text(json.dumps(run_model(args)))
        return

    from monai_vecl.labeling.models import PACKAGED, installed

    reports, sentences = sample(args.seed, args.per_finding, args.normal)
    todo = distinct(sentences)
    support = Counter(c for r in reports for c in r.codes)
    print(f"Open-I sample (seed {args.seed}): {len(reports)} reports ({args.per_finding} per finding with >= 15 "
          f"positives, {args.normal} with none), {sum(map(len, sentences))} sentences, {len(todo)} distinct")
    rules = RulesLabeler()
    start = time.perf_counter()
    rules_labels = {normalize_sentence(s): rules.labels_of(s) for s in todo}
    rules_s = (time.perf_counter() - start) / len(todo)
    rows = [("rules (default, uncertain → no mention)", rules_labels, rules_s, None, None)]
    positive = RulesLabeler(uncertainty="positive")
    rows.append(("rules (uncertain → positive)", {normalize_sentence(s): positive.labels_of(s) for s in todo},
                 rules_s, None, None))
    unsure = [s for s in todo if rules.uncertain(s)]
    from monai_vecl.labeling.hybrid import merge_doubtful
    results = {}
    for name in args.models:
        if name not in PACKAGED or not installed(name):
            print(f"- {name}: not installed, skipped")
            continue
        out = args.cache.with_name(f"{args.cache.stem}.{name}.json")
        cmd = [sys.executable, __file__, "--only", name, "--json", str(out), "--cache", str(args.cache),
               "--seed", str(args.seed), "--per-finding", str(args.per_finding), "--normal", str(args.normal),
               "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
               "--threads", str(args.threads), "--decoding", str(args.decoding if name in args.decoding_models else 0)]
        keys = {normalize_sentence(s) for s in todo}
        reuse = args.reuse and out.exists() and set(json.loads(out.read_text())["labels"]) == keys
        print(f"- {name}: {'results of the last run on this sample' if reuse else 'labeling ...'}", flush=True)
        if not reuse and (subprocess.run(cmd).returncode != 0 or not out.exists()):
            print(f"- {name}: failed, skipped")
            continue
        res = json.loads(out.read_text())
        results[name] = res
        llm = {k: tuple(v) for k, v in res["labels"].items()}
        rows.append((f"{name} (constrained, few-shot)", llm, res["s_per_sentence"], res["peak_rss_mb"], res))
        hybrid = dict(rules_labels)
        for s in unsure:
            labels, doubtful = rules.analyse(s)
            hybrid[normalize_sentence(s)] = merge_doubtful(labels, doubtful, llm[normalize_sentence(s)])
        rows.append((f"hybrid: rules + {name} on unsure sentences", hybrid,
                     res["s_per_sentence"] * len(unsure) / len(todo), res["peak_rss_mb"], None))

    kept = [c for c in FINDINGS if support[c] >= 3]
    print(f"\n### Model / backend comparison (report level vs MeSH, macro over {len(kept)} findings with >= 3 "
          f"positives in the sample)\n")
    print("| labeler | macro F1 | micro P | micro R | micro F1 | s / sentence | peak memory | valid 1st try | "
          "repaired | fell back |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table = {}
    for name, labels, s_per, rss, res in rows:
        scores = report_scores(labels, reports, sentences)
        table[name] = scores
        m = micro(scores)
        counts = res["counts"] if res else None
        c = (f"{counts['valid_first']}/{counts['asked']} | {counts['repaired']} | {counts['fallbacks']}" if counts
             else "– | – | –")
        print(f"| {name} | {macro(scores):.3f} | {fmt(m.precision)} | {fmt(m.recall)} | {fmt(m.f1)} | "
              f"{s_per:.3f} | {f'{rss:,.0f} MB' if rss else '–'} | {c} |")
    print(f"\nHybrid: {len(unsure)} of {len(todo)} distinct sentences have a doubtful mention and go to the LLM; "
          f"{len(todo) - len(unsure)} LLM calls saved ({1 - len(unsure) / len(todo):.0%}).")
    print("\n### Per finding F1 (report level)\n")
    names = list(table)
    short = [n.replace("rules (uncertain → positive)", "rules, positive").split(" (")[0]
             .replace("hybrid: rules + ", "hybrid ").replace(" on unsure sentences", "") for n in names]
    print("| finding | support | " + " | ".join(short) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for i, code in enumerate(FINDINGS):
        if code not in kept:
            continue
        cells = [fmt(table[n][i].f1) for n in names]
        print(f"| {FINDINGS[code]} | {support[code]} | " + " | ".join(cells) + " |")
    for name, res in results.items():
        if "decoding" in res:
            print(f"\n### Constrained decoding, {name} ({res['decoding']['free']['n']} distinct sentences)\n")
            print("| decoding | valid 1st try | repaired | fell back | s / sentence |")
            print("|---|---:|---:|---:|---:|")
            for mode, d in res["decoding"].items():
                label = {"free": "unconstrained (parse, repair, rules fallback)",
                         "grammar": "label-grammar logits processor (this package)",
                         "llguidance": "llguidance regex grammar"}[mode]
                print(f"| {label} | {d['valid_first']}/{d['n']} | {d['repaired']} | {d['fallbacks']} | "
                      f"{d['s_per_sentence']:.2f} |")


if __name__ == "__main__":
    main()
