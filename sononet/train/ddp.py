"""DistributedDataParallel set-up from torchrun's environment.

``torchrun --nproc-per-node N -m sononet train ...`` sets RANK, WORLD_SIZE and
MASTER_ADDR/PORT; we pick NCCL on CUDA and gloo on the CPU (which is how the tests run two
ranks on a laptop).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """``flag`` or-ed over the ranks: every rank must leave a loop at the same step, or the others
    wait in the next collective for ever."""
    if not info.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running stats) across ranks.

    DDP keeps parameters in sync through gradients, but each rank updates its BatchNorm
    statistics from its own batches; averaging them each epoch makes validation, early
    stopping and the saved model the same on every rank.
    """
    if not info.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= info.world_size


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, to check that ranks ended identical."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_digests(model: torch.nn.Module, info: DistInfo) -> list[str]:
    digest = weights_digest(model)
    if not info.enabled:
        return [digest]
    out: list[str] = [""] * info.world_size
    dist.all_gather_object(out, digest)
    return out


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
