"""The training loop: multi-task losses, task weighting, validation-based model selection.

One optimiser step = ``accumulation_steps`` micro-batches on every process, then one flat
gradient all-reduce (see :mod:`endoarss_ros.training.distributed`), the task weighting's
gradient merge (DB-MTL), unscaling (fp16), clipping and the update. Every epoch ends with a
validation pass; the best epoch by ``selection_metric`` is written as ``best.safetensors`` and
every epoch as ``last.safetensors`` with its resumable state (``last.state.*``).

Reproducibility: all randomness of an epoch (shuffling, augmentation, dropout) is seeded from
``(seed, epoch, rank)``, so two runs with one seed produce the same weights and metrics on one
machine, and a resumed run continues exactly where the interrupted one would have.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from endoarss_ros.data.transforms import EvalTransform, TrainTransform
from endoarss_ros.metrics import headline, json_ready, selection_score
from endoarss_ros.model.checkpoint import load_checkpoint, save_checkpoint
from endoarss_ros.training.config import TrainConfig, TrainConfigError
from endoarss_ros.training.data import (
    Batch,
    BatchCollator,
    DataSplits,
    EpochShardSampler,
    build_splits,
    epoch_seed,
    make_loader,
    pixel_counts,
)
from endoarss_ros.training.distributed import (
    ProcessContext,
    all_reduce_mean,
    barrier,
    broadcast_tensors,
    init_process,
)
from endoarss_ros.training.evaluation import autocast_context, evaluate
from endoarss_ros.training.losses import TaskLosses, class_weights_from_counts
from endoarss_ros.training.model_setup import (
    build_model,
    checkpoint_metadata,
    freeze_untrained_tasks,
    input_normalization,
    shared_parameters,
)
from endoarss_ros.training.state import (
    read_training_state,
    restore_optimizer,
    restore_weighting,
    write_training_state,
)
from endoarss_ros.training.weighting import build_weighting

BEST = "best.safetensors"
LAST = "last.safetensors"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 where the GPU supports it, else fp16; CPU trains in fp32."""
    if device.type != "cuda":
        if mode in ("bf16", "fp16"):
            raise TrainConfigError(
                f"amp: {mode} autocast needs a CUDA device; on CPU training runs in float32 "
                "(amp: auto or off)"
            )
        return None
    if mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def learning_rate_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``optim.lr`` at optimiser step ``step`` (linear warm-up, then schedule)."""
    optim = config.optim
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.scheduler == "constant":
        return 1.0
    if optim.scheduler == "step":
        return optim.step_gamma ** ((step // max(steps_per_epoch, 1)) // optim.step_epochs)
    total = max(steps_per_epoch * optim.epochs - optim.warmup_steps, 1)
    progress = min(max(step - optim.warmup_steps, 0) / total, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine


@dataclass
class FitResult:
    """What a finished run produced and how fast it trained."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_score: float
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_images_per_second: float = float("nan")
    seconds: float = 0.0


class Trainer:
    """Trains the model a :class:`TrainConfig` describes. ``splits`` may be given to reuse
    already loaded data (tests, ablations); otherwise the config's ``data`` section is read."""

    def __init__(
        self,
        config: TrainConfig,
        splits: DataSplits | None = None,
        process: ProcessContext | None = None,
    ) -> None:
        self.config = config
        self.process = process or init_process(config.device)
        self.device = self.process.device
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.amp_dtype = amp_dtype_for(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )

        self.splits = splits or build_splits(config.data, config.model.input_size, config.seed)
        self.class_info = self.splits.class_info
        self.tasks = config.loss.tasks
        self.model = build_model(config.model, self.class_info).to(self.device)
        freeze_untrained_tasks(self.model, self.tasks)
        broadcast_tensors(list(self.model.state_dict().values()), self.process.world_size)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.shared = shared_parameters(self.model)
        self._shared_ids = {id(p) for p in self.shared}
        self.shared_numel = sum(p.numel() for p in self.shared)

        loss = config.loss
        class_weights = None
        if loss.class_weight_power > 0 and "segmentation" in self.tasks:
            class_weights = class_weights_from_counts(
                pixel_counts(self.splits.train, self.class_info.num_segmentation_classes),
                loss.class_weight_power,
            )
        self.losses = TaskLosses(
            self.tasks,
            loss.segmentation,
            loss.dice_weight,
            loss.label_smoothing,
            class_weights=class_weights,
            focal_gamma=loss.focal_gamma,
        )
        self.weighting = build_weighting(
            loss.weighting,
            self.tasks,
            shared_numel=self.shared_numel,
            task_weights=dict(loss.task_weights),
            dbmtl_beta=loss.dbmtl_beta,
            stch_mu=loss.stch_mu,
            stch_warmup_epochs=loss.stch_warmup_epochs,
        ).to(self.device)
        self.weighting_params = [p for p in self.weighting.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer()

        self._build_loaders()
        self.steps_per_epoch = len(self.train_loader) // config.optim.accumulation_steps
        if self.steps_per_epoch == 0:
            raise TrainConfigError(
                f"optim.batch_size {config.optim.batch_size} x optim.accumulation_steps "
                f"{config.optim.accumulation_steps} x {self.process.world_size} process(es) "
                f"exceeds the {len(self.splits.train)} training frames: no optimiser step per epoch"
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: learning_rate_factor(step, config, self.steps_per_epoch),
        )

        self.run_dir = Path(config.output_dir)
        self.epoch = 0
        self.global_step = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._writer: Any = None
        if config.resume is not None:
            self._resume(Path(config.resume))

    # ----------------------------------------------------------------------------- setup

    def _build_optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        # "all": weight decay on every trainable tensor, as the release's Adam applies it.
        decay_all = optim.weight_decay_on == "all"
        decay = [p for p in self.params if decay_all or p.ndim >= 2]
        no_decay = [p for p in self.params if not decay_all and p.ndim < 2]
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": self.weighting_params, "weight_decay": 0.0},
        ]
        if optim.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
        if optim.optimizer == "adam":
            # Adam with coupled L2, as the EndoARSS recipe uses.
            return torch.optim.Adam(groups, lr=optim.lr)
        return torch.optim.AdamW(groups, lr=optim.lr)

    def _build_loaders(self) -> None:
        config, process = self.config, self.process
        if config.data.cache:
            self.splits.train.preload()
            self.splits.val.preload()
        size = config.model.input_size
        mean, std = input_normalization(config.model)
        train_transform = (
            TrainTransform(size, mean, std)
            if config.data.augment
            else EvalTransform(size, mean, std)
        )
        self.train_sampler = EpochShardSampler(
            len(self.splits.train), config.seed, process.rank, process.world_size
        )
        self.train_loader = make_loader(
            self.splits.train,
            BatchCollator(train_transform),
            config.optim.batch_size,
            sampler=self.train_sampler,
            drop_last=True,
            num_workers=config.data.num_workers,
            seed=config.seed,
        )
        val_indices = list(range(process.rank, len(self.splits.val), process.world_size))
        self.val_loader = make_loader(
            self.splits.val,
            BatchCollator(EvalTransform(size, mean, std)),
            config.optim.batch_size,
            sampler=val_indices,  # type: ignore[arg-type]
            drop_last=False,
            num_workers=config.data.num_workers,
            seed=config.seed,
        )

    def _resume(self, checkpoint: Path) -> None:
        loaded, _ = load_checkpoint(checkpoint, map_location=self.device)
        if loaded.config != self.model.config:
            raise TrainConfigError(
                f"resume: {checkpoint} holds a different model configuration than this run's"
            )
        self.model.load_state_dict(loaded.state_dict())
        state = read_training_state(checkpoint)
        restore_optimizer(self.optimizer, state)
        self.scheduler.load_state_dict(state.document["scheduler"])
        restore_weighting(self.weighting, state)
        if state.document.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.document["scaler"])
        progress = state.document["progress"]
        self.epoch = int(progress["epoch"])
        self.global_step = int(progress["global_step"])
        best = progress["best_score"]
        self.best_score = -math.inf if best is None else float(best)
        self.best_epoch = int(progress["best_epoch"])
        self.best_metrics = progress.get("best_metrics", {})
        self.history = list(progress["history"])

    # ----------------------------------------------------------------------------- loop

    def fit(self, until_epoch: int | None = None) -> FitResult:
        """Train until ``optim.epochs`` (or stop after ``until_epoch`` epochs of the same
        schedule, e.g. to time-box a job that a later ``resume`` continues); returns where the
        checkpoints are and the best metrics."""
        config, process = self.config, self.process
        if process.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(
                json.dumps(config.to_dict(), indent=2), encoding="utf-8"
            )
        start = time.perf_counter()
        train_seconds = 0.0
        train_images = 0
        deterministic_before = torch.are_deterministic_algorithms_enabled()
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            stop = (
                config.optim.epochs
                if until_epoch is None
                else min(until_epoch, config.optim.epochs)
            )
            for epoch in range(self.epoch, stop):
                record = self._train_epoch(epoch)
                train_seconds += record["train_seconds"]
                train_images += record["train_images"]
                last_epoch = epoch == config.optim.epochs - 1
                if (epoch + 1) % config.eval_every == 0 or last_epoch:
                    metrics = self.validate()
                    score = selection_score(metrics, config.selection_metric)
                    record["val"] = headline(metrics)
                    record["selection_score"] = score
                    if not math.isnan(score) and score > self.best_score:
                        self.best_score, self.best_epoch = score, epoch
                        self.best_metrics = json_ready(metrics)
                        self._save(self.run_dir / BEST, epoch, metrics)
                self.epoch = epoch + 1
                self.history.append(json_ready(record))
                self._save(self.run_dir / LAST, epoch, None, with_state=True)
                self._log_epoch(record)
        finally:
            torch.use_deterministic_algorithms(deterministic_before, warn_only=True)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        throughput = train_images / train_seconds if train_seconds > 0 else float("nan")
        result = FitResult(
            run_dir=self.run_dir,
            best_checkpoint=self.run_dir / BEST,
            last_checkpoint=self.run_dir / LAST,
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            best_metrics=self.best_metrics,
            history=self.history,
            train_images_per_second=throughput,
            seconds=time.perf_counter() - start,
        )
        if process.is_main:
            summary = {
                "best_epoch": self.best_epoch + 1,
                "best_selection_score": self.best_score,
                "selection_metric": config.selection_metric,
                "best_val_metrics": self.best_metrics,
                "train_images_per_second": throughput,
                "world_size": process.world_size,
                "seconds": result.seconds,
                "dataset": self.splits.description,
            }
            (self.run_dir / "summary.json").write_text(
                json.dumps(json_ready(summary), indent=2), encoding="utf-8"
            )
        barrier(process.world_size)
        return result

    def _seed_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.config.seed, epoch, self.process.rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.train_sampler.set_epoch(epoch)
        generator = self.train_loader.generator
        if generator is not None:
            generator.manual_seed(seed)

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        config = self.config
        accumulation = config.optim.accumulation_steps
        self.model.train()
        self._seed_epoch(epoch)
        loss_sums = torch.zeros(len(self.tasks), dtype=torch.float64)
        micro_batches = 0
        images = 0
        cosines: list[float] = []
        started = time.perf_counter()
        batches = iter(self.train_loader)
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.optim.epochs}",
            # None: shown on a terminal only, so logs of batch jobs keep one line per epoch.
            disable=None if config.logging.progress and self.process.is_main else True,
            leave=False,
        )
        for _ in range(self.steps_per_epoch):
            every = config.logging.grad_conflict_every
            measure = len(self.tasks) == 2 and every > 0 and self.global_step % every == 0
            buffers = None
            if self.weighting.needs_task_gradients or measure:
                buffers = {
                    t: torch.zeros(self.shared_numel, device=self.device) for t in self.tasks
                }
            step_losses = torch.zeros(len(self.tasks), dtype=torch.float64)
            for _ in range(accumulation):
                batch: Batch = next(batches).to(self.device)
                with autocast_context(self.device, self.amp_dtype):
                    output = self.model(batch.images)
                losses = self.losses(output, batch.activities, batch.masks)
                step_losses += torch.tensor([float(losses[t].detach()) for t in self.tasks])
                if self.weighting.needs_task_gradients:
                    assert buffers is not None
                    self._backward_per_task(losses, buffers, accumulation)
                else:
                    if buffers is not None:
                        self._measure_shared_gradients(losses, buffers)
                    objective = self.weighting.combine(losses, epoch) / accumulation
                    self.scaler.scale(objective).backward()
                images += batch.images.shape[0]
                micro_batches += 1
            cosine = self._optimizer_step(buffers)
            loss_sums += step_losses
            if cosine is not None:
                cosines.append(cosine)
            if self.process.is_main and self.global_step % config.logging.log_every == 0:
                self._log_step(step_losses / accumulation, cosine)
            bar.update(1)
            bar.set_postfix(
                {t: f"{v:.3f}" for t, v in zip(self.tasks, step_losses / accumulation, strict=True)}
            )
        bar.close()
        seconds = time.perf_counter() - started
        totals = torch.cat([loss_sums, torch.tensor([micro_batches, images], dtype=torch.float64)])
        all_reduce_mean([totals], self.process.world_size)
        mean_losses = {t: float(totals[i] / max(totals[-2], 1)) for i, t in enumerate(self.tasks)}
        self.weighting.end_epoch(epoch, mean_losses)
        world_images = round(float(totals[-1]) * self.process.world_size)
        return {
            "epoch": epoch + 1,
            "step": self.global_step,
            "train_loss": mean_losses,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_cosine": float(np.mean(cosines)) if cosines else None,
            "task_weights": self.weighting.describe(),
            "train_seconds": seconds,
            "train_images": world_images,
            "train_images_per_second": world_images / seconds if seconds > 0 else None,
        }

    def _backward_per_task(
        self, losses: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], accumulation: int
    ) -> None:
        """Gradient balancing: each task's objective differentiated on its own. Shared
        gradients go to ``buffers`` (merged at the step), the rest straight to ``.grad``."""
        for position, task in enumerate(self.tasks):
            objective = self.weighting.task_objective(losses[task]) / accumulation
            grads = torch.autograd.grad(
                self.scaler.scale(objective),
                self.params,
                retain_graph=position < len(self.tasks) - 1,
                allow_unused=True,
            )
            shared_parts = []
            for param, grad in zip(self.params, grads, strict=True):
                if id(param) in self._shared_ids:
                    shared_parts.append(
                        torch.zeros_like(param).reshape(-1) if grad is None else grad.reshape(-1)
                    )
                elif grad is not None:
                    param.grad = grad if param.grad is None else param.grad + grad
            if shared_parts:
                buffers[task] += torch.cat(shared_parts).float()

    def _measure_shared_gradients(
        self, losses: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
    ) -> None:
        """Per-task gradients on the shared adapters, only to measure their conflict."""
        if not self.shared:
            return
        for task in self.tasks:
            grads = torch.autograd.grad(
                self.scaler.scale(losses[task]), self.shared, retain_graph=True, allow_unused=True
            )
            buffers[task] += torch.cat(
                [
                    torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                    for p, g in zip(self.shared, grads, strict=True)
                ]
            ).float()

    def _optimizer_step(self, buffers: dict[str, torch.Tensor] | None) -> float | None:
        """Synchronise, merge, unscale, clip and apply the accumulated gradients; returns the
        cosine between the two tasks' shared gradients when they were measured."""
        all_params = self.params + self.weighting_params
        for param in all_params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        reduce = [p.grad for p in all_params]
        if buffers is not None:
            reduce += list(buffers.values())
        all_reduce_mean(reduce, self.process.world_size)  # type: ignore[arg-type]
        cosine = None
        if buffers is not None and len(self.tasks) == 2 and self.shared_numel:
            first, second = (buffers[t] for t in self.tasks)
            if first.norm() > 0 and second.norm() > 0:
                cosine = float(F.cosine_similarity(first, second, dim=0))
        if self.weighting.needs_task_gradients and buffers is not None and self.shared:
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            merged = self.weighting.aggregate({t: b / scale for t, b in buffers.items()}) * scale
            offset = 0
            for param in self.shared:
                count = param.numel()
                param.grad.copy_(merged[offset : offset + count].view_as(param))  # type: ignore[union-attr]
                offset += count
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(all_params, self.config.optim.grad_clip_norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return cosine

    # ----------------------------------------------------------------------------- evaluation

    def validate(self) -> dict[str, dict[str, Any]]:
        """Metrics of the current weights on the validation split (all processes)."""
        metrics = evaluate(
            self.model,
            self.val_loader,
            num_activities=self.class_info.num_activities,
            num_seg_classes=self.class_info.num_segmentation_classes,
            tasks=self.tasks,
            device=self.device,
            amp_dtype=self.amp_dtype,
            progress=self.config.logging.progress and self.process.is_main,
            description="validate",
        )
        return metrics.compute()

    # ----------------------------------------------------------------------------- output

    def _training_summary(self, epoch: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "tasks": list(self.tasks),
            "weighting": self.config.loss.weighting,
            "seed": self.config.seed,
            "dataset": self.splits.description,
            "config": self.config.to_dict(),
        }
        if metrics is not None:
            summary["selection_metric"] = self.config.selection_metric
            summary["val_metrics"] = headline(metrics)
        return json_ready(summary)

    def _save(
        self,
        path: Path,
        epoch: int,
        metrics: dict[str, Any] | None,
        with_state: bool = False,
    ) -> None:
        if self.process.is_main:
            meta = checkpoint_metadata(
                self.class_info,
                self.config.model.input_size,
                self._training_summary(epoch, metrics),
                normalization=self.config.model.normalization,
                architecture=self.config.model.architecture,
            )
            save_checkpoint(path, self.model, meta)
            if with_state:
                progress = {
                    "epoch": epoch + 1,
                    "global_step": self.global_step,
                    "best_score": None if math.isinf(self.best_score) else self.best_score,
                    "best_epoch": self.best_epoch,
                    "best_metrics": self.best_metrics,
                    "history": self.history,
                }
                write_training_state(
                    path,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    weighting=self.weighting,
                    scaler=self.scaler,
                    progress=json_ready(progress),
                )
        barrier(self.process.world_size)

    def _tensorboard(self) -> Any:
        if self._writer is None and self.config.logging.tensorboard and self.process.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        return self._writer

    def _log_step(self, losses: torch.Tensor, cosine: float | None) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        step = self.global_step
        for task, value in zip(self.tasks, losses.tolist(), strict=True):
            writer.add_scalar(f"train/loss_{task}", value, step)
        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], step)
        for name, value in self.weighting.describe().items():
            writer.add_scalar(f"train/weight_{name}", value, step)
        if cosine is not None:
            writer.add_scalar("train/grad_cosine_shared", cosine, step)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if not self.process.is_main:
            return
        with (self.run_dir / "history.jsonl").open("w", encoding="utf-8") as handle:
            for entry in self.history:
                handle.write(json.dumps(entry) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for name, value in (record.get("val") or {}).items():
                writer.add_scalar(f"val/{name}", value, self.global_step)
            if record.get("train_images_per_second"):
                writer.add_scalar(
                    "train/images_per_second", record["train_images_per_second"], self.global_step
                )
            writer.flush()
        parts = [f"epoch {record['epoch']}/{self.config.optim.epochs}"]
        parts += [f"loss_{t}={v:.4f}" for t, v in record["train_loss"].items()]
        for name, value in (record.get("val") or {}).items():
            parts.append(f"{name}={value:.4f}")
        if record.get("grad_cosine") is not None:
            parts.append(f"grad_cos={record['grad_cosine']:+.3f}")
        if record.get("train_images_per_second"):
            parts.append(f"{record['train_images_per_second']:.1f} img/s")
        tqdm.write("  ".join(parts))
