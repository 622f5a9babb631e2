"""A rank for the tests of ``conformance.transforms.world.ranks``: it echoes, raises, dies, hangs or blocks on
request."""

from __future__ import annotations

import os
import signal
import time


class ToyRank:
    def __init__(self, rank: int, world_size: int, config: dict) -> None:
        self.rank, self.world_size, self.config_given = rank, world_size, config

    def echo(self, value: object) -> tuple:
        return self.rank, self.world_size, value

    def config(self) -> dict:
        return self.config_given

    def fail(self, failing_rank: int) -> None:
        if self.rank == failing_rank:
            raise ValueError(f"rank {self.rank} was asked to fail")

    def die(self, failing_rank: int) -> None:
        if self.rank == failing_rank:
            os._exit(3)

    def hang(self, failing_rank: int) -> None:
        if self.rank == failing_rank:
            time.sleep(600)

    def pause(self) -> None:
        """Block until a signal: a rank busy in a call, not reading its pipe."""
        signal.pause()
