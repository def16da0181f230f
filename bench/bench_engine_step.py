"""Benchmark: seconds per training step on MONAI engines (``VECLTrainer``) against a plain loop, same run.

Both drive the same objects, parsed once from ``train.yaml`` (the `small` network, the loss, Adam, the
one-cycle schedule, the DALI/MONAI loader on the embedded phantom, grad clipping), so the network, its
memory and its numerics are the same for both and only the driver differs: the baseline is the
hand-written loop the trainer replaced (``training/trainer.py`` before the engines) — batch →
``VECLTrainStep`` → finite-loss check → backward → clip → ``optimizer.step`` → ``lr_scheduler.step`` → the
loss terms, target and fusion statistics as floats, the resume point every ``checkpoint_every`` steps — and
the engine run is ``train#trainer`` with its handlers (the resume point, stats, LR schedule) and validation
left out, so the figure is what the engines and their handlers add per step. Each arm reads the epochs from
the start with its own loader pipeline, so the k-th step of each sees the same batch. Neither shows a
progress bar.

The arms take turns in blocks of ``--steps`` steps (the engine paused with ignite's ``interrupt()`` and
resumed with ``run()``), the first arm of each round alternating, so the load of other processes on the
machine falls on both alike; ``--warmup`` steps of each arm (loader start, allocator) are left out, and the
first ``--settle`` steps of every block: a resumed arm starts on the batches its loader decoded while paused,
so its first step is short and its second long, which continuous training never sees. Prints,
per arm, the median wall and CPU seconds (this process, all threads) per step, the ratio engine / loop of
those medians and the median of the per-round ratios of block medians (each pair run back to back, so a
change of load between rounds cancels), the fastest tenth of the wall seconds (other processes only add time)
and its ratio, and the torch thread count each arm stepped with.

Usage: python bench/bench_engine_step.py [--steps 25] [--repeats 3] [--warmup 3] [--settle 2] [override=value ...]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from ignite.engine import Engine, Events
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


class Timer:
    """Wall and process CPU seconds of each step since the previous one, leaving out the first ``settle`` steps
    after each :meth:`start`."""

    def __init__(self, settle: int) -> None:
        self.settle = settle
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.threads: set[int] = set()

    def start(self) -> None:
        self._wall, self._cpu, self._skip = time.perf_counter(), time.process_time(), self.settle

    def tick(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if self._skip:
            self._skip -= 1
        else:
            self.wall.append(wall - self._wall)
            self.cpu.append(cpu - self._cpu)
            self.threads.add(torch.get_num_threads())
        self._wall, self._cpu = wall, cpu


class PlainLoop:
    """The replaced trainer's step loop on ``parser``'s pieces, run ``n`` steps at a time."""

    def __init__(self, parser: ConfigParser, settle: int):
        from monai_vecl.files import atomic_open
        from monai_vecl.training import diagnostics
        from monai_vecl.training.step import VECLTrainStep

        network, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
        optimizer, scheduler = parser.get_parsed_content("optimizer"), parser.get_parsed_content("lr_scheduler")
        loader = parser.get_parsed_content("train#dataloader")
        step_module = VECLTrainStep(network, loss_fn)
        clip, every = parser.get_parsed_content("grad_clip"), parser.get_parsed_content("checkpoint_every")
        device = network.intensity_mean.device
        last = Path(parser.get_parsed_content("ckpt_dir")) / "plain_loop.pt"  # beside the engine's last.pt
        self.timer = Timer(settle)

        def steps() -> Iterator[None]:
            sums: dict[str, float] = {}  # the epoch means' running sums, as the replaced trainer kept them
            batches = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
            for done, batch in enumerate(batches, 1):
                network.train()
                images = batch["image"].to(device, non_blocking=True)
                loss, logits, terms = step_module(images, batch["text"], batch["image_mh"], batch["sentence_mh"])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
                optimizer.step()
                scheduler.step()
                stats = {"train_loss": float(loss.detach()), **{f"loss/{k}": float(v) for k, v in terms.items()}}
                stats |= diagnostics.target_stats(loss_fn.targets(batch["image_mh"], batch["sentence_mh"]))
                stats |= diagnostics.image_dependence(logits)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                if every and done % every == 0:
                    with atomic_open(last) as f:
                        torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                                    "lr_scheduler": scheduler.state_dict()}, f)
                self.timer.tick()
                yield

        self._steps = steps()

    def run(self, n: int) -> None:
        self.timer.start()
        for _ in itertools.islice(self._steps, n):
            pass


class EngineLoop:
    """``train#trainer`` (``parser`` without its ``ValidationHandler``), paused by ``interrupt()`` every ``n`` steps."""

    def __init__(self, parser: ConfigParser, settle: int):
        self.trainer = parser.get_parsed_content("train#trainer")
        self.timer = Timer(settle)
        self._left = 0
        self.trainer.add_event_handler(Events.ITERATION_COMPLETED, self._tick)

    def _tick(self, engine: Engine) -> None:
        self.timer.tick()
        self._left -= 1
        if self._left == 0:
            engine.interrupt()

    def run(self, n: int) -> None:
        self._left = n
        self.timer.start()
        self.trainer.run()

    def close(self) -> None:
        """Ends the paused run (ignite finishes it at the end of the current iteration)."""
        self.trainer.terminate()
        self.trainer.run()


def paired_ratio(times: list[float], base: list[float], block: int) -> float:
    """Median over rounds of (median of this arm's block) / (median of the baseline's block of that round)."""
    blocks = range(0, len(times), block)
    return statistics.median(statistics.median(times[i : i + block]) / statistics.median(base[i : i + block])
                             for i in blocks)


def fastest_decile(times: list[float]) -> float:
    """Upper bound of the fastest tenth of the steps: other processes only ever add time, so on a shared machine
    this is closer to what a step itself costs than the median."""
    return statistics.quantiles(times, n=10)[0]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=25, help="steps of each arm per round")
    args.add_argument("--repeats", type=int, default=3, help="rounds (each arm once per round, order alternating)")
    args.add_argument("--warmup", type=int, default=3, help="steps of each arm run first and left out")
    args.add_argument("--settle", type=int, default=2, help="steps left out at the start of every block")
    args.add_argument("overrides", nargs="*", help="bundle overrides key=value")
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        parser = parser_for(Path(tmp), opts.overrides)
        # before anything is parsed: setting a key drops what the parser has built
        parser["train#handlers"] = [h for h in parser["train#handlers"] if h["_target_"] != "ValidationHandler"]
        arms = {"plain loop (baseline)": PlainLoop(parser, opts.settle),
                "VECLTrainer (MONAI engines)": EngineLoop(parser, opts.settle)}
        for arm in arms.values():
            arm.run(opts.warmup)
            arm.timer.wall, arm.timer.cpu = [], []
        order = list(arms.values())
        for _ in range(opts.repeats):
            for arm in order:
                arm.run(opts.steps)
            order.reverse()
        arms["VECLTrainer (MONAI engines)"].close()
    base = arms["plain loop (baseline)"].timer
    base_wall, base_cpu = statistics.median(base.wall), statistics.median(base.cpu)
    base_fast = fastest_decile(base.wall)
    print(f"{'configuration':30s} {'steps':>5s} {'wall s/step':>11s} {'ratio':>6s} {'paired':>6s} {'fastest 10%':>11s} "
          f"{'ratio':>6s} {'CPU s/step':>10s} {'ratio':>6s} {'paired':>6s} {'threads':>7s}")
    for name, arm in arms.items():
        wall, cpu, fast = statistics.median(arm.timer.wall), statistics.median(arm.timer.cpu), fastest_decile(arm.timer.wall)
        paired = [paired_ratio(getattr(arm.timer, k), getattr(base, k), opts.steps - opts.settle)
                  for k in ("wall", "cpu")]
        print(f"{name:30s} {len(arm.timer.wall):5d} {wall:11.3f} {wall / base_wall:6.3f} {paired[0]:6.3f} {fast:11.3f} "
              f"{fast / base_fast:6.3f} {cpu:10.3f} {cpu / base_cpu:6.3f} {paired[1]:6.3f} "
              f"{sorted(arm.timer.threads)!s:>7s}")


if __name__ == "__main__":
    main()
