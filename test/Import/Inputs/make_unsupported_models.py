"""Writes small ONNX models that iq cannot import, for the error tests.

Usage: make_unsupported_models.py OUTPUT_DIR
"""
import sys

import onnx
from onnx import TensorProto, helper


def save(graph, path, opsets):
    model = helper.make_model(graph, opset_imports=opsets, producer_name="iq-tests")
    onnx.save(model, path)


def main():
    out = sys.argv[1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])

    einsum = helper.make_node("Einsum", ["x"], ["y"], name="my_einsum", equation="ij->ij")
    save(helper.make_graph([einsum], "g", [x], [y]), f"{out}/einsum.onnx",
         [helper.make_opsetid("", 17)])

    custom = helper.make_node("FancyNorm", ["x"], ["y"], name="custom_norm", domain="com.example")
    save(helper.make_graph([custom], "g", [x], [y]), f"{out}/custom-domain.onnx",
         [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])

    sigmoid = helper.make_node("Sigmoid", ["x"], ["y"], name="just_sigmoid")
    save(helper.make_graph([sigmoid], "g", [x], [y]), f"{out}/not-llama.onnx",
         [helper.make_opsetid("", 17)])


if __name__ == "__main__":
    main()
