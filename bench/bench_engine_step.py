"""Benchmark: seconds per training step on MONAI engines (``VECLTrainer``) against a plain loop, same run.

Both run the bundle's own pieces from ``train.yaml`` (the `small` network, the loss, Adam, the DALI/MONAI
loader on the embedded phantom, grad clipping): the baseline is the hand-written loop the trainer
replaced — batch → ``VECLTrainStep`` → backward → clip → ``optimizer.step`` → the per-step target and
fusion statistics — and the engine run is
``train#trainer`` with its handlers (the resume point every ``checkpoint_every`` steps, stats, LR
schedule) and validation left out, so the figure is what the engines and their handlers add per step. Prints the median wall seconds per step of each
and the ratio engine / loop.

Usage: python bench/bench_engine_step.py [--steps 30] [--repeats 2] [override=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"


def parser_for(out: Path, overrides: list[str]) -> ConfigParser:
    """train.yaml with ``overrides`` (diagnose_training's reader), writing to ``out``, on the main job's phantom."""
    sys.path.insert(0, str(Path(__file__).parent))
    from diagnose_training import parse_config

    parser = parse_config(overrides)
    parser["output_dir"] = str(out)
    parser["phantom_dir"] = str(BUNDLE / "outputs" / "phantom")  # generated once by the main job
    return parser


def plain_loop(parser: ConfigParser, steps: int) -> list[float]:
    from monai_vecl.training import diagnostics
    from monai_vecl.training.step import VECLTrainStep

    network, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    optimizer, loader = parser.get_parsed_content("optimizer"), parser.get_parsed_content("train#dataloader")
    step, clip, device = VECLTrainStep(network, loss_fn), parser.get_parsed_content("grad_clip"), network.intensity_mean.device
    times, start = [], time.perf_counter()
    for i, batch in enumerate(loader.epoch(0)):
        network.train()
        loss, logits, _ = step(batch["image"].to(device), batch["text"], batch["image_mh"], batch["sentence_mh"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
        optimizer.step()
        # the per-step statistics the replaced trainer logged, as the engine does
        diagnostics.target_stats(loss_fn.targets(batch["image_mh"], batch["sentence_mh"]))
        diagnostics.image_dependence(logits)
        now = time.perf_counter()
        times.append(now - start)
        start = now
        if i + 1 == steps:
            break
    return times


def engine(parser: ConfigParser, steps: int) -> list[float]:
    parser["train#handlers"] = [h for h in parser["train#handlers"]
                                if h["_target_"] not in ("ValidationHandler",)]
    trainer = parser.get_parsed_content("train#trainer")
    times, start = [], [time.perf_counter()]

    def tick(engine) -> None:
        now = time.perf_counter()
        times.append(now - start[0])
        start[0] = now
        if len(times) == steps:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    trainer.run()
    return times


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=30)
    args.add_argument("--repeats", type=int, default=2)
    args.add_argument("overrides", nargs="*", help="bundle overrides key=value")
    opts = args.parse_args()
    results: dict[str, list[float]] = {"plain loop (baseline)": [], "VECLTrainer (MONAI engines)": []}
    for _ in range(opts.repeats):
        for name, run in (("plain loop (baseline)", plain_loop), ("VECLTrainer (MONAI engines)", engine)):
            with tempfile.TemporaryDirectory() as tmp:
                torch.manual_seed(0)
                times = run(parser_for(Path(tmp), opts.overrides), opts.steps)
            results[name] += times[2:]  # the first steps warm up the loader and the allocator
    base = statistics.median(results["plain loop (baseline)"])
    print(f"{'configuration':32s} {'s/step (median)':>16s} {'ratio':>7s}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:32s} {med:16.3f} {med / base:7.3f}")


if __name__ == "__main__":
    main()
