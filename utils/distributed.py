"""Process-group helpers for ``torchrun`` (after torchvision's detection references).

The same script runs single-process unchanged: with no ``RANK``/``WORLD_SIZE`` in the environment,
:func:`init_distributed_mode` leaves ``distributed`` off and every helper here degrades to a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    distributed: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def init_distributed_mode(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (nccl on CUDA, else gloo)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    dist.barrier()
    return DistInfo(True, rank, world_size, local_rank)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes (a copy; the input is left alone)."""
    values = values.clone()
    if is_dist():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate each process's list of picklable ``items`` (rank order)."""
    if not is_dist():
        return list(items)
    gathered: list[list[Any]] = [[] for _ in range(get_world_size())]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
