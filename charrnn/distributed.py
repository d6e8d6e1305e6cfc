"""Data-parallel training over the processes that ``torchrun`` starts.

    torchrun --nproc_per_node=N -m charrnn train TEXT ...

Each process (rank) trains a replica of the model under ``DistributedDataParallel``
(nccl on CUDA, gloo on CPU) on its own rows of the batch: ``--batch-size`` is the
global batch, cut into equal slices, so N processes take exactly the steps one process
would take with the same batch. Rank 0 alone writes the run folder. A plain
``charrnn train`` runs as a group of one, where every method here does nothing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charrnn.errors import ConfigError


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where the collectives' tensors live

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch."""
        if batch_size % self.world_size:
            raise ConfigError(f"--batch-size {batch_size} does not split evenly over "
                              f"{self.world_size} processes; use a multiple of "
                              f"{self.world_size}")
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def sum(self, *values: float) -> list[float]:
        """The sum of each value over the ranks (all ranks get the same numbers)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, *values: float) -> list[float]:
        return [v / self.world_size for v in self.sum(*values)]

    def gather_rows(self, hidden):
        """The hidden state of the whole batch: every rank's rows, in rank order
        (tensors (layers, rows, H), or a tuple of them for the LSTM)."""
        if not self.active or hidden is None:
            return hidden
        if isinstance(hidden, tuple):
            return tuple(self.gather_rows(h) for h in hidden)
        parts = [torch.empty_like(hidden) for _ in range(self.world_size)]
        dist.all_gather(parts, hidden.contiguous())
        return torch.cat(parts, dim=1)

    def my_rows(self, hidden, batch_size: int):
        """This rank's rows of a whole batch's hidden state (the inverse of
        ``gather_rows``, for any earlier world size; None if the batch size changed)."""
        if hidden is None or (hidden[0] if isinstance(hidden, tuple) else hidden).size(1) \
                != batch_size:
            return None
        if isinstance(hidden, tuple):
            return tuple(self.my_rows(h, batch_size) for h in hidden)
        return hidden[:, self.rows(batch_size)]

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part [start, stop) of n items."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    @contextmanager
    def first_on_each_machine(self):
        """The first process of each machine (local rank 0) runs the block before the
        others, which then find what it built (the corpus cache, on that machine's disk)."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()


def launched() -> bool:
    """True inside a process that torchrun started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> tuple[Group, torch.device]:
    """Join the torchrun group (when there is one) and pick this rank's device:
    ``cuda:LOCAL_RANK`` on a GPU machine."""
    if not launched():
        return Group(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start at most that many "
                              "processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(rank, world, local, device), device


def leave(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
