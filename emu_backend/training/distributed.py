"""Data-parallel training with ``torch.distributed``: process-group setup from torchrun or SLURM.

* torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
* Under SLURM (``srun``, one task per GPU) without torchrun, ``SLURM_PROCID``, ``SLURM_NTASKS`` and
  ``SLURM_LOCALID`` give the rank, the world size and the local rank; ``MASTER_ADDR`` (the first node)
  must be exported by the batch script, ``MASTER_PORT`` defaults to 29500.

The backend is NCCL on CUDA devices and gloo on CPU. A world size of 1 (no variables set) runs
without a process group.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError

__all__ = ["DistInfo", "setup_distributed", "teardown_distributed", "all_reduce_sum", "barrier"]

logger = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = "29500"


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
    owns_group : bool
        The process group was created by :func:`setup_distributed` (and is destroyed by teardown).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(names, default=None):
    for name in names:
        if os.environ.get(name, "") != "":
            try:
                return int(os.environ[name])
            except ValueError:
                raise InputError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None
    return default


def _resolve_device(device: str, local_rank: int) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Read the launcher's environment, create the process group if needed, pick the device.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``) or an explicit device.

    Returns
    -------
    DistInfo
    """

    world = _env_int(("WORLD_SIZE", "SLURM_NTASKS"), 1)
    rank = _env_int(("RANK", "SLURM_PROCID"), 0)
    local = _env_int(("LOCAL_RANK", "SLURM_LOCALID"), 0)
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"inconsistent launcher environment: rank {rank}, world size {world}")
    dev = _resolve_device(device, local)
    if world == 1:
        return DistInfo(0, 1, 0, dev, False)
    if dist.is_initialized():
        if dist.get_world_size() != world:
            raise InputError(f"process group has {dist.get_world_size()} ranks but the environment says {world}")
        return DistInfo(dist.get_rank(), world, local, dev, False)
    if "MASTER_ADDR" not in os.environ:
        raise InputError("MASTER_ADDR is not set: launch with torchrun, or export MASTER_ADDR (the first node's "
                         "host name) in the SLURM batch script")
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    logger.info("rank %d of %d (local %d) on %s, backend %s", rank, world, local, dev, backend)
    return DistInfo(rank, world, local, dev, True)


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""

    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; identity on one process)."""
    if info.distributed:

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.distributed:

        dist.barrier()
