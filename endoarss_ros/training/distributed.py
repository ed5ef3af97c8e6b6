"""Multi-process data parallelism under ``torchrun``: process group, gradient averaging.

Gradients are averaged with one flat all-reduce per optimiser step instead of wrapping the
model in ``DistributedDataParallel``: the gradient-balancing weightings differentiate each task
separately with ``torch.autograd.grad``, which bypasses DDP's reducer hooks, and the trainable
set (adapters, SMA, heads) is small enough that one coalesced all-reduce per step costs little.
Every process therefore holds identical gradients before the step and, from identical initial
weights, identical weights after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessContext:
    """Rank, world size and the device this process trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` fails clearly when it is not."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was requested but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_process(device_name: str) -> ProcessContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return ProcessContext(rank, world_size, local_rank, device)


def shutdown_process() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensors: list[torch.Tensor], world_size: int) -> None:
    """Average ``tensors`` in place across processes with one flat all-reduce."""
    if world_size <= 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def broadcast_tensors(tensors: list[torch.Tensor], world_size: int, source: int = 0) -> None:
    """Copy ``source``'s values of ``tensors`` to every process (initial weights)."""
    if world_size <= 1:
        return
    for t in tensors:
        dist.broadcast(t.data, src=source)


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
