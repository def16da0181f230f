"""Label the sentences of a manifest and write the labels back (``python -m monai_vecl.label``).

Two sources:

* a labeler (``--backend rules|transformers|openai``, options from ``--config`` YAML and flags), through the
  SQLite label cache, so a killed run resumes where it stopped;
* ``--import-reference CSV...``: the VECL reference label files (one row per image, rows in manifest order).
  Row and sentence counts must match the manifest exactly; malformed cells are labeled by the configured
  backend and counted.

Records without sentences get them from their report's FINDINGS and IMPRESSION sections. The manifest is
rewritten atomically once at the end; a summary is printed (and written as JSON with ``--summary``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from monai_vecl.data.manifest import Record, read_manifest, write_manifest
from monai_vecl.labeling import BACKENDS, LabelCache, Labeler, LabelResult, build_labeler, label_sentences
from monai_vecl.labeling.base import LabelStats
from monai_vecl.reference_labels import read_label_files
from monai_vecl.reports import report_sentences


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monai_vecl.label", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=Path, help="manifest.jsonl to label")
    p.add_argument("--out", type=Path, help="output manifest (default: rewrite --manifest in place)")
    p.add_argument("--config", type=Path, help="YAML mapping of labeler options (backend, model, ...)")
    p.add_argument("--backend", choices=BACKENDS, help="labeling backend (overrides --config)")
    p.add_argument("--model", help="transformers: model folder or .gguf; openai: model name")
    p.add_argument("--base-url", help="openai: endpoint root, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--concurrency", type=int, help="openai: requests in flight")
    p.add_argument("--response-format", choices=("json_schema", "none"),
                   help="openai: constrain answers with the label JSON schema (default) or ask for plain codes")
    p.add_argument("--uncertainty", choices=("positive", "negative", "no_mention"),
                   help="rules (and LLM fallback): label for uncertain mentions")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per labeling batch / cache commit")
    p.add_argument("--cache", type=Path, help="SQLite label cache (default: <manifest>.labels.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="label without a persistent cache")
    p.add_argument("--overwrite", action="store_true", help="relabel records that already have labels")
    p.add_argument("--import-reference", nargs="+", type=Path, metavar="CSV",
                   help="import VECL reference label CSVs (in part order) instead of running a labeler")
    p.add_argument("--summary", type=Path, help="also write the summary as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def labeler_config(args: argparse.Namespace) -> dict[str, Any]:
    """Labeler options: the ``--config`` YAML mapping, overridden by explicit flags."""
    config: dict[str, Any] = {}
    if args.config:
        loaded = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"{args.config}: labeler config must be a YAML mapping")
        config.update(loaded)
    if args.backend:
        config["backend"] = args.backend
    backend = config.setdefault("backend", "rules")
    flags = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "concurrency": args.concurrency,
                               "response_format": args.response_format}.items() if v is not None}
    if flags and backend == "rules":
        raise SystemExit(f"--model, --base-url, --concurrency and --response-format apply to LLM backends, not rules "
                         f"(got {sorted(flags)})")
    (config.setdefault("llm", {}) if backend == "hybrid" else config).update(flags)
    if args.uncertainty:
        if backend == "rules":
            config["uncertainty"] = args.uncertainty
        else:
            config.setdefault("fallback", {})["uncertainty"] = args.uncertainty
    return config


def _ensure_sentences(records: Sequence[Record]) -> int:
    """Split reports of records that have none; returns how many records were split."""
    split = 0
    for record in records:
        if not record.sentences and record.report.strip():
            record.sentences = report_sentences(record.report)
            split += 1
    return split


def run_labeler(records: Sequence[Record], labeler: Labeler, cache: LabelCache | None, batch_size: int,
                quiet: bool) -> LabelStats:
    """Label every sentence of ``records`` in place; returns the run's counters."""
    sentences = [s for r in records for s in r.sentences]
    with tqdm(total=len(set(sentences)), desc="labeling", unit="sent", disable=quiet, file=sys.stderr) as bar:
        results, stats = label_sentences(sentences, labeler, cache, batch_size, progress=bar.update)
    _assign(records, results, labeler.identity)
    return stats


def _assign(records: Sequence[Record], results: Sequence[LabelResult], source: str) -> None:
    it = iter(results)
    for record in records:
        mine = [next(it) for _ in record.sentences]
        record.sentence_labels = [list(r.labels) for r in mine]
        record.label_source = source
        record.extra["label_backends"] = [r.backend for r in mine]
        reasons = {str(i): r.reason for i, r in enumerate(mine) if r.reason}
        if reasons:
            record.extra["label_reasons"] = reasons  # sentence index -> why it was rejected, kept or cut
        else:
            record.extra.pop("label_reasons", None)


def import_reference(records: Sequence[Record], csvs: Sequence[Path], labeler: Labeler) -> dict[str, Any]:
    """Attach reference labels row by row; malformed cells are labeled by ``labeler``.

    Raises ``ValueError`` if the number of rows or any row's number of cells differs from the manifest.
    """
    table = read_label_files(csvs, errors="keep")
    if len(table.rows) != len(records):
        raise ValueError(f"{len(table.rows)} label rows in {[str(c) for c in csvs]} but {len(records)} manifest "
                         "records: reference rows align with images by index, so the counts must match")
    mismatched = [(i, len(row), len(rec.sentences)) for i, (row, rec) in enumerate(zip(table.rows, records))
                  if len(row) != len(rec.sentences)]
    if mismatched:
        shown = ", ".join(f"record {i}: {a} cells vs {b} sentences" for i, a, b in mismatched[:5])
        raise ValueError(f"{len(mismatched)} records have a different number of label cells than sentences "
                         f"({shown}{', ...' if len(mismatched) > 5 else ''})")
    source = "reference:" + ",".join(c.name for c in csvs)
    repaired = 0
    for row, record in zip(table.rows, records):
        backends = []
        labels = []
        for cell, sentence in zip(row, record.sentences):
            if cell is None:
                cell = labeler.label(sentence).labels
                backends.append(labeler.backend)
                repaired += 1
            else:
                backends.append("reference")
            labels.append(list(cell))
        record.sentence_labels = labels
        record.label_source = source
        record.extra["label_backends"] = backends
    return {"rows": len(table.rows), "sentences": table.stats.sentences, "malformed_cells": table.stats.malformed,
            "malformed_relabeled": repaired, "relabel_backend": labeler.identity}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    records = read_manifest(args.manifest)
    summary: dict[str, Any] = {"manifest": str(args.manifest), "records": len(records),
                               "records_split": _ensure_sentences(records)}
    labeler = build_labeler(labeler_config(args))
    if args.import_reference:
        summary.update(import_reference(records, args.import_reference, labeler))
    else:
        todo = [r for r in records if args.overwrite or r.sentence_labels is None]
        summary["records_labeled"] = len(todo)
        summary["records_kept"] = len(records) - len(todo)
        cache = None if args.no_cache else LabelCache(args.cache or args.manifest.with_suffix(".labels.sqlite"))
        try:
            stats = run_labeler(todo, labeler, cache, args.batch_size, args.quiet)
        finally:
            if cache is not None:
                cache.close()
        summary.update(labeler=labeler.identity, sentences=stats.sentences, distinct_sentences=stats.distinct,
                       cache_hits=stats.cache_hits, llm_calls=stats.llm_calls, valid_first_try=stats.valid_first,
                       repairs=stats.repairs, repaired=stats.repaired, fallbacks=stats.fallbacks,
                       backend_errors=stats.errors, rejected=dict(sorted(stats.rejected.items())),
                       flagged=dict(sorted(stats.flagged.items())),
                       label_counts=dict(sorted(stats.label_counts.items())))
        if hasattr(labeler, "calls_saved"):
            summary["llm_calls_saved"] = labeler.calls_saved
        llm = getattr(labeler, "llm", labeler)
        if hasattr(llm, "failed_requests"):  # openai: requests that failed for good (fell back to rules)
            summary["failed_requests"] = llm.failed_requests
            summary["schema_rejections"] = llm.schema_rejections
        if hasattr(llm, "close"):
            llm.close()
    out = write_manifest(records, args.out or args.manifest)
    summary["written"] = str(out)
    for key, value in summary.items():
        print(f"{key:>20}: {value}")
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
