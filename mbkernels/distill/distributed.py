"""Data parallelism under `torchrun`: gloo on CPU, nccl on GPU.

The trainer reduces gradients itself, once per optimizer step after the last micro-batch (what
DistributedDataParallel does under `no_sync()` accumulation, without the overlap): a progressive phase
trains a different subset of the parameters and runs a different depth each time, which a DDP wrapper
would need rebuilding for, and one explicit reduction keeps the order of operations identical on every
rank. Every rank reads the same example stream and keeps its own share of each global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def init(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun (WORLD_SIZE>1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensors: list[torch.Tensor], bucket_numel: int = 1 << 24) -> None:
    """Sum each tensor across ranks in place, a few flattened buckets at a time."""
    if not active() or not tensors:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for t in [*tensors, None]:
        if t is not None:
            bucket.append(t)
            size += t.numel()
        if bucket and (t is None or size >= bucket_numel):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            for dst, src in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                dst.copy_(src)
            bucket, size = [], 0


def reduce_gradients_(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients across ranks. Every rank runs the same phase through the same ops, so the same
    parameters have gradients everywhere (a parameter without one stays without one, as it would in
    a single process, where the optimizer skips it)."""
    all_reduce_sum_([p.grad for p in params if p.grad is not None])


def gather(obj) -> list:
    """`obj` from every rank, in rank order (a one-element list without torchrun)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
