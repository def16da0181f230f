"""VECL vs the CLIP baseline vs the no-entailment ablation, trained with the same budget on the phantom.

Each model is trained by the bundle's ``training`` workflow (only ``loss_kind`` differs; same data,
seed, epochs, batch size, optimiser) and evaluated by its ``evaluating`` workflow. One table is
printed and written: POS and PNC macro AUC / F1 / MCC / mAP on ``test`` and ``test_shifted``.
F1 and MCC use the paper's oracle thresholds (chosen on the evaluated split itself); the
validation-threshold figures are in each run's ``eval/*.csv``.

    .venv/bin/python bench/compare_vecl_clip.py --out bundles/vecl_cxr/outputs/compare

Everything else is a bundle override, e.g. ``--max-epochs 8 --phantom-images 600`` (train.yaml's
defaults when left out). An interrupted comparison resumes each training from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"
KINDS = ("vecl", "clip", "no_entailment")
SPLITS = ("test", "test_shifted")
#: (summary key, column label): the paper's oracle protocol first, then validation thresholds (deployable).
COLUMNS = (("auc", "AUC"), ("oracle_f1", "F1*"), ("oracle_mcc", "MCC*"), ("ap", "mAP"))
DEPLOYABLE = (("val_f1", "F1 (val thr.)"), ("val_mcc", "MCC (val thr.)"))


def bundle_run(workflow: str, configs: list[str], overrides: dict[str, object], log: Path) -> float:
    """Run ``python -m monai.bundle run <workflow>`` with overrides; returns wall seconds; output goes to ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        workflow,
        "--bundle_root",
        str(BUNDLE),
        "--config_file",
        repr([str(BUNDLE / "configs" / c) for c in configs]),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{workflow} failed (exit {result.returncode}); see {log}")
    return time.perf_counter() - start


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def random_summary(manifest: Path, draws: int = 20) -> dict[str, dict[str, float]]:
    """Macro metrics of uniform random scores on the same labels, averaged over ``draws``: the floor each
    protocol gives a model without information (the oracle's threshold search lifts F1 and MCC above it)."""
    import numpy as np

    from monai_vecl.data.manifest import read_manifest
    from monai_vecl.data.phantom import PHANTOM_CLASSES
    from monai_vecl.evaluation.metrics import choose_thresholds, evaluate_scores
    from monai_vecl.evaluation.workflow import class_labels

    rng = np.random.default_rng(0)
    y_val = class_labels(read_manifest(manifest, "validate"), PHANTOM_CLASSES)
    out = {}
    for split in SPLITS:
        y = class_labels(read_manifest(manifest, split), PHANTOM_CLASSES)
        rows = []
        for _ in range(draws):
            thresholds = choose_thresholds(y_val, rng.random(y_val.shape))
            rows.append(evaluate_scores(y, rng.random(y.shape), PHANTOM_CLASSES, thresholds, n_bootstrap=0).macro)
        keys = ("auc", "ap", "oracle_f1", "oracle_mcc", "val_f1", "val_mcc")
        row = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        out |= {f"{split}_pos": row, f"{split}_pnc": row}
    return out


def table(summaries: dict[str, dict], columns: tuple[tuple[str, str], ...]) -> str:
    """Markdown table: one row per (model, split), a POS and a PNC group of ``columns``."""
    head = ["model", "split"] + [f"{mode.upper()} {label}" for mode in ("pos", "pnc") for _, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, summary in summaries.items():
        for split in SPLITS:
            cells = [_fmt(summary[f"{split}_{mode}"][key]) for mode in ("pos", "pnc") for key, _ in columns]
            lines.append(f"| {kind} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(summaries: dict[str, dict], seconds: dict[str, float]) -> str:
    """Both tables and the notes."""
    timing = ", ".join(f"{k} {s / 60:.1f} min" for k, s in seconds.items())
    return "\n".join([
        table(summaries, COLUMNS),
        "",
        "F1*, MCC*: oracle thresholds, chosen on the evaluated split itself (the VECL paper's protocol).",
        "",
        table(summaries, DEPLOYABLE),
        "",
        "val thr.: thresholds chosen on the validate split and applied unchanged (deployable protocol). "
        "random scores: uniform random scores on the same labels, mean of 20 draws (the floor of each protocol).",
        f"Training wall time: {timing}." if timing else "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLE / "outputs" / "compare")
    parser.add_argument(
        "--kinds", nargs="+", default=list(KINDS), help=f"loss kinds, from {KINDS} or any VECLLoss kind"
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--phantom-images", type=int, default=None)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--with-extras", action="store_true", help="also run retrieval, linear probe and t-SNE")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of finished runs in --out")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = {
        "phantom_dir": out / "phantom",
        "mlflow_tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "mlflow_experiment": "vecl-compare",
        "progress": False,
    }
    if args.max_epochs is not None:
        shared["max_epochs"] = args.max_epochs
    if args.phantom_images is not None:
        shared["phantom_images"] = args.phantom_images
    summaries, seconds = {}, {}
    for kind in args.kinds:
        run = {**shared, "loss_kind": kind, "output_dir": out / kind, "model_file": out / kind / "model.pt"}
        (out / kind).mkdir(exist_ok=True)
        if not args.report_only:
            seconds[kind] = bundle_run("training", ["train.yaml"], run, out / kind / "train.log")
            evaluate = {**run, "n_bootstrap": args.n_bootstrap}
            if not args.with_extras:
                evaluate["eval_extras"] = "[]"
            bundle_run("evaluating", ["train.yaml", "evaluate.yaml"], evaluate, out / kind / "evaluate.log")
            print(f"{kind}: trained in {seconds[kind] / 60:.1f} min", flush=True)
        summaries[kind] = json.loads((out / kind / "eval" / "summary.json").read_text(encoding="utf-8"))
    summaries["random scores"] = random_summary(out / "phantom" / "manifest.jsonl")
    text = report(summaries, seconds)
    (out / "comparison.md").write_text(text + "\n", encoding="utf-8")
    (out / "comparison.json").write_text(
        json.dumps({"summaries": summaries, "train_seconds": seconds}, indent=1), encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
