"""Reading the results asv saved under a configuration's ``results_dir``."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

from asv.config import Config
from asv.results import Results

__all__ = ["load", "values"]


def load(config: Path, commit: str | None = None) -> list[Results]:
    """Every results file saved under ``config``'s results_dir, or only those of ``commit`` (a full hash)."""
    results_dir = config.parent / Config.load(str(config)).results_dir  # relative to the file, as asv reads it
    found = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name not in ("machine.json", "benchmarks.json"):
            result = Results.load(str(path))
            if commit is None or result.commit_hash == commit:
                found.append(result)
    return found


def values(result: Results, key: str) -> dict[tuple, float]:
    """``key``'s measured values by parameter combination (Python values: ``('torch.BatchNorm2d',
    'forward_training', (32, 64, 56, 56), 1, 'float32')``); skipped and failed combinations left out."""
    if key not in result.get_all_result_keys():
        return {}
    params = result.get_result_params(key)
    combos = itertools.product(*params)  # one empty combination for a benchmark without parameters
    return {
        tuple(ast.literal_eval(p) for p in combo): value
        for combo, value in zip(combos, result.get_result_value(key, params))
        if value is not None and not math.isnan(value)
    }
