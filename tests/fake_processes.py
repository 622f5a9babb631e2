"""Implementations for ``test_harness_processes.py``: each in a worker of its own (their ``process_env``
differs), built layers hang in ``forward`` after saying so (a file ``ready-<pid>`` in ``$BN_SLEEPER_READY``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, State
from reference import TORCH


class SleepingLayer:
    def set_state(self, state: State) -> None:
        pass

    def get_state(self) -> State:
        return State()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        Path(os.environ["BN_SLEEPER_READY"], f"ready-{os.getpid()}").touch()
        time.sleep(600)
        return x

    def forward_backward(self, x, dy, training):
        return self.forward(x, training), dy, None, None


class Sleeper(Implementation):
    family = "sleeper"
    framework = "numpy"
    convention = TORCH
    capabilities = Capabilities(ranks=frozenset({2}), channel_axes=frozenset({1}), dtypes=frozenset({"float32"}))

    def __init__(self, name: str) -> None:
        self.name = f"sleeper.{name}"
        self.process_env = MappingProxyType({"BN_SLEEPER": name})

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return TORCH.defaults()

    def build(self, spec: LayerSpec) -> SleepingLayer:
        return SleepingLayer()


def sleepers() -> list[Sleeper]:
    return [Sleeper("one"), Sleeper("two")]
