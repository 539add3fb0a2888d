"""Processes of a training run: one plain process, or `torchrun` ranks over torch.distributed.

`torchrun --nproc_per_node N -m colormnet_core train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR; several machines add `--nnodes` and a rendezvous address. Ranks on GPUs talk over NCCL,
CPU ranks over gloo. Rank 0 writes checkpoints, exports and logs; decisions that must be the same
everywhere (stop now, checkpoint now) are reduced over all ranks every step.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start(device: torch.device, *, timeout_s: float = 1800.0) -> ProcessGroup:
    """Join the torchrun process group if this process was launched by torchrun, else run alone.

    device: "cuda" means this rank's GPU (cuda:LOCAL_RANK) under torchrun."""
    if not launched_by_torchrun():
        return ProcessGroup(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"rank {rank} wants GPU {local_rank} but this machine has {torch.cuda.device_count()}: "
                             f"start at most that many processes per machine (--nproc_per_node).")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        log.info("rank %d of %d on %s (%s)", rank, world_size, device, backend)
    return ProcessGroup(rank, world_size, local_rank, device)


def stop(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The mean of a tensor over all ranks (itself when alone)."""
    if not group.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / group.world_size


def any_rank(flags: list[bool], group: ProcessGroup) -> list[bool]:
    """Per flag, whether any rank raised it (a collective: every rank must call it at the same point)."""
    if not group.distributed:
        return flags
    tensor = torch.tensor([int(f) for f in flags], device=group.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(x) for x in tensor.tolist()]


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()
