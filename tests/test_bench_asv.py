"""The asv suite's wiring: asv's parent processes import no framework, a plain ``asv run`` gives each Keras
backend a child that sets its backend before importing Keras, and ``perf.run`` groups implementations as
the conformance suite isolates them and selects exactly a group's parameter combinations."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("asv", reason="asv is not installed (tox -e bench runs these tests)")

from perf.run import ROOT, groups, selection  # noqa: E402

FRAMEWORKS = ("flax", "jax", "keras", "onnx", "onnxruntime", "tensorflow", "tf_keras", "torch")


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BN_BENCH_")}
    return env | variables


@pytest.mark.parametrize(("process", "preimport", "imported"), [
    ("discover", "", []), ("discover", "jax", []), ("run_server", "", []), ("run_server", "jax", ["jax"]),
])
def test_asv_parent_processes_import_no_framework(process: str, preimport: str, imported: list[str]) -> None:
    """asv's discovery process and its forkserver import the whole suite: no framework unless perf.run
    asks the forkserver to (BN_BENCH_PREIMPORT), and then only those modules."""
    code = ("import sys; from asv_runner.discovery import disc_benchmarks; "
            f"list(disc_benchmarks({str(ROOT / 'benchmarks')!r})); "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, process], env=_env(BN_BENCH_PREIMPORT=preimport),
                         capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == str(imported)


def test_plain_asv_run_gives_each_keras_backend_its_own_child() -> None:
    """Without perf.run's grouping, one asv run over two Keras backends: each child must set its backend
    before importing Keras (the adapter raises if Keras came up with another one)."""
    out = subprocess.run(
        [sys.executable, "-m", "asv", "run", "--python=same", "--quick", "--dry-run", "--show-stderr", "-b",
         r"track_error_ratio\('keras\.(jax|torch)', 'forward_training', \(4, 8, 6, 6\)"],
        env=_env(BN_BENCH_GRID="ci", BN_BENCH_IMPL="keras.jax,keras.torch"), cwd=ROOT, capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    measured = r"keras\.(?:jax|torch)\s+forward_training\s+\(4, 8, 6, 6\)\s+1\s+float32\s+\d"
    assert len(re.findall(measured, out.stdout)) == 2


def test_groups_separate_families_and_keras_backends() -> None:
    """One group per family and Keras backend, BatchNorm's and the normalization family's layers together (a family
    selects every benchmarked implementation of it)."""
    found = groups(sys.executable, _env(BN_BENCH_IMPL="reference.torch,torch.BatchNorm2d,keras,tf_keras.*"))
    by_names = {tuple(g["names"]): (g["env"], g["preimport"]) for g in found}
    family = ("GroupNormalization", "LayerNormalization", "RMSNormalization")
    assert by_names == {
        ("reference.torch",): ({}, []),
        ("torch.BatchNorm2d",): ({}, ["torch"]),
        **{(f"keras.{b}", *(f"keras.{b}.{layer}" for layer in family)): ({"KERAS_BACKEND": b}, ["keras", b])
           for b in ("tensorflow", "jax", "torch")},
        ("tf_keras.fused", "tf_keras.nonfused", "tf_keras.GroupNormalization", "tf_keras.LayerNormalization"):
            ({}, ["tensorflow", "tf_keras"]),
    }


def test_selection_picks_exactly_a_groups_combinations() -> None:
    params = "'forward_training', (4, 8, 6, 6), 1, 'float32')"
    names = {impl: f"bench_speed.BatchNorm.time_batchnorm('{impl}', {params}" for impl in
             ("torch.BatchNorm2d", "torch.BatchNorm2d.channels_last", "keras.torch")}
    machine = "bench_machine.Machine.track_threads"
    regex = selection(["torch.BatchNorm2d", "keras.torch"], machine=True)
    assert [n for n in [*names.values(), machine] if re.search(regex, n)] == [
        names["torch.BatchNorm2d"], names["keras.torch"], machine]
    assert not re.search(selection(["torch.BatchNorm2d"], machine=False), machine)
    only_speed = selection(["torch.BatchNorm2d"], machine=True, bench=r"\.time_")
    assert re.search(only_speed, names["torch.BatchNorm2d"]) and not re.search(only_speed, machine)
