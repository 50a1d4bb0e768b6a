"""Small process-group helpers the methods use; every one is the identity on a single process.

Methods call these unconditionally (MoCo gathers keys, SimCLR gathers negatives, DINO all-reduces its centre),
so the same method code runs on one device and under DDP once a launcher has initialised a process group.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the group (1 when none is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when no group is initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def expected_world_size() -> int:
    """world_size(), or before the group exists the launcher's WORLD_SIZE (torchrun sets it): configs are
    checked against the global batch before training starts."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def all_gather_cat(x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """Concatenate x from every rank along dim 0, in rank order. grad=False: no gradient (MoCo keys);
    grad=True: the gradient flows back to each rank's own slice (SimCLR's gathered negatives)."""
    if not is_distributed():
        return x
    if grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()))
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


@torch.no_grad()
def all_reduce_mean_(x: torch.Tensor) -> torch.Tensor:
    """In place: x <- mean of x over ranks (DINO's centre, Barlow's cross-correlation). Returns x."""
    if is_distributed():
        dist.all_reduce(x)
        x.div_(dist.get_world_size())
    return x


# --- process-group setup (launchers) ------------------------------------------------------------------------
def local_rank() -> int:
    """This process's index on its node (torchrun and submitit both export LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device_type: str) -> bool:
    """Joins the process group the launcher describes, once per process: the tasks of a multi-task submitit
    job on SLURM (submitit's TorchDistributedEnvironment exports MASTER_ADDR/PORT, RANK, WORLD_SIZE,
    LOCAL_RANK from SLURM's variables) or torchrun's variables. NCCL on CUDA, gloo on CPU.
    Returns is_distributed()."""
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        if JobEnvironment().num_tasks > 1:
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device_type == "cuda":
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return is_distributed()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leaves the process group (NCCL warns at exit otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
