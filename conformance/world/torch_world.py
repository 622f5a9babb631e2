"""``fairscale.experimental.nn.SyncBatchNorm`` over ``torch.distributed`` with gloo, one process per rank.

PyTorch's own ``nn.SyncBatchNorm`` has no CPU kernel (its forward raises on CPU tensors; the
``aten::batch_norm_stats`` family is CUDA-only), so on CPUs PyTorch users synchronize with fairscale's
pure-Python one over gloo. The coordinator (the suite's worker process) holds the rendezvous store on a
port the system picks (port 0), so parallel runs never collide; ranks join it as clients. Each rank counts
the ``torch.distributed.all_reduce`` calls its step makes.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import numpy as np

from ..adapters.base import LayerSpec, State
from .ranks import World

_TIMEOUT = timedelta(seconds=60)  # a collective waiting for a dead peer gives up after this


class TorchRank:
    """One rank: its process group, its layers (by id) and its count of all-reduces."""

    def __init__(self, rank: int, world_size: int, config: dict) -> None:
        import torch
        import torch.distributed as dist

        self.torch, self.rank, self.layers = torch, rank, {}
        torch.set_num_threads(1)
        store = dist.TCPStore(config["host"], config["port"], world_size, is_master=False, timeout=_TIMEOUT)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=_TIMEOUT)
        self.collectives, original = 0, dist.all_reduce

        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.collectives += 1
            return original(*args, **kwargs)

        dist.all_reduce = counted  # fairscale looks it up on the module at every call

    def build(self, layer_id: int, spec: LayerSpec) -> None:
        from fairscale.experimental.nn import SyncBatchNorm

        self.layers[layer_id] = SyncBatchNorm(
            spec.num_features, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
            track_running_stats=spec.track_running_stats, dtype=getattr(self.torch, spec.dtype))

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
            return None if t is None else t.detach().double().numpy().copy()

        return State(numpy(layer.weight), numpy(layer.bias), numpy(layer.running_mean), numpy(layer.running_var),
                     None if layer.num_batches_tracked is None else int(layer.num_batches_tracked))

    def forward(self, layer_id: int, x: np.ndarray, training: bool) -> tuple[np.ndarray, int]:
        layer, before = self.layers[layer_id], self.collectives
        layer.train(training)
        with self.torch.no_grad():
            y = layer(self.torch.from_numpy(x))
        return y.double().numpy(), self.collectives - before

    def forward_backward(self, layer_id: int, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple[tuple, int]:
        layer, before = self.layers[layer_id], self.collectives
        layer.train(training)
        layer.zero_grad(set_to_none=True)
        xt = self.torch.from_numpy(x).requires_grad_(True)
        y = layer(xt)
        y.backward(self.torch.from_numpy(dy))

        def numpy(t):
            return None if t is None else t.detach().double().numpy().copy()

        grads = (numpy(layer.weight.grad), numpy(layer.bias.grad)) if layer.affine else (None, None)
        return (numpy(y), numpy(xt.grad), *grads), self.collectives - before


class _Rendezvous:
    """A fresh rendezvous store for every start of a world, on a port the system picks, served until the
    world stops."""

    def __init__(self, world_size: int) -> None:
        self.world_size, self.store = world_size, None

    def __call__(self) -> dict:
        import torch.distributed as dist

        self.store = dist.TCPStore("127.0.0.1", 0, self.world_size, is_master=True, wait_for_workers=False,
                                   timeout=_TIMEOUT)
        return {"host": "127.0.0.1", "port": self.store.port}

    def close(self) -> None:
        self.store = None  # the last reference: the store's server stops and its port closes


@functools.cache
def world(world_size: int) -> World:
    """The coordinator's world of ``world_size`` ranks."""
    return World(f"{__name__}:TorchRank", world_size, _Rendezvous(world_size))
