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

    # An embedding followed by a 4-bit MatMulNBits projection, which the
    # raise pass does not handle yet.
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 8])
    table = helper.make_tensor("table", TensorProto.FLOAT, [8, 32], [0.0] * 256)
    packed = helper.make_tensor("packed", TensorProto.UINT8, [8, 1, 16], [0] * 128)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [8], [1.0] * 8)
    gather = helper.make_node("Gather", ["table", "input_ids"], ["x"], name="embed")
    nbits = helper.make_node("MatMulNBits", ["x", "packed", "scales"], ["logits"], name="q_proj_nbits",
                             domain="com.microsoft", K=32, N=8, bits=4, block_size=32)
    save(helper.make_graph([gather, nbits], "g", [ids], [logits], [table, packed, scales]),
         f"{out}/matmul-nbits.onnx",
         [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])

    sigmoid = helper.make_node("Sigmoid", ["x"], ["y"], name="just_sigmoid")
    save(helper.make_graph([sigmoid], "g", [x], [y]), f"{out}/not-llama.onnx",
         [helper.make_opsetid("", 17)])


if __name__ == "__main__":
    main()
