"""Reading the results asv saved under a configuration's ``results_dir``."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

from asv.config import Config
from asv.results import Results

__all__ = ["load", "samples", "values"]


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


def _by_combination(result: Results, key: str, found: list) -> dict[tuple, object]:
    """``found`` (one entry per parameter combination, as asv lists them) keyed by Python values:
    ``('torch.BatchNorm2d', 'forward_training', (32, 64, 56, 56), 1, 'float32')``."""
    combos = itertools.product(*result.get_result_params(key))  # one empty combination without parameters
    return {tuple(ast.literal_eval(p) for p in combo): entry for combo, entry in zip(combos, found)}


def values(result: Results, key: str) -> dict[tuple, float]:
    """``key``'s measured values by parameter combination; skipped and failed combinations left out."""
    if key not in result.get_all_result_keys():
        return {}
    found = _by_combination(result, key, result.get_result_value(key, result.get_result_params(key)))
    return {combo: value for combo, value in found.items() if value is not None and not math.isnan(value)}


def samples(result: Results, key: str) -> dict[tuple, list[float]]:
    """``key``'s raw samples by parameter combination where asv recorded them (``--record-samples``; timing
    benchmarks only), else its value as the one sample; skipped and failed combinations left out."""
    measured = values(result, key)
    if not measured:
        return {}
    raw = _by_combination(result, key, result.get_result_samples(key, result.get_result_params(key)))
    return {combo: list(raw.get(combo) or [value]) for combo, value in measured.items()}
