"""VECL vs the CLIP baseline vs the no-entailment ablation (and the paper-only loss), same budget, several seeds.

Each model is trained by the bundle's ``training`` workflow (only ``loss_kind`` and ``seed`` differ; same
data, epochs, batch size, optimiser) and evaluated by its ``evaluating`` workflow. It prints and writes:

* per loss kind, mean ± sd over seeds of the POS and PNC macro AUC on ``test`` and ``test_shifted``;
* the paired bootstrap 95% CI of the PNC macro AUC difference of ``vecl`` against every other kind: the
  same resampled test images for both models, the difference averaged over seeds in every replicate;
* the first seed's full table (AUC, oracle F1/MCC, mAP, validation-threshold F1/MCC).

    .venv/bin/python bench/compare_vecl_clip.py --out bundles/vecl_cxr/outputs/compare --seeds 0 1 2

Everything else is a bundle override, e.g. ``--max-epochs 4`` (train.yaml's defaults when left out).
An interrupted comparison resumes each training from its last checkpoint; finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"
KINDS = ("vecl", "clip", "no_entailment", "vecl_paper")
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
    cmd += ["--tracking", "mlflow"]
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
    from monai_vecl.metrics import choose_thresholds, evaluate_scores
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
    timing = ", ".join(f"{k} {s / 60:.1f} min per seed" for k, s in seconds.items())
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


def seed_table(summaries: dict[str, list[dict]]) -> str:
    """Mean ± sd over seeds of the POS and PNC macro AUC per kind and split."""
    import numpy as np

    head = ["model", "seeds"] + [f"{split} {mode.upper()} AUC" for split in SPLITS for mode in ("pos", "pnc")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, runs in summaries.items():
        cells = []
        for split in SPLITS:
            for mode in ("pos", "pnc"):
                values = np.array([r[f"{split}_{mode}"]["auc"] for r in runs])
                cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}")
        lines.append(f"| {kind} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def macro_auc(truth, scores) -> float:
    """The package's masked macro ROC AUC (classes with both labels; NaN truth = no label)."""
    from monai_vecl.metrics import masked_macro_auc

    return masked_macro_auc(truth, scores, [str(c) for c in range(truth.shape[1])])[0]


def paired_difference(run_dirs: dict[str, list[Path]], split: str, baseline: str, other: str, n_bootstrap: int,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean over seeds of AUC[baseline] - AUC[other], 95% CI low, high) by a paired bootstrap over test images."""
    import numpy as np

    pairs = []
    for a_dir, b_dir in zip(run_dirs[baseline], run_dirs[other], strict=True):
        a = np.load(a_dir / "eval" / f"{split}_pnc_scores.npz")
        b = np.load(b_dir / "eval" / f"{split}_pnc_scores.npz")
        if not np.array_equal(a["images"], b["images"]):
            raise ValueError(f"{a_dir} and {b_dir} scored different {split} images: not a paired comparison")
        pairs.append((a["truth"], a["scores"], b["scores"]))
    point = float(np.mean([macro_auc(t, sa) - macro_auc(t, sb) for t, sa, sb in pairs]))
    rng = np.random.default_rng(seed)
    n = len(pairs[0][0])
    reps = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        reps.append(np.mean([macro_auc(t[idx], sa[idx]) - macro_auc(t[idx], sb[idx]) for t, sa, sb in pairs]))
    low, high = np.nanpercentile(reps, [2.5, 97.5])
    return point, float(low), float(high)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLE / "outputs" / "compare")
    parser.add_argument(
        "--kinds", nargs="+", default=list(KINDS), help=f"loss kinds, from {KINDS} or any VECLLoss kind"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (same data)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--phantom-images", type=int, default=None)
    parser.add_argument("--n-bootstrap", type=int, default=200, help="bootstrap replicates of each evaluation")
    parser.add_argument("--n-paired", type=int, default=1000, help="replicates of the paired difference bootstrap")
    parser.add_argument("--with-extras", action="store_true", help="also run retrieval, probe, t-SNE, grounding")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of finished runs in --out")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = {
        "phantom_dir": out / "phantom",
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "experiment_name": "vecl-compare",
        "progress": False,
    }
    if args.max_epochs is not None:
        shared["max_epochs"] = args.max_epochs
    if args.phantom_images is not None:
        shared["phantom_images"] = args.phantom_images
    summaries: dict[str, list[dict]] = {}
    run_dirs: dict[str, list[Path]] = {}
    seconds: dict[str, float] = {}
    for kind in args.kinds:
        for seed in args.seeds:
            run_dir = out / f"{kind}-seed{seed}"
            run = {**shared, "loss_kind": kind, "seed": seed, "output_dir": run_dir, "model_file": run_dir / "model.pt",
                   "run_name": f"{kind}-seed{seed}"}
            run_dir.mkdir(exist_ok=True)
            done = (run_dir / "eval" / "summary.json").is_file()
            if not args.report_only and not done:
                took = bundle_run("training", ["train.yaml"], run, run_dir / "train.log")
                seconds[kind] = seconds.get(kind, 0.0) + took / len(args.seeds)
                evaluate = {**run, "n_bootstrap": args.n_bootstrap, "thresholds_file": run_dir / "thresholds.json"}
                if not args.with_extras:
                    evaluate["eval_extras"] = "[]"
                bundle_run("evaluating", ["train.yaml", "evaluate.yaml"], evaluate, run_dir / "evaluate.log")
                print(f"{kind} seed {seed}: trained in {took / 60:.1f} min", flush=True)
            summaries.setdefault(kind, []).append(json.loads((run_dir / "eval" / "summary.json").read_text()))
            run_dirs.setdefault(kind, []).append(run_dir)
    lines = [seed_table(summaries), ""]
    if "vecl" in run_dirs:
        lines += ["| difference of PNC macro AUC | split | mean over seeds | paired bootstrap 95% CI |", "|---|---|---|---|"]
        for other in [k for k in run_dirs if k != "vecl"]:
            for split in SPLITS:
                point, low, high = paired_difference(run_dirs, split, "vecl", other, args.n_paired)
                lines.append(f"| vecl − {other} | {split} | {point:+.3f} | [{low:+.3f}, {high:+.3f}] |")
        lines.append("")
    first = {kind: runs[0] for kind, runs in summaries.items()}
    first["random scores"] = random_summary(out / "phantom" / "manifest.jsonl")
    lines += [f"Seed {args.seeds[0]}, every protocol:", "", report(first, seconds)]
    text = "\n".join(lines)
    (out / "comparison.md").write_text(text + "\n", encoding="utf-8")
    (out / "comparison.json").write_text(
        json.dumps({"summaries": summaries, "train_seconds": seconds}, indent=1, default=str), encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
