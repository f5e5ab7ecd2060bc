"""DDP set-up from ``torchrun``'s environment (one process when it is absent).

``torchrun --nproc_per_node=N -m edge_sameo.train fit ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; the backend is NCCL on CUDA devices and
gloo on CPU (how the equivalence test runs two processes on a laptop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the DDP job: rank, world size, local rank (its GPU) and the
    process-group backend (``""`` in one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (nothing in one process)."""
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a copy on ``values``' device; identity in one
        process). NCCL reduces CUDA tensors only: a CPU tensor (the epoch sums) goes through
        this rank's GPU and back."""
        out = values.detach().clone()
        if self.enabled:
            on = torch.device("cuda", self.local_rank) if self.backend == "nccl" else out.device
            reduced = out.to(on)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            out = reduced.to(values.device)
        return out


def init_distributed(device: str) -> DistContext:
    """Join the process group ``torchrun`` describes, or return the one-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group, if one was joined."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
