"""Porting the seeds' CNN between frameworks, as a user runs it: ``python examples/port_cnn.py`` prints how each
framework's BatchNorm statistics, gradients and logits compare with PyTorch's after one SGD step.

The recipe itself (kernels transposed, the classifier's inputs permuted from (C, H, W) to (H, W, C) order, each
BatchNorm carried with :func:`reference.port`) is :mod:`conformance.transforms.cnn`, where the suite's CNN
check (``conformance/checks/test_cnn.py``) imports it from, so that an installed suite has it too.
"""

from conformance.transforms.cnn import main

if __name__ == "__main__":
    main()
