"""Synchronized BatchNorm over ``torch.distributed``, one process per rank: ``fairscale.experimental.nn.
SyncBatchNorm`` over gloo on CPUs, ``torch.nn.SyncBatchNorm`` over NCCL on one CUDA device per rank.

PyTorch's own ``nn.SyncBatchNorm`` has no CPU kernel (its forward raises on CPU tensors; the
``aten::batch_norm_stats`` family is CUDA-only), so on CPUs PyTorch users synchronize with fairscale's
pure-Python one over gloo. The coordinator (the suite's worker process) holds the rendezvous store on a
port the system picks (port 0), so parallel runs never collide; ranks join it as clients. Each rank counts
the collectives (``all_reduce``, ``all_gather*``) its step makes.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta

import numpy as np

from ...adapters.base import LayerSpec, State
from .ranks import World

_TIMEOUT = timedelta(seconds=60)  # a collective waiting for a dead peer gives up after this


class TorchRank:
    """One rank: its process group, its layers (by id) and its count of all-reduces."""

    def __init__(self, rank: int, world_size: int, config: dict) -> None:
        import torch
        import torch.distributed as dist

        self.torch, self.rank, self.layers = torch, rank, {}
        torch.set_num_threads(1)
        self.backend = config["backend"]
        self.device = torch.device(f"cuda:{rank}" if self.backend == "nccl" else "cpu")
        store = dist.TCPStore(config["host"], config["port"], world_size, is_master=False, timeout=_TIMEOUT)
        dist.init_process_group(self.backend, store=store, rank=rank, world_size=world_size, timeout=_TIMEOUT)
        self.collectives = 0
        for name in ("all_reduce", "all_gather", "all_gather_into_tensor"):
            # fairscale and torch look them up on the module at every call
            setattr(dist, name, self._counted(getattr(dist, name)))

    def _counted(self, collective):
        @functools.wraps(collective)
        def counted(*args, **kwargs):
            self.collectives += 1
            return collective(*args, **kwargs)

        return counted

    def build(self, layer_id: int, spec: LayerSpec) -> None:
        if self.backend == "nccl":
            from torch.nn import SyncBatchNorm
        else:
            from fairscale.experimental.nn import SyncBatchNorm

        self.layers[layer_id] = SyncBatchNorm(
            spec.num_features, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
            track_running_stats=spec.track_running_stats, dtype=getattr(self.torch, spec.dtype), device=self.device)

    def _tensor(self, a: np.ndarray):
        return self.torch.from_numpy(a).to(self.device)

    def drop(self, layer_id: int) -> None:
        self.layers.pop(layer_id, None)

    def set_state(self, layer_id: int, state: State) -> None:
        layer = self.layers[layer_id]
        with self.torch.no_grad():
            for field, tensor in (("gamma", layer.weight), ("beta", layer.bias), ("running_mean", layer.running_mean),
                                  ("running_var", layer.running_var)):
                if tensor is not None and getattr(state, field) is not None:
                    tensor.copy_(self.torch.as_tensor(getattr(state, field)))

    def get_state(self, layer_id: int) -> State:
        layer = self.layers[layer_id]

        def numpy(t):
            return None if t is None else t.detach().double().cpu().numpy().copy()

        return State(gamma=numpy(layer.weight), beta=numpy(layer.bias), running_mean=numpy(layer.running_mean),
                     running_var=numpy(layer.running_var), num_batches_tracked=None if layer.num_batches_tracked is None
                     else int(layer.num_batches_tracked))

    def forward(self, layer_id: int, x: np.ndarray, training: bool) -> tuple[np.ndarray, int]:
        layer, before = self.layers[layer_id], self.collectives
        layer.train(training)
        with self.torch.no_grad():
            y = layer(self._tensor(x))
        return y.double().cpu().numpy(), self.collectives - before

    def forward_backward(self, layer_id: int, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple[tuple, int]:
        layer, before = self.layers[layer_id], self.collectives
        layer.train(training)
        layer.zero_grad(set_to_none=True)
        xt = self._tensor(x).requires_grad_(True)
        y = layer(xt)
        y.backward(self._tensor(dy))

        def numpy(t):
            return None if t is None else t.detach().double().cpu().numpy().copy()

        grads = (numpy(layer.weight.grad), numpy(layer.bias.grad)) if layer.affine else (None, None)
        return (numpy(y), numpy(xt.grad), *grads), self.collectives - before


class _Rendezvous:
    """A fresh rendezvous store for every start of a world, on a port the system picks, served until the
    world stops."""

    def __init__(self, world_size: int, backend: str = "gloo") -> None:
        self.world_size, self.backend, self.store = world_size, backend, None

    def __call__(self) -> dict:
        import torch.distributed as dist

        self.store = dist.TCPStore("127.0.0.1", 0, self.world_size, is_master=True, wait_for_workers=False,
                                   timeout=_TIMEOUT)
        return {"host": "127.0.0.1", "port": self.store.port, "backend": self.backend}

    def close(self) -> None:
        self.store = None  # the last reference: the store's server stops and its port closes


@functools.cache
def world(world_size: int, backend: str) -> World:
    """The coordinator's world of ``world_size`` ranks over ``backend`` (``gloo``: fairscale on CPUs;
    ``nccl``: ``torch.nn.SyncBatchNorm``, rank r on CUDA device r)."""
    return World(f"{__name__}:TorchRank", world_size, _Rendezvous(world_size, backend))


def cuda_devices() -> int:
    """CUDA devices the NVIDIA driver lists, without importing torch (cheap enough for every skip check)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
