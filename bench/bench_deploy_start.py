"""Benchmark: deploy app cold start (process start → first SR) and per-study time, exported head against today's path.

Each configuration runs in a fresh Python process (``--child``) that imports the app, builds
``StudyPipeline`` from ``deploy/config.yaml`` with ``deploy.model`` (and grounding) overridden, and
processes copies of the real CR ``RG1_UNCR.dcm`` (pydicom-data, 1955×1841): the first study times
the cold start, the next ``--studies`` the per-study time (median of ``StudyPipeline.process``
totals). Cold start = the child's first SR built − the parent's clock just before it started the
process (interpreter start and imports included). Configurations, baseline first:

- today's path: ``deploy.model: bundle`` (network + text encoder, prompts encoded at start-up), grounding on;
- the same without grounding (what the exported head can do, so the scoring paths compare alike);
- ``deploy.model: exported``: the TorchScript head ``models/model.ts`` (no text encoder), grounding off.

Usage: python bench/bench_deploy_start.py [--studies 5] [--config deploy/config.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("bundle, grounding on (today)", "bundle", True), ("bundle, grounding off", "bundle", False),
        ("exported head (grounding off)", "exported", False))


def child(config: Path, model: str, grounding: bool, studies: int) -> None:
    """In a fresh process: import, load, first study (cold start), then ``studies`` more; one JSON line out."""
    import data_store  # the pydicom-data package
    import yaml

    from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline

    imported = time.time()
    settings = yaml.safe_load(config.read_text())["deploy"]
    settings["model"] = model
    settings.setdefault("grounding", {})["enabled"] = grounding
    pipeline = StudyPipeline(PipelineConfig.from_mapping(settings, base_dir=config.parent))
    loaded = time.time()
    source = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    first = pipeline.process([source])
    if first.sr is None or first.skipped_reason:
        raise RuntimeError(f"no findings SR for the CR: {first.skipped_reason}")
    first_sr = time.time()
    totals = [pipeline.process([source]).timings["total"] for _ in range(studies)]
    print(json.dumps({"imported": imported, "loaded": loaded, "first_sr": first_sr, "per_study": totals,
                      "scores": first.scores, "sr_uid": str(first.sr.SOPInstanceUID)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5, help="studies after the first, for the per-study time")
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "config.yaml")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "GROUNDING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.config, args.child[0], args.child[1] == "on", args.studies)
        return
    results = []
    for name, model, grounding in RUNS:
        started = time.time()
        run = subprocess.run([sys.executable, __file__, "--config", str(args.config), "--studies", str(args.studies),
                              "--child", model, "on" if grounding else "off"],
                             capture_output=True, text=True, cwd=ROOT, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"{name}: {run.stderr[-3000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        results.append((name, r, {"import": r["imported"] - started, "load": r["loaded"] - r["imported"],
                                  "first study": r["first_sr"] - r["loaded"], "cold": r["first_sr"] - started,
                                  "per study": statistics.median(r["per_study"])}))
    print(f"deploy app: cold start to the first SR and per-study time, CR RG1_UNCR.dcm 1955x1841, "
          f"{args.studies} studies after the first, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    keys = ("import", "load", "first study", "cold", "per study")
    print(f"{'configuration':32} " + " ".join(f"{k + ' s':>13}" for k in keys) + f" {'cold speed-up':>13} {'per-study':>10}")
    base = results[0][2]
    for name, _, t in results:
        print(f"{name:32} " + " ".join(f"{t[k]:13.2f}" for k in keys)
              + f" {base['cold'] / t['cold']:12.2f}x {base['per study'] / t['per study']:9.2f}x")
    bundle_off, exported = results[1][1], results[2][1]
    diff = max(abs(bundle_off["scores"][k] - exported["scores"][k]) for k in bundle_off["scores"])
    print(f"exported vs bundle (grounding off): max score difference {diff:.2e}, same SR UID (same SR content): "
          f"{bundle_off['sr_uid'] == exported['sr_uid']}")


if __name__ == "__main__":
    main()
