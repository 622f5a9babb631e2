"""The README's "Checking your own implementation", run as written: its shell blocks, in order, in a scratch
folder with a virtual environment of its own, so that the README cannot drift from what works. The one
substitution: the ``git clone`` of the repository is a copy of this working tree (the test checks what is
about to be committed, and needs no network for it); ``pip`` fetches the dependencies as a user's would.

Marked ``newcomer`` and deselected by default (it builds an environment: about a minute): ``tox -e
example`` runs it, so CI does."""

from __future__ import annotations

import os
import re
import subprocess
import venv
from pathlib import Path

import pytest
from sources import ROOT, copy_sources

from conformance.report.results import load

pytestmark = pytest.mark.newcomer

SECTION = "## Checking your own implementation"
CLONE = re.compile(r"^git clone https://<this repository> (\S+)$")


def readme_commands(readme: str) -> list[str]:
    """The shell commands of the section's ``sh`` blocks, in order, continuation lines joined."""
    section = readme.partition(SECTION)[2].partition("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [re.sub(r"\s*\\\n\s*", " ", block).strip() for block in blocks]
    return [line.strip() for block in lines for line in block.splitlines() if line.strip()]


def test_the_section_has_the_three_steps() -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert CLONE.match(commands[0]) and commands[1].startswith("pip install "), commands
    assert any(c.startswith("cp ") for c in commands) and "--impl my_adapter:IMPLEMENTATIONS" in commands[-1]


def test_a_newcomer_following_the_readme_gets_a_gating_run(tmp_path: Path) -> None:
    scratch = tmp_path / "my-project"
    scratch.mkdir()
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    env = {**os.environ, "PATH": f"{environment / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(environment)}
    for name in ("PYTHONPATH", "BN_CONFORMANCE_IMPL", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER"):
        env.pop(name, None)
    for command in readme_commands((ROOT / "README.md").read_text()):
        if clone := CLONE.match(command):
            copy_sources(scratch / clone.group(1))
            continue
        done = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # It gated (every check passed or deviated as the example's registry says), with the installed package.
    doc = load(scratch / "out" / "conformance.json")
    assert doc["counts"]["pass"] > 50 and doc["counts"]["deviation"] >= 1, doc["counts"]
    assert {r["status"] for r in doc["results"]} <= {"pass", "deviation", "skip"}
    where = subprocess.run(["python", "-c", "import conformance; print(conformance.__file__)"], cwd=scratch, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where).is_relative_to(environment), where
