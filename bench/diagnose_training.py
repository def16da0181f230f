"""Diagnostics of a VECL training configuration: can it learn, and if not, why.

For the bundle's training configuration (any override applies) and, optionally, a trained checkpoint,
it prints, for the untrained network and for the checkpoint side by side:

* zero-shot PNC / POS macro AUC on a fixed subset of the *training* split (can it fit?) and on validation;
* every loss term (each channel, each direction, the diagonal term) against its floor, the entropy of the
  normalised targets, averaged over a few training batches ("loss 8.1" becomes "0.4 above what is possible");
* relation-target statistics per batch (fraction entail / neutral / contradict, rows without an entail);
* how much the entail logit moves with the image vs with the sentence;
* gradient norms per module of one training batch;
* cosines of the text features of "There is X" vs "There is no X" against "There is X" vs "There is Y".

With ``--baselines`` (phantom data) it also prints two checks of the phantom's difficulty, measured in the
same run: a logistic regression on 16×16-pixel thumbnails and the supervised small CNN of
``bench/supervised_ceiling.py`` after one epoch (macro AUC on test and test_shifted).

    .venv/bin/python bench/diagnose_training.py --checkpoint bundles/vecl_cxr/models/model.pt --baselines
    .venv/bin/python bench/diagnose_training.py --override loss_kind=clip --override sentences_per_image=1
"""

from __future__ import annotations

import argparse
import ast
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from monai_vecl.data.phantom import PHANTOM_CLASSES
from monai_vecl.losses import loss_floors
from monai_vecl.training import diagnostics
from monai_vecl.training.step import VECLTrainStep

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"


def parse_config(overrides: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    parser["progress"] = False
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            parser[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser[key] = value
    return parser


def batches(parser, n: int) -> list[dict]:
    loader = parser.get_parsed_content("train#dataloader")
    out = []
    for batch in loader.epoch(0):
        out.append(batch)
        if len(out) == n:
            break
    return out


def loss_report(network, loss_fn, data: list[dict]) -> dict[str, dict[str, float]]:
    """Mean loss terms, floors, target statistics and image dependence over ``data`` (no gradient)."""
    step = VECLTrainStep(network, loss_fn)
    sums: dict[str, dict[str, float]] = {"terms": {}, "floors": {}, "targets": {}, "fusion": {}}
    network.eval()
    with torch.no_grad():
        for batch in data:
            _, logits, terms = step(batch["image"], batch["text"], batch["image_mh"], batch["sentence_mh"])
            parts = {"terms": {k: float(v) for k, v in terms.items()},
                     "floors": loss_floors(loss_fn, batch["image_mh"], batch["sentence_mh"]),
                     "fusion": diagnostics.image_dependence(logits)}
            if loss_fn.kind != "clip":
                parts["targets"] = diagnostics.target_stats(loss_fn.targets(batch["image_mh"], batch["sentence_mh"]))
            for group, values in parts.items():
                for k, v in values.items():
                    sums[group][k] = sums[group].get(k, 0.0) + v / len(data)
    return sums


def grad_report(network, loss_fn, batch: dict) -> dict[str, float]:
    network.train()
    network.zero_grad(set_to_none=True)
    loss, _, _ = VECLTrainStep(network, loss_fn)(batch["image"], batch["text"], batch["image_mh"], batch["sentence_mh"])
    loss.backward()
    norms = diagnostics.module_grad_norms(network)
    network.zero_grad(set_to_none=True)
    return norms


def fit_report(parser, network) -> dict[str, float]:
    """Zero-shot PNC / POS macro AUC of ``network`` by the bundle's own evaluators: ``validate#train_fit`` (the
    first `--fit-images` training images) and ``validate#evaluator`` (validation); see :func:`main`."""
    out = {}
    for key, prefix in (("validate#train_fit", "train"), ("validate#evaluator", "val")):
        evaluator = parser.get_parsed_content(key)
        evaluator.network = network
        evaluator.run()
        out |= {k: evaluator.state.metrics[k] for k in (f"{prefix}_pnc_auc", f"{prefix}_pos_auc")}
    return out


def baselines(manifest: Path) -> dict[str, float]:
    """Phantom difficulty: 16×16 thumbnail logistic regression and the supervised CNN after one epoch."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from supervised_ceiling import SmallCNN, aucs, load_split

    out = {}
    splits = {s: load_split(manifest, s, 16) for s in ("train", "test", "test_shifted")}
    x_train, y_train = splits["train"]
    for split in ("test", "test_shifted"):
        x, y = splits[split]
        per_class = []
        for c in range(y.shape[1]):
            if 0 < y_train[:, c].sum() < len(y_train) and 0 < y[:, c].sum() < len(y):
                model = LogisticRegression(max_iter=2000, C=1.0).fit(x_train.flatten(1).numpy(), y_train[:, c].numpy())
                per_class.append(roc_auc_score(y[:, c].numpy(), model.predict_proba(x.flatten(1).numpy())[:, 1]))
        out[f"thumbnail_logreg_{split}_auc"] = float(np.mean(per_class))
    torch.manual_seed(0)
    x_train, y_train = load_split(manifest, "train", 128)
    model = SmallCNN(len(PHANTOM_CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for idx in torch.randperm(len(x_train)).split(32):
        loss = F.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for split in ("test", "test_shifted"):
        out[f"supervised_1epoch_{split}_auc"] = float(np.nanmean(list(aucs(model, *load_split(manifest, split, 128),
                                                                           torch.device("cpu")).values())))
    return out


def table(rows: dict[str, dict[str, float]], title: str) -> str:
    names = list(rows)
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    lines = [f"\n{title}", f"{'':<38}" + "".join(f"{n:>14}" for n in names)]
    for k in keys:
        lines.append(f"{k:<38}" + "".join(f"{rows[n].get(k, float('nan')):>14.4g}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="trained models/model.pt to diagnose beside the untrained network")
    ap.add_argument("--override", action="append", default=[], help="train.yaml key=value (repeatable)")
    ap.add_argument("--batches", type=int, default=4, help="training batches averaged for the loss report")
    ap.add_argument("--fit-images", type=int, default=300, help="training images scored zero-shot")
    ap.add_argument("--baselines", action="store_true", help="also the thumbnail and 1-epoch supervised baselines")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    parser = parse_config(args.override)
    # set before anything is parsed: the evaluators score without the training handlers (no model.pt is written)
    parser["validate#handlers"] = []
    parser["train_fit_images"] = args.fit_images
    network, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    models = {"untrained": network}
    if args.checkpoint:
        trained = copy.deepcopy(network)
        trained.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        models["trained"] = trained
    data = batches(parser, args.batches)
    reports = {name: loss_report(m, loss_fn, data) for name, m in models.items()}
    floors = reports["untrained"]["floors"]
    print(f"loss kind {loss_fn.kind}, {len(data)} batches of {len(data[0]['image'])} images × "
          f"{len(data[0]['text'])} sentences")
    print(table({**{n: r["terms"] for n, r in reports.items()}, "floor": floors}, "loss terms (weighted) vs floor"))
    print(table({n: {k: r["terms"][k] - floors.get(k, 0.0) for k in r["terms"]} for n, r in reports.items()},
                "loss terms above their floor"))
    if reports["untrained"]["targets"]:
        print(table({"per batch": reports["untrained"]["targets"]}, "relation targets"))
    print(table({n: r["fusion"] for n, r in reports.items()}, "entail logit: spread over images vs over sentences"))
    print(table({n: grad_report(m, loss_fn, data[0]) for n, m in models.items()}, "gradient norm per module"))
    print(table({n: diagnostics.prompt_contrast(m, PHANTOM_CLASSES) for n, m in models.items()},
                "text features the fusion sees (cosine)"))
    print(table({n: fit_report(parser, m) for n, m in models.items()},
                "zero-shot macro AUC: training subset (fit) and validation"))
    if args.baselines:
        print(table({"phantom": baselines(Path(parser.get_parsed_content("manifest")))},
                    "phantom difficulty (targets: thumbnail logreg test <= 0.75, supervised 1 epoch < 0.75)"))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
