"""SHA-256 of everything a case seeds from its id (inputs, cotangent, second-order direction, initial state in
each built-in convention's fields), so that a test can compare the data of the same cases in two processes.
As a script: one ``repr(case)`` per line on stdin, ``{case id: digest}`` as JSON on stdout."""

import hashlib
import json
import sys

import numpy as np

from conformance.operators.batchnorm.cases import BatchNormCase
from reference import CONVENTIONS


def digest(case: BatchNormCase) -> str:
    h = hashlib.sha256()
    states = [a for conv in CONVENTIONS.values() for a in case.initial_state(conv).values()]
    direction = [a for a in case.direction().values() if a is not None]
    for a in (*case.batches(), case.cotangent(), *direction, *states):
        h.update(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    cases = [eval(line, {"BatchNormCase": BatchNormCase}) for line in sys.stdin.read().splitlines()]  # our own reprs
    print(json.dumps({case.id: digest(case) for case in cases}))
