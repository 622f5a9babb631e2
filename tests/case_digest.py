"""SHA-256 of everything a case seeds from its id (inputs, cotangent, initial state), so that a test can
compare the data of the same cases in two processes. As a script: one ``repr(case)`` per line on stdin,
``{case id: digest}`` as JSON on stdout."""

import hashlib
import json
import sys

import numpy as np

from conformance.cases import Case


def digest(case: Case) -> str:
    h = hashlib.sha256()
    for a in (*case.batches(), case.cotangent(), *case.initial_state().values()):
        h.update(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    cases = [eval(line, {"Case": Case}) for line in sys.stdin.read().splitlines()]  # our own reprs
    print(json.dumps({case.id: digest(case) for case in cases}))
