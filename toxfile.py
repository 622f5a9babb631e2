"""tox's in-tree plugin: with BN_TOX_PRUNE=1 each test environment's folder is removed once it has run.

A whole `tox` builds a dozen environments, most with a framework or several in them: about 17 GB of disk kept
at once, where pruning needs that of the largest environment alone (4.6 GB at the peak of a CI run). CI sets
it (.ci/run): a clean machine there once ran out of disk with 9 GB free. Off by default, so that a second
local run reuses the environments.
"""

import os
import shutil

from tox.plugin import impl
from tox.tox_env.api import ToxEnv
from tox.tox_env.runner import RunToxEnv


@impl
def tox_env_teardown(tox_env: ToxEnv) -> None:
    # Package environments (.pkg) are shared by every run environment: only run environments go.
    if os.environ.get("BN_TOX_PRUNE") == "1" and isinstance(tox_env, RunToxEnv):
        shutil.rmtree(tox_env.env_dir, ignore_errors=True)
