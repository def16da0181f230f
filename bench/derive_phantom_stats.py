"""Derive the label statistics the phantom generator samples from, out of the VECL reference LLM labels.

Source: WVeLong/VECL (MIT), MIMIC-CXR sentence labels by Llama-3.1-70B, one row per image
(see the data folder's README). The figures printed here are pasted into
``monai_vecl/data/phantom_stats.py``; the generator never reads the folder itself.

Usage: python bench/derive_phantom_stats.py [LABEL_DIR] [--top-patterns 120] [--top-neg-cells 60]
"""

from __future__ import annotations

import argparse
import csv
import pprint
from collections import Counter
from pathlib import Path

from monai_vecl.taxonomy import code_of, parse_cell

#: Findings the phantom draws into its images (taxonomy codes).
PHANTOM_CODES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 20)

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "vecl_mimic_llm_labels"


MODULE_TEMPLATE = '''"""Label statistics the phantom generator samples from, derived from real MIMIC-CXR labels.

Derived by ``bench/derive_phantom_stats.py`` (do not edit by hand) from the VECL reference
LLM labels of MIMIC-CXR (WVeLong/VECL, MIT: Llama-3.1-70B sentence labels, one row per image).
``positive_patterns``: the most frequent sets of positive findings per image (restricted to
the drawn codes) with their image counts; ``residual_prevalence``: per-finding rate among the
other images; ``negation_rate``: P(finding negated | not positive); ``negative_cells``: the most
frequent label sets of all-negative sentences (how negations are grouped into one sentence);
``negative_cell_rate``: how often an image has such a sentence when none of its findings is positive;
``n_no_mention_sentences``: per-image counts of No Mention sentences, sampled by the generator;
``n_negative_sentences``: per-image counts of distinct all-negative sentences, kept to compare
against (last bin = that or more)."""

STATS = {stats}

#: Taxonomy codes the phantom draws into its images.
PHANTOM_CODES: tuple[int, ...] = tuple(STATS["phantom_codes"])
'''


def rows(label_dir: Path, malformed: Counter):
    """Each image's labelled sentences as a list of label tuples (padding dropped).

    The reference labels hold a few cells that are not labels (sentence text the LLM echoed):
    they are left out and counted in ``malformed`` by file.
    """
    files = sorted(label_dir.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no label CSVs in {label_dir}")
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                sentences = []
                for text in row:
                    if not text.strip():
                        continue
                    try:
                        cell = parse_cell(text)
                    except ValueError:
                        malformed[path.name] += 1
                        continue
                    if cell is not None:
                        sentences.append(cell)
                yield sentences


def derive(label_dir: Path, top_patterns: int, top_neg_cells: int) -> dict:
    """Positive-pattern, negation, negative-cell and sentence-count statistics."""
    n_images = 0
    patterns: Counter = Counter()
    absent: Counter = Counter()
    negated_when_absent: Counter = Counter()
    neg_cells: Counter = Counter()
    positive_sets: Counter = Counter()
    consistent_neg_cells: Counter = Counter()  # negations of findings the same report does not call positive
    n_neg_sentences: Counter = Counter()
    n_no_mention: Counter = Counter()
    malformed: Counter = Counter()
    for sentences in rows(label_dir, malformed):
        n_images += 1
        pos = {code_of(x) for s in sentences for x in s if x.endswith("+")}
        neg = {code_of(x) for s in sentences for x in s if x.endswith("-")}
        patterns[tuple(sorted(pos & set(PHANTOM_CODES)))] += 1
        positive_sets[frozenset(pos)] += 1
        for code in range(1, 25):
            if code not in pos:
                absent[code] += 1
                negated_when_absent[code] += code in neg
        negs = {s for s in sentences if all(x.endswith("-") for x in s)}
        neg_cells.update(negs)
        consistent_neg_cells.update(s for s in negs if not {code_of(x) for x in s} & pos)
        n_neg_sentences[min(len(negs), 8)] += 1
        n_no_mention[min(sum(s == ("25",) for s in sentences), 6)] += 1
    top = patterns.most_common(top_patterns)
    cells = neg_cells.most_common(top_neg_cells)
    # Images whose pattern is not among the top ones are drawn finding by finding from these marginals.
    rest = [(p, c) for p, c in patterns.items() if (p, c) not in set(top)]
    n_rest = sum(c for _, c in rest)
    return {
        "phantom_codes": PHANTOM_CODES,
        "n_images": n_images,
        "prevalence": {k: round(sum(c for p, c in patterns.items() if k in p) / n_images, 4) for k in PHANTOM_CODES},
        "residual_prevalence": {k: round(sum(c for p, c in rest if k in p) / n_rest, 4) for k in PHANTOM_CODES},
        "malformed_cells_skipped": dict(malformed),
        "pattern_coverage": round(sum(c for _, c in top) / n_images, 4),
        "positive_patterns": top,
        "negation_rate": {k: round(negated_when_absent[k] / absent[k], 4) for k in range(1, 25) if absent[k]},
        "negative_cell_coverage": round(sum(c for _, c in cells) / sum(neg_cells.values()), 4),
        "negative_cells": [(tuple(code_of(x) for x in cell), c) for cell, c in cells],
        # P(an image has this negative sentence | none of its findings is positive in that image)
        "negative_cell_rate": [
            (codes, round(consistent_neg_cells[cell] / sum(n for pos, n in positive_sets.items() if not pos & set(codes)), 5))
            for cell, codes in ((cell, tuple(code_of(x) for x in cell)) for cell, _ in cells)
        ],
        "n_negative_sentences": sorted(n_neg_sentences.items()),
        "n_no_mention_sentences": sorted(n_no_mention.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--top-patterns", type=int, default=120)
    parser.add_argument("--top-neg-cells", type=int, default=60)
    parser.add_argument("--write", type=Path, help="write the statistics module here (monai_vecl/data/phantom_stats.py)")
    args = parser.parse_args()
    stats = derive(args.label_dir, args.top_patterns, args.top_neg_cells)
    text = pprint.pformat(stats, width=116, compact=True, sort_dicts=False)
    if args.write is None:
        print(text)
        return
    args.write.write_text(MODULE_TEMPLATE.format(stats=text), encoding="utf-8")
    print(f"wrote {args.write}: {stats['n_images']} images, pattern coverage {stats['pattern_coverage']}")


if __name__ == "__main__":
    main()
