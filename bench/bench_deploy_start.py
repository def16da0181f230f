"""Benchmark: deploy app cold start (process start → first SR) and per-study time, exported head against today's path.

Every run is a fresh Python process, on copies of the real CR ``RG1_UNCR.dcm`` (pydicom-data, 1955×1841), with
``deploy/config.yaml`` whose ``deploy.model`` and grounding are overridden. Two kinds of process:

- ``StudyPipeline`` (what the DICOM gateway and any caller of :mod:`monai_vecl.deploy.pipeline` start): a child
  (``--child``) imports the pipeline, builds ``StudyPipeline`` and processes the study: cold start = the child's
  first SR built − the parent's clock just before it started the process (interpreter start and imports
  included); per study = median ``StudyPipeline.process`` total of the next ``--studies`` studies.
- the MONAI Deploy app (``deploy/app.py -i <folder> -o <folder>``, stack limit 32 MiB as its docstring asks): what
  its user waits for, process start → the SR file in the output folder, and → the process's exit; with its floor,
  a process that only runs ``import monai.deploy.core`` (which runs ``monai/__init__``: all of MONAI).

Configurations, today's path first (the ratios are against it, per kind): ``deploy.model: bundle`` (network and
text encoder, prompts encoded at start-up) with grounding on; the same with grounding off (what the exported head
can do, so the scoring paths compare alike); ``deploy.model: exported`` (the TorchScript head ``models/model.ts``,
no text encoder, grounding off). The machine is shared: the configurations run interleaved, ``--repeats`` rounds,
and each figure is the median over the rounds with the load average before each run. The CPU seconds (user + system,
all threads) of the process up to its first SR (pipeline) or to its exit (app) depend far less on the other load
than the wall clock does.

Usage: python bench/bench_deploy_start.py [--repeats 3] [--studies 5] [--config deploy/config.yaml] [--no-app]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (("bundle, grounding on (today)", "bundle", True), ("bundle, grounding off", "bundle", False),
           ("exported head, grounding off", "exported", False))
APP_STACK = 32 * 1024 * 1024  # deploy/app.py: holoscan may crash with the default 8 MB stack


def source_file() -> Path:
    import data_store  # the pydicom-data package

    return Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"


def settings(config: Path, model: str, grounding: bool) -> dict:
    """The ``deploy:`` section of ``config`` with the model and grounding of one configuration."""
    deploy = yaml.safe_load(config.read_text())["deploy"]
    deploy["model"] = model
    deploy.setdefault("grounding", {})["enabled"] = grounding
    return deploy


def child(config: Path, model: str, grounding: bool, studies: int) -> None:
    """In a fresh process: import, load, first study (cold start), then ``studies`` more; one JSON line out."""
    from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline

    imported = time.time()
    pipeline = StudyPipeline(PipelineConfig.from_mapping(settings(config, model, grounding), base_dir=config.parent))
    loaded = time.time()
    first = pipeline.process([source_file()])
    if first.sr is None or first.skipped_reason:
        raise RuntimeError(f"no findings SR for the CR: {first.skipped_reason}")
    first_sr, cpu_first_sr = time.time(), time.process_time()
    totals = [pipeline.process([source_file()]).timings["total"] for _ in range(studies)]
    print(json.dumps({"imported": imported, "loaded": loaded, "first_sr": first_sr, "cpu": cpu_first_sr,
                      "per_study": totals,
                      "scores": first.scores, "sr_uid": str(first.sr.SOPInstanceUID),
                      "modules": [m for m in ("monai", "transformers", "sklearn") if m in sys.modules]}))


def run_pipeline(config: Path, model: str, grounding: bool, studies: int) -> dict:
    started = time.time()
    run = subprocess.run([sys.executable, __file__, "--config", str(config), "--studies", str(studies),
                          "--child", model, "on" if grounding else "off"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"{model} grounding={grounding}: {run.stderr[-3000:]}")
    r = json.loads(run.stdout.strip().splitlines()[-1])
    return {**r, "import": r["imported"] - started, "load": r["loaded"] - r["imported"],
            "first study": r["first_sr"] - r["loaded"], "cold": r["first_sr"] - started,
            "per study": statistics.median(r["per_study"])}


def run_app(config: Path, model: str, grounding: bool) -> dict:
    """``deploy/app.py`` on a folder holding the CR: seconds to its SR file and to the process's exit."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        (tmp / "in" / "cr.dcm").write_bytes(source_file().read_bytes())
        deploy = settings(config, model, grounding)
        deploy["bundle_root"] = str((config.parent / deploy["bundle_root"]).resolve())
        (tmp / "config.yaml").write_text(yaml.safe_dump({"deploy": deploy}))
        env = {**os.environ, "VECL_DEPLOY_CONFIG": str(tmp / "config.yaml")}
        started, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        app = subprocess.Popen([sys.executable, str(ROOT / "deploy" / "app.py"), "-i", str(tmp / "in"), "-o",
                                str(tmp / "out")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_STACK, (APP_STACK, APP_STACK)))
        first_sr = None
        while app.poll() is None:
            if first_sr is None and any((tmp / "out").glob("*.dcm")):
                first_sr = time.time()
            time.sleep(0.01)
        exited, after = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        stderr = app.stderr.read()
        if app.returncode != 0 or not any((tmp / "out").glob("*.dcm")):
            raise RuntimeError(f"deploy/app.py {model} grounding={grounding}: exit {app.returncode}: {stderr[-3000:]}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return {"cold": (first_sr or exited) - started, "exit": exited - started, "cpu": cpu}


def run_sdk_import() -> dict:
    """Seconds of a process that only imports the MONAI Deploy SDK: the app's floor, whatever the pipeline does."""
    started, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-W", "ignore", "-c", "import monai.deploy.core"], cwd=ROOT, check=True,
                   capture_output=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_STACK,
                                                                              (APP_STACK, APP_STACK)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cold": time.time() - started,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all configurations")
    parser.add_argument("--studies", type=int, default=5, help="studies after the first, for the per-study time")
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "config.yaml")
    parser.add_argument("--no-app", action="store_true", help="leave out the MONAI Deploy app runs")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "GROUNDING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.config, args.child[0], args.child[1] == "on", args.studies)
        return
    kinds = ["pipeline"] + ([] if args.no_app else ["app"])
    runs: dict[tuple[str, str], list[dict]] = {(kind, name): [] for kind in kinds for name, _, _ in CONFIGS}
    floor: list[dict] = []
    for _ in range(args.repeats):
        for kind in kinds:
            for name, model, grounding in CONFIGS:
                load = load_average()
                r = (run_pipeline(args.config, model, grounding, args.studies) if kind == "pipeline"
                     else run_app(args.config, model, grounding))
                runs[kind, name].append({**r, "load average": load})
        if not args.no_app:
            load = load_average()
            floor.append({**run_sdk_import(), "load average": load})
    print(f"deploy cold start to the first SR and per-study time, CR RG1_UNCR.dcm 1955x1841, {args.repeats} "
          f"interleaved rounds (medians; load average before each run), {args.studies} studies after the first")
    columns = {"pipeline": ("import", "load", "first study", "cold", "cpu", "per study"),
               "app": ("cold", "exit", "cpu")}
    for kind in kinds:
        keys = columns[kind]
        print(f"\n{'StudyPipeline' if kind == 'pipeline' else 'MONAI Deploy app (deploy/app.py)'}")
        print(f"{'configuration':30} " + " ".join(f"{k + ' s':>13}" for k in keys)
              + f" {'cold speed-up':>13}" + (f" {'per-study':>10}" if "per study" in keys else "") + "  load averages")
        base = {k: statistics.median(r[k] for r in runs[kind, CONFIGS[0][0]]) for k in keys}
        for name, _, _ in CONFIGS:
            median = {k: statistics.median(r[k] for r in runs[kind, name]) for k in keys}
            print(f"{name:30} " + " ".join(f"{median[k]:13.2f}" for k in keys)
                  + f" {base['cold'] / median['cold']:12.2f}x"
                  + (f" {base['per study'] / median['per study']:9.2f}x" if "per study" in keys else "")
                  + "  " + " ".join(f"{r['load average']:.2f}" for r in runs[kind, name])
                  + "  cold " + " ".join(f"{r['cold']:.2f}" for r in runs[kind, name]))
    if floor:
        print(f"{'import monai.deploy.core only':30} {statistics.median(r['cold'] for r in floor):13.2f}" + " " * 14
              + f"{statistics.median(r['cpu'] for r in floor):13.2f}" + " " * 14
              + "  " + " ".join(f"{r['load average']:.2f}" for r in floor)
              + "  cold " + " ".join(f"{r['cold']:.2f}" for r in floor))
    bundle_off, exported = runs["pipeline", CONFIGS[1][0]][0], runs["pipeline", CONFIGS[2][0]][0]
    diff = max(abs(bundle_off["scores"][k] - exported["scores"][k]) for k in bundle_off["scores"])
    print(f"\nexported vs bundle (grounding off): max score difference {diff:.2e}, same SR UID (same SR content): "
          f"{bundle_off['sr_uid'] == exported['sr_uid']}; imported by the exported pipeline: {exported['modules']}")


if __name__ == "__main__":
    main()
