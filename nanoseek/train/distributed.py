"""Distributed training: process-group setup under torchrun, DDP or FSDP2 wrapping, small collectives.

    dist_env = setup("auto")               # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    train_model = wrap_model(model, dist_env, fsdp=False, compile=False)
    total = all_reduce_sum(torch.tensor([loss_sum, n_tokens]))
    teardown()

One process per device. Plain `python -m ...` is world size 1 (no process group, no wrapping); under
`torchrun --nproc_per_node N` the same code initializes gloo on CPU or NCCL on GPU and wraps the model:
- DDP (default): every rank holds the whole model; gradients are averaged in backward. Buffers are
  not broadcast (`broadcast_buffers=False`): each rank counts its own expert loads, which the loop
  all-reduces before updating the routers' biases identically on every rank.
- FSDP2 (`train.fsdp = true`): `torch.distributed.fsdp.fully_shard` on every transformer block
  (the MTP modules' included), then on the root; parameters, gradients and optimizer state are sharded, so models
  that do not fit one device train. The model is built (or loaded) on the CPU first and moved
  shard by shard onto the devices.
Gradient accumulation skips the gradient all-reduce on all but the last micro-step (`grad_sync`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("run.device = 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistEnv:
    """Initialize the process group when launched by torchrun (WORLD_SIZE > 1); idempotent."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return DistEnv(rank, local_rank, world_size, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv, fsdp: bool = False, compile: bool = False) -> nn.Module:
    """The module to train: `model` on its device, under DDP or FSDP2 when distributed, maybe compiled.
    With FSDP2 `model` itself becomes the sharded module (fully_shard works in place)."""
    env.fsdp = fsdp and env.distributed
    if env.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        policy = MixedPrecisionPolicy()  # bf16 comes from autocast; parameters and reductions stay fp32
        # one unit per transformer block; the MTP modules' own norms and eh_proj stay with the root
        # (the model calls their shared_head norm outside the module's forward)
        for block in [*model.layers, *(m.block for m in getattr(model, "mtp", ()))]:  # dense: no MTP
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        wrapped = model
    else:
        model.to(env.device)
        wrapped = model
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            device_ids = [env.device.index] if env.device.type == "cuda" else None
            wrapped = DDP(model, device_ids=device_ids, broadcast_buffers=False)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def grad_sync(wrapped: nn.Module, model: nn.Module, env: DistEnv, sync: bool):
    """Context for one micro-step's backward: all-reduce (or reduce-scatter) gradients only if `sync`."""
    if not env.distributed:
        return contextlib.nullcontext()
    if env.fsdp:
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    ddp = getattr(wrapped, "_orig_mod", wrapped)  # torch.compile keeps the DDP module here
    return contextlib.nullcontext() if sync else ddp.no_sync()


def all_reduce_sum(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """t summed (or reduced by `op`) over the processes, in place; t itself in one process."""
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t, dist.ReduceOp.MIN)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
