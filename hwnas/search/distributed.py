"""Multi-process search under ``torchrun``: DistributedDataParallel over the supernet weights.

The weights are wrapped in DDP (gloo on CPU, nccl on GPU, with
``find_unused_parameters`` because only sampled paths run). The architecture
parameters alpha are kept out of DDP and their gradients averaged by
:func:`sync_grads`. Gate sampling stays in step across ranks because every rank
seeds the same sampling generator and holds identical alphas.
"""

from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: str) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world size, device)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return *world(), torch.device("cuda", local)
    return *world(), torch.device("cpu")


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """DDP around the supernet's weights (alphas ignored); the net itself when not distributed."""
    if world()[1] == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    ignore = [name for name, _ in net.named_parameters() if name.endswith(".alpha")]
    DDP._set_params_and_buffers_to_ignore_for_model(net, ignore)
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def sync_grads(grads: list[torch.Tensor | None]) -> None:
    """Average gradients across ranks in place (no-op on one process)."""
    rank, size = world()
    if size == 1:
        return
    for g in grads:
        if g is not None:
            dist.all_reduce(g)
            g.div_(size)


def all_equal(tensors: list[torch.Tensor]) -> float:
    """Largest difference of ``tensors`` between this rank and rank 0 (0.0 on one process)."""
    if world()[1] == 1:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else flat.device
    flat = flat.to(device)
    ref = flat.clone()
    dist.broadcast(ref, 0)
    diff = (flat - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()



def leave_after_error(message: str) -> None:
    """A rank ends on a one-line error: leave it in torchrun's error file for this rank
    (``TORCHELASTIC_ERROR_FILE``; the launcher's failure summary then shows the line where it
    would show a traceback) and leave the process group."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        record = {"message": {"message": message,
                              "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}
        try:
            with open(path, "w") as f:
                json.dump(record, f)
        except OSError:
            pass  # the summary then shows torchrun's default text; the rank still exits with code 2
    teardown()
