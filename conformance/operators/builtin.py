"""The operators this project ships, by name: what a saved report's ``operator`` fields name (the report
renders their vocabulary from it). A new operator adds its record here."""

from __future__ import annotations

from . import Operator
from .batchnorm import BATCHNORM
from .cnn import CNN
from .groupnorm import GROUPNORM
from .instancenorm import INSTANCENORM
from .layernorm import LAYERNORM

__all__ = ["OPERATORS"]

OPERATORS: dict[str, Operator] = {op.name: op for op in (BATCHNORM, CNN, LAYERNORM, GROUPNORM, INSTANCENORM)}
