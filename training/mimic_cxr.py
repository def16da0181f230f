"""MIMIC-CXR-JPG recipe: build the manifest, label its sentences, train the ``paper`` preset with the bundle.

    # 1. manifest from the PhysioNet layout (images + CSVs under ROOT, reports under REPORTS or ROOT)
    python training/mimic_cxr.py prepare --root /data/mimic-cxr-jpg/2.1.0 --reports /data/mimic-cxr/2.0.0 \
        --out /data/vecl/mimic/manifest.jsonl --backend rules
    # (or --import-reference llama31_70b_part*.csv for the VECL reference LLM labels)
    # 2. train on N GPUs (torchrun + DDP); extra bundle overrides follow `--`
    python training/mimic_cxr.py train --manifest /data/vecl/mimic/manifest.jsonl --gpus 8 -- --batch_size 32

Nothing here downloads data: MIMIC-CXR needs PhysioNet credentialed access (see the bundle's
docs/data_license.txt).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from monai_vecl import label
from monai_vecl.data.manifest import write_manifest
from monai_vecl.data.readers import read_mimic_cxr

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"

#: Bundle overrides that restore the VECL reference recipe (train.yaml's defaults are the small CPU recipe):
#: Adam(0.5, 0.999), lr 5e-5, grad clip 0.25, plateau schedule, one sentence per image, 15 epochs,
#: the reference augmentation; text encoder trained.
PAPER_OVERRIDES = {
    "network_preset": "paper",
    "freeze_text": "False",
    "learning_rate": "5e-5",
    "betas": "[0.5,0.999]",
    "grad_clip": "0.25",
    "lr_schedule": "plateau",
    "sentences_per_image": "1",
    "augmentation#rotate_deg": "30.0",
    "augmentation#translate": "0.1",
    "augmentation#scale": "[0.9,1.1]",
    "augmentation#brightness": "[0.8,1.2]",
    "augmentation#contrast": "[0.8,1.2]",
    "max_epochs": "15",
    "batch_size": "64",
    "num_workers": "8",
    "checkpoint_every": "500",
}


def prepare(root: Path, out: Path, reports: Path | None, label_args: list[str]) -> Path:
    """Read MIMIC-CXR-JPG (frontal views) into ``out`` and label it with ``python -m monai_vecl.label``."""
    records, report = read_mimic_cxr(root, reports_dir=reports)
    print(report.summary())
    if not records:
        raise SystemExit(f"no usable MIMIC-CXR-JPG records under {root}")
    write_manifest(records, out)
    status = label.main(["--manifest", str(out), *label_args])
    if status:
        raise SystemExit(status)
    return out


def train_command(manifest: Path, gpus: int, extra: list[str], bundle: Path = BUNDLE) -> list[str]:
    """The ``monai.bundle run training`` command (under ``torchrun`` for more than one GPU)."""
    configs = [str(bundle / "configs" / "train.yaml")]
    launcher = [sys.executable, "-m"]
    if gpus > 1:
        configs.append(str(bundle / "configs" / "multi_gpu_train.yaml"))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m"]
    overrides = [x for key, value in PAPER_OVERRIDES.items() for x in (f"--{key}", value)]
    return [*launcher, "monai.bundle", "run", "training", "--bundle_root", str(bundle),
            "--config_file", repr(configs) if len(configs) > 1 else configs[0],
            "--dataset_manifest", str(manifest), *overrides, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build and label the manifest")
    p.add_argument("--root", type=Path, required=True, help="MIMIC-CXR-JPG root (files/, mimic-cxr-2.0.0-*.csv)")
    p.add_argument("--reports", type=Path, help="MIMIC-CXR report root (files/pXX/pXXXXXXXX/sXXXXXXXX.txt)")
    p.add_argument("--out", type=Path, required=True, help="manifest.jsonl to write")
    t = sub.add_parser("train", help="train the paper preset with the bundle")
    t.add_argument("--manifest", type=Path, required=True)
    t.add_argument("--gpus", type=int, default=1)
    t.add_argument("--bundle", type=Path, default=BUNDLE)
    t.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args, rest = parser.parse_known_args(argv)
    rest = [x for x in rest if x != "--"]
    if args.command == "prepare":
        prepare(args.root, args.out, args.reports, rest or ["--backend", "rules"])
        return 0
    command = train_command(args.manifest, args.gpus, rest, args.bundle)
    print(shlex.join(command))
    return 0 if args.dry_run else subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
