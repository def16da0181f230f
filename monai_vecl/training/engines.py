"""VECL training on MONAI engines: the trainer, and the handlers MONAI has no equivalent for.

:class:`VECLTrainer` is a ``monai.engines.SupervisedTrainer`` whose iteration is the VECL step
(tokenize, encode, all-gather with gradient under DDP, the N_global × N_global loss, gradient
clipping). Everything around it is a handler in ``train.yaml``: MONAI's ``ValidationHandler``,
``LrScheduleHandler``, ``StatsHandler`` and ``--tracking mlflow``'s ``MLFlowHandler``, plus these:

* :class:`ResumeCheckpoint` — the step-exact resume point, written atomically and restored at start.
  MONAI's ``CheckpointSaver`` writes in place (a kill during a save would leave no usable
  checkpoint), and a ``CheckpointLoader`` in ``train#handlers`` cannot name the trainer it is a
  handler of without a circular config reference; this handler is given the trainer on ``attach``;
* :class:`BestWeights` — the best validation epoch's weights as ``models/model.pt``, with its best
  score kept in the resume point (a resumed run never replaces a better model with a worse one);
* :class:`RunConfig` — the run's configuration in the resume point: resuming with another one is
  refused, naming the keys that changed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.engines import SupervisedTrainer
from torch import nn

from monai_vecl.config import check_bool
from monai_vecl.files import atomic_open
from monai_vecl.training import diagnostics
from monai_vecl.training.distributed import is_distributed, rank_and_world
from monai_vecl.training.loaders import TrainLoader
from monai_vecl.training.step import VECLTrainStep

logger = logging.getLogger(__name__)

LAST = "last.pt"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"a.b.c": "value"}`` with values as strings (lists kept as their repr)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


class _ResumableBatches:
    """The trainer's data: batches from the trainer's current iteration on, across epochs.

    Ignite counts a resumed epoch from the restored iteration but reads its data from the start of the
    iterable, so the iterable itself starts where the run stopped; the draws depend only on (epoch, step)."""

    def __init__(self, loader: TrainLoader):
        self.loader = loader
        self.engine: Engine | None = None

    def __iter__(self) -> Iterator[dict]:
        epoch, step = divmod(self.engine.state.iteration if self.engine is not None else 0,
                             self.loader.steps_per_epoch)
        while True:
            yield from self.loader.epoch(epoch, step)
            epoch, step = epoch + 1, 0


class VECLTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` running the VECL step on batches of a :class:`TrainLoader`.

    Args:
        device, max_epochs, network, optimizer, train_handlers, amp, amp_kwargs: as ``SupervisedTrainer``
            (autocast is used on CUDA only; ``amp_kwargs`` e.g. ``{"dtype": torch.bfloat16}``).
        train_loader: :class:`~monai_vecl.training.loaders.TrainLoader` (DALI or MONAI).
        loss_function: :class:`monai_vecl.losses.VECLLoss`.
        grad_clip: max gradient norm (``None`` or 0: off).
        find_unused_parameters: passed to DDP; the networks hold parameters no step uses (text pooler).

    Each iteration's output (``[record]``) holds ``loss`` and the loss terms, relation-target statistics and the fusion's
    image dependence; their epoch means go into ``state.metrics`` as ``epoch_<name>`` at every epoch end,
    with the counts of training images used and left out per reason.
    """

    def __init__(self, device: torch.device | str, max_epochs: int, train_loader: TrainLoader, network: nn.Module,
                 optimizer: torch.optim.Optimizer, loss_function: nn.Module, grad_clip: float | None = None,
                 train_handlers: list | None = None, amp: bool = False, amp_kwargs: dict | None = None,
                 find_unused_parameters: bool = True, **kwargs: Any):
        device = torch.device(device)
        self.loader = train_loader
        batches = _ResumableBatches(train_loader)
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=batches,
                         epoch_length=train_loader.steps_per_epoch, network=network.to(device), optimizer=optimizer,
                         loss_function=loss_function,
                         amp=amp and device.type == "cuda", amp_kwargs=amp_kwargs, decollate=False, **kwargs)
        batches.engine = self
        self.grad_clip = grad_clip
        self.step_module: nn.Module = VECLTrainStep(network, loss_function)
        if is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=ids, find_unused_parameters=find_unused_parameters)
        self._sums: dict[str, float] = {}
        self._steps = 0
        self.add_event_handler(Events.STARTED, self._log_counts)
        self.add_event_handler(Events.EPOCH_STARTED, self._reset_means)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_means)
        # attached after the epoch means, so that validation, stats and tracking see this epoch's
        for handler in train_handlers or ():
            handler.attach(self)

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> list[dict[str, Any]]:
        images = batchdata["image"].to(engine.state.device, non_blocking=True)
        self.network.train()
        autocast = (torch.autocast(device_type=engine.state.device.type, **self.amp_kwargs) if self.amp
                    else contextlib.nullcontext())
        with autocast:
            loss, logits, terms = self.step_module(images, batchdata["text"], batchdata["image_mh"],
                                                   batchdata["sentence_mh"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at iteration {engine.state.iteration}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
        self.optimizer.step()
        stats = {f"loss/{k}": float(v) for k, v in terms.items()}
        if self.loss_function.kind != "clip":
            targets = self.loss_function.targets(batchdata["image_mh"], batchdata["sentence_mh"])
            stats |= {f"targets/{k}": v for k, v in diagnostics.target_stats(targets).items()}
        stats |= {f"fusion/{k}": v for k, v in diagnostics.image_dependence(logits).items()}
        for key, value in stats.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._steps += 1
        # one record in MONAI's decollated layout, so that `from_engine(["loss"], first=True)` (StatsHandler,
        # MLFlowHandler of --tracking mlflow) reads the loss
        return [{"loss": loss.detach(), **stats}]

    def _reset_means(self, engine: Engine) -> None:
        self._sums, self._steps = {}, 0

    def _epoch_means(self, engine: Engine) -> None:
        engine.state.metrics.update({f"epoch_{k}": v / max(1, self._steps) for k, v in self._sums.items()})

    def _log_counts(self, engine: Engine) -> None:
        counts = self.loader.data.counts
        logger.info("training images: %d used, left out: %s", counts.used, counts.skipped or "none")
        engine.state.metrics.update({"train_images_used": counts.used,
                                     **{f"train_images_skipped.{k}": v for k, v in counts.skipped.items()}})


class RunConfig:
    """The run's tracked configuration as a checkpoint entry: a resume with a different one is refused.

    ``state_dict()`` gives the flattened configuration; ``load_state_dict()`` (called by ``CheckpointLoader``)
    raises ``ValueError`` naming every key whose value differs from the checkpoint's."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = flatten(params)

    def state_dict(self) -> dict[str, str]:
        return dict(self.params)

    def load_state_dict(self, saved: Mapping[str, str]) -> None:
        changed = sorted(k for k in set(saved) | set(self.params) if saved.get(k) != self.params.get(k))
        if changed:
            details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {self.params.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume: the configuration differs from the checkpoint's in {changed} ({details}). "
                             "Restore those values, or start afresh with --resume False or another output_dir.")


class BestWeights:
    """Evaluator handler: when the key metric beats the best so far, writes the network's weights (a plain
    ``state_dict`` on the CPU) atomically to ``model_file``. Its best score travels in the resume point."""

    def __init__(self, network: nn.Module, model_file: str | os.PathLike, key_metric: str = "val_pnc_auc"):
        self.network, self.model_file, self.key_metric = network, Path(model_file), key_metric
        self.best, self.best_epoch = -math.inf, -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metric = float(engine.state.metrics[self.key_metric])
        if metric > self.best:
            self.best, self.best_epoch = metric, int(engine.state.epoch)
            engine.state.metrics[f"best_{self.key_metric}"] = metric
            if rank_and_world()[0] == 0:
                with atomic_open(self.model_file) as f:
                    torch.save({k: v.detach().cpu() for k, v in self.network.state_dict().items()}, f)
                logger.info("epoch %d: best %s %.4f, weights written to %s", self.best_epoch, self.key_metric,
                            metric, self.model_file)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class ResumeCheckpoint:
    """Trainer handler: the run's resume point ``<save_dir>/last.pt``.

    Writes ``save_dict`` and the trainer (each entry's ``state_dict()``) atomically every ``every`` iterations
    (0: never mid-epoch), at every epoch end, at completion, and when the run stops on an exception or Ctrl-C
    (the exception is then raised again); rank 0 writes. With ``resume`` and an existing file, every rank
    restores it when the run starts (``run_config`` first, so a changed configuration is refused before
    anything is loaded) and training continues at the next step.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], every: int = 0, resume: bool = True,
                 map_location: Any = "cpu"):
        self.path = Path(save_dir) / LAST
        self.save_dict, self.every = dict(save_dict), every
        self.resume, self.map_location = check_bool("resume", resume), map_location

    def attach(self, engine: Engine) -> None:
        self.save_dict["trainer"] = engine
        self._completed = engine.state.iteration
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        if self.resume and self.path.is_file():
            engine.add_event_handler(Events.STARTED, self.load)
        if self.every:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._save_and_raise)

    def save(self, engine: Engine) -> None:
        if rank_and_world()[0] == 0:
            state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
            # ignite counts an iteration when it starts: one that an exception cut short is run again
            state["trainer"]["iteration"] = self._completed
            with atomic_open(self.path) as f:
                torch.save(state, f)

    def _count(self, engine: Engine) -> None:
        self._completed = engine.state.iteration

    def load(self, engine: Engine) -> None:
        state = torch.load(self.path, map_location=self.map_location, weights_only=False)
        order = sorted(self.save_dict, key=lambda name: name != "run_config")
        Checkpoint.load_objects({name: self.save_dict[name] for name in order}, state)
        self._completed = engine.state.iteration
        logger.info("resumed from %s at epoch %d, iteration %d", self.path, engine.state.epoch, engine.state.iteration)

    def _save_and_raise(self, engine: Engine, error: BaseException) -> None:
        self.save(engine)
        raise error


class FitCheck:
    """Evaluator handler: after each validation pass, runs ``evaluator`` (the same zero-shot scoring on a fixed
    subset of the training split) and adds its metrics (``train_pnc_auc`` ...) to the validation's, so every
    handler after this one (stats, MLflow) reports both: can the model fit what it trains on?"""

    def __init__(self, evaluator: Engine | None):
        self.evaluator = evaluator

    def attach(self, engine: Engine) -> None:
        if self.evaluator is not None and len(self.evaluator.data_loader.dataset):  # an empty subset: switched off
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.evaluator.run(global_epoch=engine.state.epoch)
        engine.state.metrics.update(self.evaluator.state.metrics)


def shard_sampler(dataset: Any) -> Any:
    """Under DDP, a sampler giving each rank its own images, none repeated (the metric gathers them); else None."""
    if not is_distributed() or len(dataset) == 0:
        return None
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, shuffle=False, even_divisible=False)


class TrackedParams:
    """Trainer handler: logs the run's configuration as MLflow parameters into the run that ``--tracking mlflow``'s
    ``MLFlowHandler`` opened (the same tracking URI, experiment and run name), once per process; without an
    open run (tracking off) it does nothing. MONAI's handler itself logs only ``max_epochs`` and ``epoch_length``."""

    def __init__(self, params: Mapping[str, Any], tracking_uri: str, experiment_name: str, run_name: str):
        self.params = flatten(params)
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self._done = False

    def attach(self, engine: Engine) -> None:
        # EPOCH_STARTED: after every STARTED handler, so after the MLflow handler has opened its run
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self._done or rank_and_world()[0] != 0:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Param

        if self.tracking_uri.startswith("sqlite:///") and not Path(self.tracking_uri[len("sqlite:///"):]).is_file():
            self._done = True  # tracking is off: no MLflowHandler has created the store (and this must not)
            return
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{self.run_name}' "
                                  "and attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"],
                                  max_results=1) if experiment is not None else []
        if not runs:  # tracking is off (no --tracking mlflow): nothing to log into
            self._done = True
            return
        known = runs[0].data.params
        new = [Param(k, v) for k, v in self.params.items() if k not in known]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(runs[0].info.run_id, params=new[start : start + 100])
        self._done = True


SCHEDULES = ("plateau", "onecycle")


def build_scheduler(kind: str, optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float,
                    warmup_fraction: float = 0.1, plateau_factor: float = 0.5, plateau_patience: int = 2) -> Any:
    """The learning-rate schedule of a recipe: ``plateau`` (the VECL reference, stepped per epoch on the
    validation metric) or ``onecycle`` (warm-up to ``max_lr`` over ``warmup_fraction`` of ``total_steps``, then
    cosine decay; stepped per optimiser step: the short from-scratch CPU run)."""
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=plateau_factor,
                                                          patience=plateau_patience)
    if kind == "onecycle":
        # torch needs at least two warm-up and two decay steps; very short (test) runs get them
        total_steps = max(4, total_steps)
        pct = min(0.5, max(warmup_fraction, 2.0 / total_steps))
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct)
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {kind!r}")
