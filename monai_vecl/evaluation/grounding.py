"""Grounding evaluation: do the maps of :mod:`monai_vecl.grounding` point at the drawn finding?

The protocol follows MedKLIP's grounding evaluation (Wu et al., ICCV 2023), per finding and macro
over findings, on every (image, finding) pair where the finding is present and has a region:

* pointing game — the map's maximum falls inside the truth region;
* IoU and Dice of the map thresholded at t (map >= t) with the truth, t swept 0.00…1.00 in 0.01
  steps; reported at the threshold with the best mean Dice of that finding (an oracle threshold,
  chosen on the evaluated set, like the classification ``oracle_*`` metrics);
* recall and precision at IoU 0.1 at that threshold: the share of truth regions (connected parts)
  overlapped at IoU >= 0.1 by a predicted region (connected part of the thresholded map), and the
  share of predicted regions that overlap a truth region that well.

Baselines scored the same way: a centred Gaussian prior (the same map for every image and finding)
and an untrained network of the same architecture. Bootstrap CIs resample images; the comparison
with a baseline is paired (the same resampled images for both). Region truth comes from the
phantom's mask side file or from boxes (ChestX-Det10), see docs/grounding.md.

CLI: ``python -m monai_vecl.evaluation.grounding --bundle_root bundles/vecl_cxr --manifest M --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from monai_vecl.data.manifest import Record, class_labels, image_path, read_manifest
from monai_vecl.data.preprocess import read_gray
from monai_vecl.evaluation.workflow import SkipLog, iter_image_batches
from monai_vecl.grounding import Grounder, GroundingConfig, to_source_frame
from monai_vecl.inference.zero_shot import ZeroShotClassifier, entail_probs, load_weights, pnc
from monai_vecl.metrics import F1_GRID
from monai_vecl.taxonomy import class_key

#: Threshold sweep of IoU and Dice (0.00, 0.01, ..., 1.00): the classification F1 grid.
SWEEP = F1_GRID
HIT_IOU = 0.1
PRIOR_SIGMA = 0.25  # of the image side: a broad central blob
METRICS = ("pointing", "iou", "dice", "recall", "precision")
_LEVELS = np.round(SWEEP * 100).astype(int)


def truth_masks(record: Record, manifest: str | os.PathLike, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Region truth by finding name over the image [H, W]: the record's mask side file, else its boxes."""
    side = record.extra.get("regions")
    if side:
        with np.load(image_path(dataclasses.replace(record, image=side), manifest)) as masks:
            out = {name: masks[name].astype(bool) for name in masks.files}
        for name, mask in out.items():
            if mask.shape != tuple(shape):
                raise ValueError(f"{record.image}: region mask {name!r} is {mask.shape}, image is {tuple(shape)}")
        return out
    out: dict[str, np.ndarray] = {}
    for box in record.extra.get("boxes", []):
        if not box.get("finding"):
            continue
        x0, y0, x1, y1 = box["box"]
        mask = out.setdefault(box["finding"], np.zeros(shape, bool))
        mask[max(0, math.floor(y0)) : max(0, math.ceil(y1)), max(0, math.floor(x0)) : max(0, math.ceil(x1))] = True
    return out


def _region_of(truths: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """The truth mask of a class: by name, else the one of the same taxonomy finding ("Edema" for "Pulmonary Edema")."""
    key = class_key(name, truths)
    return truths[key] if key is not None else None


def gaussian_prior(shape: tuple[int, int], sigma: float = PRIOR_SIGMA) -> np.ndarray:
    """A centred isotropic Gaussian [H, W] with ``sigma`` a fraction of the longer side, peak 1."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    s = sigma * max(h, w)
    return np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * s * s))).astype(np.float32)


def zero_shot_score_fn(classifier: ZeroShotClassifier, mode: str = "pnc"):
    """Differentiable zero-shot score of image tokens [N, 1 + T, d] → [N, C] (the Grad-CAM target)."""
    pos, neg = classifier.prompt_features()
    model = classifier.model
    if mode == "pos":
        return lambda tokens: entail_probs(model, tokens, pos)
    return lambda tokens: pnc(entail_probs(model, tokens, pos), entail_probs(model, tokens, neg))


def make_grounder(classifier: ZeroShotClassifier, config: GroundingConfig, mode: str = "pnc") -> Grounder:
    """The :class:`Grounder` of a zero-shot classifier: its positive prompts, its score for the gradient methods."""
    score_fn = None if config.method == "attention" else zero_shot_score_fn(classifier, mode)
    return Grounder(classifier.model, classifier.prompt_features()[0], score_fn, config)


def _parts(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=np.ones((3, 3), bool))


def pair_scores(heat: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    """Pointing hit and the IoU/Dice curves over :data:`SWEEP` of one map [H, W] in [0, 1] against one truth mask."""
    level = np.clip(np.floor(heat * 100 + 1e-6), 0, 100).astype(np.int64)  # map >= t  <=>  level >= 100 t
    pred = np.cumsum(np.bincount(level.ravel(), minlength=101)[::-1])[::-1]
    inter = np.cumsum(np.bincount(level[truth], minlength=101)[::-1])[::-1]
    n_truth = int(truth.sum())
    union = pred + n_truth - inter
    return {
        "pointing": bool(truth.flat[int(np.argmax(heat))]),
        "iou": inter / np.maximum(union, 1),
        "dice": 2 * inter / np.maximum(pred + n_truth, 1),
        "level": level.astype(np.uint8),
    }


def region_hits(level: np.ndarray, truth: np.ndarray, threshold_level: int) -> tuple[int, int, int, int]:
    """(truth parts hit, truth parts, predicted parts hit, predicted parts) at IoU >= :data:`HIT_IOU`."""
    pred_lab, n_pred = _parts(level >= threshold_level)
    truth_lab, n_truth = _parts(truth)
    if n_pred == 0 or n_truth == 0:
        return 0, n_truth, 0, n_pred
    joint = np.bincount((pred_lab * (n_truth + 1) + truth_lab).ravel(), minlength=(n_pred + 1) * (n_truth + 1))
    joint = joint.reshape(n_pred + 1, n_truth + 1)
    inter = joint[1:, 1:]
    area_p, area_t = joint[1:].sum(1, keepdims=True), joint[:, 1:].sum(0, keepdims=True)
    hit = inter / np.maximum(area_p + area_t - inter, 1) >= HIT_IOU
    return int(hit.any(0).sum()), n_truth, int(hit.any(1).sum()), n_pred


@dataclass
class PairSet:
    """Per-pair results of one method: image index, finding index, pointing, IoU/Dice curves, quantised maps."""

    image: list[int] = field(default_factory=list)
    finding: list[int] = field(default_factory=list)
    pointing: list[bool] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)
    dice: list[np.ndarray] = field(default_factory=list)
    levels: list[np.ndarray] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)

    def add(self, image: int, finding: int, heat: np.ndarray, truth: np.ndarray) -> None:
        s = pair_scores(heat, truth)
        self.image.append(image)
        self.finding.append(finding)
        self.pointing.append(s["pointing"])
        self.iou.append(s["iou"])
        self.dice.append(s["dice"])
        self.levels.append(s["level"])
        self.truths.append(truth)


def summarize(
    pairs: PairSet, class_names: Sequence[str], n_images: int, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95
) -> dict[str, object]:
    """Per-finding and macro metrics with percentile bootstrap CIs over images (see the module docstring)."""
    img, fnd = np.asarray(pairs.image, int), np.asarray(pairs.finding, int)
    point = np.asarray(pairs.pointing, float)
    iou, dice = np.asarray(pairs.iou), np.asarray(pairs.dice)
    rows, used = {}, []
    for c, name in enumerate(class_names):
        sel = np.nonzero(fnd == c)[0]
        if len(sel) == 0:
            continue
        best = int(np.argmax(dice[sel].mean(0)))
        hits = np.array([region_hits(pairs.levels[i], pairs.truths[i], _LEVELS[best]) for i in sel], float)
        rows[name] = {
            "n": len(sel), "threshold": float(SWEEP[best]), "pointing": float(point[sel].mean()),
            "iou": float(iou[sel, best].mean()), "dice": float(dice[sel, best].mean()),
            "recall": float(hits[:, 0].sum() / max(hits[:, 1].sum(), 1)),
            "precision": float(hits[:, 2].sum() / hits[:, 3].sum()) if hits[:, 3].sum() else 0.0,
            "_hits": hits, "_sel": sel, "_best": best,
        }
        used.append(name)
    macro = {k: float(np.mean([rows[n][k] for n in used])) if used else math.nan for k in METRICS}
    result = {
        "per_finding": {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in rows.items()},
        "macro": macro | {"n_findings": len(used), "n_pairs": len(img)},
        "n_bootstrap": n_bootstrap,
    }
    if n_bootstrap > 0 and len(img):
        boots = bootstrap_macro(pairs, rows, n_images, n_bootstrap, seed)
        lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result["macro_ci"] = {k: [float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))]
                                  for k, v in boots.items()}
        result["_boot"] = boots
    return result


def _weights(pairs: PairSet, n_images: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[B, P]: how often each pair's image is drawn in each bootstrap replicate (images resampled)."""
    rng = np.random.default_rng(seed)
    draws = (rng.integers(0, n_images, n_images) for _ in range(n_bootstrap))
    counts = np.stack([np.bincount(d, minlength=n_images) for d in draws])
    return counts[:, np.asarray(pairs.image, int)].astype(float)


def bootstrap_macro(pairs: PairSet, rows: dict, n_images: int, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Macro metrics [B] per bootstrap replicate; the Dice threshold is re-chosen in each (oracle protocol)."""
    weights = _weights(pairs, n_images, n_bootstrap, seed)
    point = np.asarray(pairs.pointing, float)
    iou, dice = np.asarray(pairs.iou), np.asarray(pairs.dice)
    per = {k: [] for k in METRICS}
    for row in rows.values():
        sel, hits = row["_sel"], row["_hits"]
        w = weights[:, sel]
        total = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_dice = (w @ dice[sel]) / total[:, None]
            best = np.nanargmax(np.nan_to_num(mean_dice, nan=-1), axis=1)
            per["pointing"].append((w @ point[sel]) / total)
            per["dice"].append(mean_dice[np.arange(len(best)), best])
            per["iou"].append(((w @ iou[sel]) / total[:, None])[np.arange(len(best)), best])
            per["recall"].append((w @ hits[:, 0]) / np.maximum(w @ hits[:, 1], 1))
            per["precision"].append((w @ hits[:, 2]) / np.maximum(w @ hits[:, 3], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a finding absent from a replicate
        return {k: np.nanmean(np.stack(v), axis=0) for k, v in per.items()}


def compare(result: dict, baseline: dict, ci: float = 0.95) -> dict[str, object]:
    """Paired bootstrap of (method − baseline) for each macro metric: mean difference and its CI."""
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out = {}
    for k in METRICS:
        diff = result["_boot"][k] - baseline["_boot"][k]
        low, high = float(np.nanpercentile(diff, lo)), float(np.nanpercentile(diff, hi))
        out[k] = {"difference": result["macro"][k] - baseline["macro"][k], "ci": [low, high], "better": low > 0}
    return out


@dataclass
class GroundingEvaluation:
    """Scores maps of a trained network, an untrained one and the Gaussian prior on one manifest split."""

    network: torch.nn.Module
    untrained: torch.nn.Module | None
    manifest: str | os.PathLike
    class_names: Sequence[str]
    output_dir: str | os.PathLike
    split: str = "test"
    config: GroundingConfig = field(default_factory=GroundingConfig)
    mode: str = "pnc"
    batch_size: int = 16
    n_bootstrap: int = 1000
    seed: int = 0
    max_images: int | None = None
    overlay_pairs: int = 12

    def run(self) -> dict[str, object]:
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        records = read_manifest(self.manifest, self.split)[: self.max_images]
        if not records:
            raise ValueError(f"{self.manifest}: no records in split {self.split!r}")
        methods = {"model": self.network, **({"untrained": self.untrained} if self.untrained is not None else {})}
        grounders = {k: make_grounder(ZeroShotClassifier(m, self.class_names), self.config, self.mode)
                     for k, m in methods.items()}
        pairs = {k: PairSet() for k in [*grounders, "gaussian_prior"]}
        skipped, no_region, examples = SkipLog(), 0, []
        size, load = self.network.image_size, self.network.load_size
        labels = class_labels(records, self.class_names)  # prompt names match findings by name or finding code
        for idx, images in iter_image_batches(records, self.manifest, size, load, self.batch_size, skipped):
            maps = {k: g.maps(images) for k, g in grounders.items()}
            for b, i in enumerate(idx):
                gray = read_gray(image_path(records[i], self.manifest))
                truths = truth_masks(records[i], self.manifest, gray.shape)
                prior = gaussian_prior(gray.shape)
                for c, name in enumerate(self.class_names):
                    if labels[i, c] != 1:
                        continue
                    truth = _region_of(truths, name)
                    if truth is None or not truth.any():
                        no_region += 1
                        continue
                    for k in grounders:
                        heat = to_source_frame(maps[k][b, c], gray.shape, load).numpy()
                        pairs[k].add(i, c, heat, truth)
                        if k == "model" and len(examples) < self.overlay_pairs and c not in [e[1] for e in examples]:
                            examples.append((gray, c, heat, truth))
                    pairs["gaussian_prior"].add(i, c, prior, truth)
        n = len(records)
        if not pairs["model"].image:
            note = {"split": self.split, "images": n, "skipped": skipped.items, "positive_pairs_without_region": no_region,
                    "note": "no present finding with region truth: nothing to score"}
            (out / "grounding.json").write_text(json.dumps(note, indent=1), encoding="utf-8")
            return note
        results = {k: summarize(p, self.class_names, n, self.n_bootstrap, self.seed) for k, p in pairs.items()}
        comparisons = {f"model_vs_{b}": compare(results["model"], results[b]) for b in results if b != "model"}
        summary = {
            "split": self.split, "method": self.config.method, "layers": self.config.layers, "score_mode": self.mode,
            "images": n, "skipped": skipped.items, "positive_pairs_without_region": no_region,
            "results": {k: {kk: vv for kk, vv in r.items() if not kk.startswith("_")} for k, r in results.items()},
            "comparisons": comparisons,
        }
        (out / "grounding.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        write_table(summary, out / "grounding.md")
        if examples:
            overlay_grid(examples, self.class_names, out / "grounding_overlay.png")
        return summary


@dataclass
class GroundingStep:
    """The grounding evaluation as an extra step of the bundle's ``evaluating`` workflow (``eval_extras``).

    Writes ``grounding/`` (JSON, Markdown table, overlay grid) into the evaluation outputs; the untrained
    baseline is the evaluated network's architecture freshly initialised with ``seed``. A manifest without
    region truth for the split gives a note, not an error.
    """

    split: str = "test"
    method: str = "attention"
    layers: str = "all"
    mode: str = "pnc"
    max_images: int | None = None
    seed: int = 0

    def __call__(self, ev) -> dict[str, dict]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            untrained = type(ev.model)(ev.model.config).to(next(ev.model.parameters()).device).eval()
        summary = GroundingEvaluation(
            ev.model, untrained, ev.manifest, ev.class_names, ev.output_dir / "grounding", self.split,
            GroundingConfig(method=self.method, layers=self.layers), self.mode, n_bootstrap=ev.n_bootstrap,
            seed=self.seed, max_images=self.max_images,
        ).run()
        if "comparisons" not in summary:
            return {"summary": {"grounding": summary}}
        macro = summary["results"]["model"]["macro"]
        metrics = {f"grounding_{self.split}_{k}": macro[k] for k in METRICS}
        return {"metrics": metrics, "summary": {"grounding": {k: summary[k] for k in ("split", "method", "comparisons")}
                                                | {"model": macro}}}


def write_table(summary: dict, path: Path) -> None:
    """The macro table of every method (with CIs) and the per-finding pointing game, as Markdown."""
    res = summary["results"]
    lines = ["| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, r in res.items():
        cells = [f"{r['macro'][k]:.3f} [{r['macro_ci'][k][0]:.3f}, {r['macro_ci'][k][1]:.3f}]" if "macro_ci" in r
                 else f"{r['macro'][k]:.3f}" for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| finding | pairs | " + " | ".join(res) + " |", "|---|---" + "|---" * len(res) + "|"]
    for finding, row in res["model"]["per_finding"].items():
        lines.append(f"| {finding} | {row['n']} | " + " | ".join(
            f"{r['per_finding'][finding]['pointing']:.3f}" for r in res.values()) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def overlay_grid(examples: list, class_names: Sequence[str], path: Path, cols: int = 4) -> None:
    """Picture grid: image, truth outline (green), map (colour, transparent) and its maximum (cross)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(examples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (gray, c, heat, truth) in zip(axes.ravel(), examples):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=1.2)
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        ax.plot(x, y, "w+", markersize=12, markeredgewidth=2)
        ax.set_title(class_names[c], fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def build_network(bundle_root: Path, seed: int | None = None) -> tuple[torch.nn.Module, list[str]]:
    """The bundle's ``network_def`` (``configs/inference.yaml``) and ``class_names``; with ``seed``, seeded init."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle_root)
    if seed is not None:
        torch.manual_seed(seed)
    return parser.get_parsed_content("network_def"), parser.get("class_names")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description="Grounding evaluation (pointing game, IoU, Dice, recall/precision).")
    parser.add_argument("--bundle_root", type=Path, required=True, help="bundle with configs/inference.yaml")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: <bundle_root>/models/model.pt")
    parser.add_argument("--manifest", type=Path, required=True, help="a manifest with region truth")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--method", default="attention", choices=("attention", "gradcam", "gradcampp"))
    parser.add_argument("--layers", default="all", choices=("all", "last"))
    parser.add_argument("--mode", default="pnc", choices=("pnc", "pos"))
    parser.add_argument("--classes", nargs="*", default=None, help="default: the bundle's class_names")
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    network, class_names = build_network(args.bundle_root)
    load_weights(network, args.checkpoint or args.bundle_root / "models" / "model.pt")
    untrained, _ = build_network(args.bundle_root, seed=args.seed)
    summary = GroundingEvaluation(
        network.eval(), untrained.eval(), args.manifest, args.classes or class_names, args.out, args.split,
        GroundingConfig(method=args.method, layers=args.layers), args.mode, n_bootstrap=args.n_bootstrap,
        seed=args.seed, max_images=args.max_images,
    ).run()
    print((args.out / "grounding.md").read_text(encoding="utf-8"))
    return summary


if __name__ == "__main__":
    main()
