"""Transforms: paths beyond the eager call, each wrapping implementations into new ones that the generic
checks run on (:class:`~conformance.adapters.base.Derivation` says how each was made).

- compile: ``torch_compiled`` (``torch.compile``), ``keras_compiled`` (XLA, ``jax.jit``);
- export and run in a runtime: ``exported`` (ONNX: both exporters, both modes, two engines), and at each of
  onnxruntime's optimization levels: ``ort_optimized``; ``torch_exported`` (``torch.export``, run as
  ``ExportedProgram.module()``);
- fold BatchNorm into the convolution before it, as deployment does: ``folded`` (and ``conv_kinds``); fused for
  quantization-aware training: ``qat``; quantized to quint8 for inference: ``quantized``;
- freeze a layer for fine-tuning, as each framework does: ``frozen``; call Keras' with a mask: ``masked``;
- port weights into another convention: ``porting`` (derived from whatever a run selects);
- half-precision activations beside float32 variables (Keras' mixed policies, ``torch.autocast``):
  ``mixed_precision``;
- shard over a world of ranks: ``sharded``, with the engines in ``world/``.

A new transform is one module here defining ``IMPLEMENTATIONS`` or ``derive(selected)``
(:mod:`conformance.harness.registry`).
"""
