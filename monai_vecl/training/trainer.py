"""The VECL training workflow: epochs of steps, validation every epoch, checkpoints, resume, MLflow.

One process per device; under ``torchrun`` the step module is wrapped in DDP and rank 0 alone
writes checkpoints, logs and shows the progress bar. A checkpoint records the next step to run,
so an interrupted run (Ctrl-C, a killed job) continues from there with the same MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from monai_vecl.training import diagnostics
from monai_vecl.training.distributed import is_distributed, rank_and_world
from monai_vecl.training.loaders import TrainLoader
from monai_vecl.training.step import VECLTrainStep
from monai_vecl.training.tracking import MlflowTracker
from monai_vecl.training.validation import ValidationResult, ZeroShotValidation, plot_roc

logger = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file and rename, so an interruption never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class VECLTrainer:
    """Trains a VECL network.

    Args:
        network: the VECL network (moved to ``device``).
        loss_fn: :class:`monai_vecl.losses.VECLLoss`.
        optimizer: optimiser over ``network``'s parameters.
        train_loader: :class:`~monai_vecl.training.loaders.TrainLoader`.
        validation: :class:`~monai_vecl.training.validation.ZeroShotValidation` or ``None``.
        train_validation: the same zero-shot scoring on a fixed subset of the training split (``prefix="train"``),
            logged beside validation every epoch: can the model fit what it trains on?
        max_epochs: epochs to train.
        checkpoint_dir: folder of ``last.pt`` / ``best.pt``.
        model_file: where the final plain ``state_dict`` (best validation epoch, else last) is written.
        lr_scheduler: stepped on the validation metric (``ReduceLROnPlateau``), else per epoch, or after every
            optimiser step with ``scheduler_interval="step"`` (warm-up and one-cycle schedules).
        key_metric: validation metric that selects the best checkpoint (higher is better).
        grad_clip: max gradient norm (``None`` or 0: off).
        amp_dtype: autocast dtype on CUDA (``None``: off); never used on the CPU.
        checkpoint_every: also save ``last.pt`` every this many steps (0: epoch ends only).
        resume: continue from ``last.pt`` when it exists.
        max_steps: stop after this global step (a checkpoint is written); ``None``: run all epochs.
        tracker: MLflow tracker; ``params``: logged as run parameters; ``config_files``: logged as artifacts.
        device: training device; ``None`` picks CUDA when present.
        find_unused_parameters: passed to DDP; the networks hold parameters no step uses (text pooler, ViT
            cross-attention norms), whose buckets DDP would otherwise never average.
        progress: show a tqdm progress bar (rank 0).
    """

    def __init__(
        self,
        network: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: TrainLoader,
        validation: ZeroShotValidation | None,
        max_epochs: int,
        checkpoint_dir: str | os.PathLike,
        model_file: str | os.PathLike,
        lr_scheduler: Any = None,
        key_metric: str = "val_pnc_auc",
        grad_clip: float | None = 0.25,
        amp_dtype: torch.dtype | None = torch.bfloat16,
        checkpoint_every: int = 0,
        resume: bool = True,
        max_steps: int | None = None,
        tracker: MlflowTracker | None = None,
        params: Mapping[str, Any] | None = None,
        config_files: Sequence[str | os.PathLike] = (),
        device: torch.device | str | None = None,
        find_unused_parameters: bool = True,
        progress: bool = True,
        train_validation: ZeroShotValidation | None = None,
        scheduler_interval: str = "epoch",
    ):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.network = network.to(self.device)
        self.loss_fn, self.optimizer, self.lr_scheduler = loss_fn, optimizer, lr_scheduler
        self.loader, self.validation, self.train_validation = train_loader, validation, train_validation
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.checkpoint_dir, self.model_file = Path(checkpoint_dir), Path(model_file)
        self.key_metric, self.grad_clip = key_metric, grad_clip
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.checkpoint_every, self.resume = checkpoint_every, resume
        self.tracker = tracker or MlflowTracker(None)
        self.params, self.config_files = dict(params or {}), list(config_files)
        self.find_unused_parameters, self.progress = find_unused_parameters, progress
        self.rank, self.world_size = rank_and_world()
        self.is_main = self.rank == 0
        # Progress state, saved in checkpoints.
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_metric, self.best_epoch = -math.inf, -1
        self.history: list[dict[str, float]] = []
        self._epoch_means: dict[str, float] = {}  # means of the step statistics of the epoch so far
        self.best_result: ValidationResult | None = None

    # ------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "mlflow_run_id": self.tracker.run_id,
            "rng": torch.get_rng_state(),
        }

    def save(self, name: str = LAST, sync: bool = True) -> None:
        """Rank 0 writes the checkpoint; ``sync`` waits for it on every rank."""
        if self.is_main:
            save_atomic(self.state(), self.checkpoint_dir / name)
        if sync and is_distributed():
            dist.barrier()

    def load(self, path: Path) -> str | None:
        """Restore training state from a checkpoint; returns its MLflow run id."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state["lr_scheduler"] is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        torch.set_rng_state(state["rng"])
        return state["mlflow_run_id"]

    # ------------------------------------------------------------ the loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _train_step(self, step_module: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step; returns the loss, its terms and this batch's relation-target statistics."""
        self.network.train()
        images = batch["image"].to(self.device, non_blocking=True)
        with self._autocast():
            loss, logits, terms = step_module(images, batch["text"], batch["image_mh"], batch["sentence_mh"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.lr_scheduler is not None and self.scheduler_interval == "step":
            self.lr_scheduler.step()
        stats = {"train_loss": float(loss.detach()), **{f"loss/{k}": float(v) for k, v in terms.items()}}
        if self.loss_fn.kind != "clip":
            targets = self.loss_fn.targets(batch["image_mh"], batch["sentence_mh"])
            stats |= {f"targets/{k}": v for k, v in diagnostics.target_stats(targets).items()}
        stats |= {f"fusion/{k}": v for k, v in diagnostics.image_dependence(logits).items()}
        return stats

    def _validate(self) -> dict[str, float]:
        fitted = self.train_validation(self.network).metrics if self.train_validation is not None else {}
        if self.validation is None:
            return fitted
        result = self.validation(self.network)
        metric = result.metrics[self.key_metric]
        if metric > self.best_metric:
            self.best_metric, self.best_epoch, self.best_result = metric, self.epoch, result
            self.save(BEST)
        return {**fitted, **result.metrics}

    def _scheduler_step(self, metrics: Mapping[str, float]) -> None:
        if self.lr_scheduler is None or self.scheduler_interval == "step":
            return
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.key_metric in metrics:
                self.lr_scheduler.step(metrics[self.key_metric])
        else:
            self.lr_scheduler.step()

    def _start(self) -> None:
        last = self.checkpoint_dir / LAST
        run_id = None
        if self.resume and last.is_file():
            run_id = self.load(last)
            logger.info("resuming from %s at epoch %d step %d (global step %d)", last, self.epoch,
                        self.step_in_epoch, self.global_step)
        if self.is_main:
            started = self.tracker.start(run_id)
            if run_id is None and started is not None:
                self.tracker.log_params(self.params)
                for path in self.config_files:
                    self.tracker.log_artifact(path, "config")
            counts = self.loader.data.counts
            logger.info("training images: %d used, left out: %s", counts.used, counts.skipped or "none")
            if run_id is None:
                self.tracker.log_metrics({"train_images_used": counts.used,
                                          **{f"train_images_skipped.{k}": v for k, v in counts.skipped.items()}}, 0)

    def run(self) -> dict[str, float]:
        """Train to ``max_epochs`` (or ``max_steps``); returns the last validation metrics."""
        self._start()
        step_module: nn.Module = VECLTrainStep(self.network, self.loss_fn)
        if is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=ids, find_unused_parameters=self.find_unused_parameters)
        metrics: dict[str, float] = {}
        try:
            while self.epoch < self.max_epochs:
                if self._run_epoch(step_module):
                    # max_steps reached: the checkpoint is written; the run continues on the next start.
                    if self.is_main:
                        self.tracker.end("KILLED")
                    return metrics
                metrics = {**self._epoch_means, **self._validate()}
                self._scheduler_step(metrics)
                if self.is_main:
                    self.history.append({"epoch": self.epoch + 1, **metrics})
                    self.tracker.log_metrics({**metrics, "epoch": self.epoch + 1}, self.global_step)
                    logger.info("epoch %d/%d: %s", self.epoch + 1, self.max_epochs,
                                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "." not in k and "/" not in k))
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.save(LAST)
        except BaseException as err:
            # Keep what was done so the next start resumes (no barrier: other ranks may be gone).
            self.save(LAST, sync=False)
            if self.is_main:
                self.tracker.end("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        self._finish()
        return metrics

    def _run_epoch(self, step_module: nn.Module) -> bool:
        """Steps of the current epoch from ``step_in_epoch``; True when ``max_steps`` stopped the run."""
        total = self.loader.steps_per_epoch
        bar = None
        sums: dict[str, float] = {}
        steps = 0
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{self.max_epochs}",
                       dynamic_ncols=True)
        try:
            for batch in self.loader.epoch(self.epoch, self.step_in_epoch):
                start = time.perf_counter()
                stats = self._train_step(step_module, batch)
                self.step_in_epoch += 1
                self.global_step += 1
                steps += 1
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                self._epoch_means = {f"epoch_{k}": v / steps for k, v in sums.items()}
                if self.is_main:
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.tracker.log_metrics({"train_loss": stats["train_loss"], "lr": lr,
                                              "step_seconds": time.perf_counter() - start}, self.global_step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{stats['train_loss']:.4f}", lr=f"{lr:.2e}")
                stop = self.max_steps is not None and self.global_step >= self.max_steps
                if stop or (self.checkpoint_every and self.global_step % self.checkpoint_every == 0):
                    self.save(LAST)
                if stop:
                    return True
        finally:
            if bar is not None:
                bar.close()
        return False

    def _finish(self) -> None:
        """Write ``model_file`` (best epoch, else last) and the run's artifacts; close the MLflow run."""
        if self.is_main:
            best = self.checkpoint_dir / BEST
            weights = torch.load(best, map_location="cpu", weights_only=False)["network"] if best.is_file() \
                else {k: v.cpu() for k, v in self.network.state_dict().items()}
            save_atomic(weights, self.model_file)
            self.tracker.log_artifact(self.model_file, "model")
            result = self.best_result
            if result is None and self.validation is not None and best.is_file():
                # Resumed after the best epoch: score the best weights again for the ROC plot.
                self.network.load_state_dict({k: v.to(self.device) for k, v in weights.items()})
                result = self.validation(self.network)
            if result is not None:
                self.tracker.log_artifact(plot_roc(result, self.checkpoint_dir / "validation_roc.png"), "validation")
                self.tracker.log_metrics({"best_" + self.key_metric: self.best_metric}, self.global_step)
            self.tracker.end("FINISHED")
        if is_distributed():
            dist.barrier()


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
