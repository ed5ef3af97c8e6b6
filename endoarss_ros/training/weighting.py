"""Task weighting: how the activity and segmentation losses become one update.

Two kinds, distinguished by ``needs_task_gradients``:

* Loss scalarisations (``equal``, ``uncertainty``, ``stch``) turn the task losses into one
  scalar whose gradient is the update: ``combine(losses)``.
* Gradient balancing (``dbmtl``) differentiates each task's objective separately with respect
  to the *shared* trainable parameters (the backbone's LoRA adapters) and merges those
  gradients in ``aggregate``; task-specific parameters (heads, TESLA task adapters) keep the
  gradient of their own task's objective.

All state (learned log-variances, DB-MTL's gradient averages, STCH's nadir point) lives in
parameters and buffers, so ``state_dict()`` is the whole resumable state.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-8


class TaskWeighting(nn.Module):
    """Base class; ``tasks`` fixes the order of every per-task tensor."""

    needs_task_gradients = False

    def __init__(self, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.tasks = tasks

    def combine(self, losses: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """The scalar objective whose gradient is the update (loss-based methods)."""
        raise NotImplementedError(f"{type(self).__name__} balances gradients, not losses")

    def task_objective(self, loss: torch.Tensor) -> torch.Tensor:
        """What is differentiated per task by gradient-balancing methods."""
        return loss

    def aggregate(self, task_gradients: dict[str, torch.Tensor]) -> torch.Tensor:
        """Merge flat per-task gradients of the shared parameters (gradient-based methods)."""
        raise NotImplementedError(f"{type(self).__name__} combines losses, not gradients")

    def end_epoch(self, epoch: int, mean_losses: dict[str, float]) -> None:
        """Called once per epoch with the task losses averaged over the epoch (and processes)."""

    def describe(self) -> dict[str, float]:
        """Current effective task weights, for logging."""
        return {}


class EqualWeighting(TaskWeighting):
    """``sum_t w_t L_t`` with fixed weights (1 by default)."""

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = weights or {}
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def combine(self, losses: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        return torch.stack([self.weights[t] * losses[t] for t in self.tasks]).sum()

    def describe(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyWeighting(TaskWeighting):
    """Homoscedastic uncertainty (Kendall et al., 2018): ``sum_t (exp(-s_t) L_t + s_t) / 2``
    with one learned ``s_t = log sigma_t^2`` per task, initialised to 0."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        super().__init__(tasks)
        self.log_variance = nn.Parameter(torch.zeros(len(tasks)))

    def combine(self, losses: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        stacked = torch.stack([losses[t] for t in self.tasks])
        s = self.log_variance.to(stacked.device)
        return 0.5 * (torch.exp(-s) * stacked + s).sum()

    def describe(self) -> dict[str, float]:
        weights = (0.5 * torch.exp(-self.log_variance.detach())).tolist()
        return dict(zip(self.tasks, weights, strict=True))


class SmoothTchebycheffWeighting(TaskWeighting):
    """STCH (Lin et al., ICML 2024): ``T mu log sum_t exp(log(L_t / z_t) / mu)``.

    For the first ``warmup_epochs`` epochs the objective is ``sum_t log L_t``; the task losses
    averaged over the last warm-up epoch become the nadir point ``z``. A large ``mu`` tends to
    the log-loss sum, a small one to the worst normalised task (Tchebycheff).
    """

    def __init__(self, tasks: tuple[str, ...], mu: float = 1.0, warmup_epochs: int = 1) -> None:
        super().__init__(tasks)
        if warmup_epochs < 1:
            raise ValueError("STCH needs at least one warm-up epoch to measure its nadir point")
        self.mu = mu
        self.warmup_epochs = warmup_epochs
        self.register_buffer("nadir", torch.ones(len(tasks)))
        self.register_buffer("nadir_set", torch.zeros((), dtype=torch.bool))

    def combine(self, losses: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        stacked = torch.stack([losses[t] for t in self.tasks])
        logs = torch.log(stacked + _EPS)
        if epoch < self.warmup_epochs or not bool(self.nadir_set):
            return logs.sum()
        scaled = (logs - torch.log(self.nadir.to(logs.device) + _EPS)) / self.mu
        return len(self.tasks) * self.mu * torch.logsumexp(scaled, dim=0)

    def end_epoch(self, epoch: int, mean_losses: dict[str, float]) -> None:
        if epoch == self.warmup_epochs - 1:
            values = [mean_losses[t] for t in self.tasks]
            self.nadir.copy_(torch.tensor(values, dtype=self.nadir.dtype))
            self.nadir_set.fill_(True)

    def describe(self) -> dict[str, float]:
        if not bool(self.nadir_set):
            return {}
        return {f"nadir_{t}": float(v) for t, v in zip(self.tasks, self.nadir, strict=True)}


class DualBalancingWeighting(TaskWeighting):
    """DB-MTL (Lin et al., 2023). Loss scale: each task's objective is ``log(L_t)``. Gradient
    magnitude: an EMA ``m_t`` of each task's shared gradient is rescaled to the largest norm,
    ``g = sum_t (max_s ||m_s|| / ||m_t||) m_t``. A step with a non-finite gradient leaves the
    averages untouched and returns NaN, so the caller (or a loss scaler) skips it."""

    needs_task_gradients = True

    def __init__(self, tasks: tuple[str, ...], shared_numel: int, beta: float = 0.9) -> None:
        super().__init__(tasks)
        self.beta = beta
        self.register_buffer("gradient_average", torch.zeros(len(tasks), shared_numel))
        self.register_buffer("scale", torch.ones(len(tasks)))

    def task_objective(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.log(loss + _EPS)

    def aggregate(self, task_gradients: dict[str, torch.Tensor]) -> torch.Tensor:
        grads = torch.stack([task_gradients[t].float() for t in self.tasks])
        if not bool(torch.isfinite(grads).all()):
            return torch.full_like(grads[0], float("nan"))
        average = self.gradient_average
        average.mul_(self.beta).add_(grads.to(average.device), alpha=1.0 - self.beta)
        norms = average.norm(dim=1)
        scale = norms.max() / (norms + _EPS)
        self.scale.copy_(scale)
        return (scale.unsqueeze(1) * average).sum(dim=0)

    def describe(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.scale.tolist(), strict=True))


def build_weighting(
    name: str,
    tasks: tuple[str, ...],
    *,
    shared_numel: int = 0,
    task_weights: dict[str, float] | None = None,
    dbmtl_beta: float = 0.9,
    stch_mu: float = 1.0,
    stch_warmup_epochs: int = 1,
) -> TaskWeighting:
    """The weighting named in ``loss.weighting``."""
    if name == "equal":
        return EqualWeighting(tasks, task_weights)
    if name == "uncertainty":
        return UncertaintyWeighting(tasks)
    if name == "stch":
        return SmoothTchebycheffWeighting(tasks, stch_mu, stch_warmup_epochs)
    if name == "dbmtl":
        return DualBalancingWeighting(tasks, shared_numel, dbmtl_beta)
    raise ValueError(f"unknown task weighting {name!r}")
