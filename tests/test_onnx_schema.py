"""The ONNX adapter's table of allowed dtypes is the installed schema's (``onnx.defs``)."""

import pytest

from conformance.adapters.onnx_op import _TENSOR_TYPES, OPSETS, SCHEMA_DTYPES

defs = pytest.importorskip("onnx.defs", reason="onnx is not installed (tox -e onnx runs this)")


@pytest.mark.parametrize("opset", OPSETS)
def test_schema_dtypes_are_the_installed_schemas(opset: int) -> None:
    schema = defs.get_schema("BatchNormalization", opset, "")
    allowed = next(t.allowed_type_strs for t in schema.type_constraints if t.type_param_str == "T")
    names = {"FLOAT": "float", "FLOAT16": "float16", "DOUBLE": "double", "BFLOAT16": "bfloat16"}
    assert SCHEMA_DTYPES[opset] == {d for d, t in _TENSOR_TYPES.items() if f"tensor({names[t]})" in allowed}
