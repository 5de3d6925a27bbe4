"""Write small ONNX models, valid and invalid, for the reader's lit tests.

Usage: make_malformed_models.py OUTPUT_DIR [CASE ...]

Each case writes OUTPUT_DIR/CASE/model.onnx and any external data files it
needs. Without CASE arguments every case is written. Invalid models are
built by setting fields on the protos directly, because onnx.helper
refuses most of these mistakes.
"""

import os
import struct
import sys

import numpy as np
from onnx import TensorProto, helper


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="make_malformed_models")
    model.ir_version = 8
    return model


def float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def identity_model(tensor, shape=None):
    """A graph whose output 'y' is Identity(initializer)."""
    node = helper.make_node("Identity", [tensor.name], ["y"], name="id")
    return make_model([node], [], [float_input("y", shape)], [tensor])


def external_tensor(name, dims, location, offset=None, length=None, data_type=TensorProto.FLOAT):
    tensor = TensorProto(name=name, data_type=data_type, dims=dims)
    tensor.data_location = TensorProto.EXTERNAL
    entries = [("location", location)]
    if offset is not None:
        entries.append(("offset", str(offset)))
    if length is not None:
        entries.append(("length", str(length)))
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key = key
        entry.value = value
    return tensor


def write(folder, model):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.onnx"), "wb") as stream:
        stream.write(model.SerializeToString())


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(data)


FLOATS_16_BYTES = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)

# ---- External data ---------------------------------------------------------


def absolute_location(folder):
    write_bytes(os.path.join(folder, "weights.bin"), FLOATS_16_BYTES)
    write(folder, identity_model(external_tensor("w", [4], os.path.join(folder, "weights.bin"))))


def dotdot_location(folder):
    write_bytes(os.path.join(os.path.dirname(folder), "outside.bin"), FLOATS_16_BYTES)
    write(folder, identity_model(external_tensor("w", [4], "sub/../../outside.bin")))


def symlink_escape(folder):
    outside = os.path.join(os.path.dirname(folder), "outside_target.bin")
    write_bytes(outside, FLOATS_16_BYTES)
    os.makedirs(folder, exist_ok=True)
    os.symlink(outside, os.path.join(folder, "link.bin"))
    write(folder, identity_model(external_tensor("w", [4], "link.bin")))


def offset_past_end(folder):
    write_bytes(os.path.join(folder, "weights.bin"), FLOATS_16_BYTES)
    write(folder, identity_model(external_tensor("w", [4], "weights.bin", offset=1000)))


def length_past_end(folder):
    write_bytes(os.path.join(folder, "weights.bin"), FLOATS_16_BYTES)
    write(folder, identity_model(external_tensor("w", [4], "weights.bin", offset=8, length=16)))


def offset_not_numeric(folder):
    write_bytes(os.path.join(folder, "weights.bin"), FLOATS_16_BYTES)
    tensor = external_tensor("w", [4], "weights.bin")
    entry = tensor.external_data.add()
    entry.key = "offset"
    entry.value = "0x10"
    write(folder, identity_model(tensor))


def external_file_missing(folder):
    write(folder, identity_model(external_tensor("w", [4], "missing.bin")))


def external_size_mismatch(folder):
    write_bytes(os.path.join(folder, "weights.bin"), FLOATS_16_BYTES)
    write(folder, identity_model(external_tensor("w", [3], "weights.bin")))


# ---- Tensor data -----------------------------------------------------------


def raw_size_mismatch(folder):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3])
    tensor.raw_data = b"\0" * 20
    write(folder, identity_model(tensor))


def typed_count_mismatch(folder):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3])
    tensor.float_data.extend([1.0, 2.0, 3.0, 4.0, 5.0])
    write(folder, identity_model(tensor))


def negative_dim(folder):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, -3])
    write(folder, identity_model(tensor))


def overflowing_dims(folder):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 32, 1 << 32, 16])
    write(folder, identity_model(tensor))


def unsupported_type(folder):
    tensor = TensorProto(name="vocab", data_type=TensorProto.STRING, dims=[2])
    tensor.string_data.extend([b"a", b"b"])
    write(folder, identity_model(tensor))


def wrong_typed_field(folder):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    tensor.int64_data.extend([1, 2])
    write(folder, identity_model(tensor))


# ---- Graph structure -------------------------------------------------------


def undefined_input(folder):
    node = helper.make_node("Add", ["x", "bias"], ["y"], name="add_bias")
    write(folder, make_model([node], [float_input("x", [2])], [float_input("y", [2])]))


def cycle(folder):
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Neg", ["b"], ["c"], name="third"),
    ]
    write(folder, make_model(nodes, [float_input("x", [2])], [float_input("c", [2])]))


def defined_twice(folder):
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
        helper.make_node("Neg", ["x"], ["y"], name="neg"),
    ]
    write(folder, make_model(nodes, [float_input("x", [2])], [float_input("y", [2])]))


def truncated(folder):
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [64], np.arange(64, dtype=np.float32))
    data = identity_model(tensor).SerializeToString()
    write_bytes(os.path.join(folder, "model.onnx"), data[: len(data) // 2])


def garbage(folder):
    write_bytes(os.path.join(folder, "model.onnx"), b"PK\x03\x04 this is a zip file, not ONNX\xff\xff")


def deep_nesting(folder):
    # TypeProto.sequence_type (field 4) contains a TypeProto.Sequence, whose
    # elem_type (field 1) is another TypeProto, 2000 levels deep, inside
    # a graph input: ModelProto.graph (7) > GraphProto.input (11) >
    # ValueInfoProto.type (2).
    def length_delimited(field, payload):
        key = bytes([(field << 3) | 2])
        length = len(payload)
        varint = bytearray()
        while True:
            byte = length & 0x7F
            length >>= 7
            if length:
                varint.append(byte | 0x80)
            else:
                varint.append(byte)
                break
        return key + bytes(varint) + payload

    type_proto = b""
    for _ in range(2000):
        type_proto = length_delimited(4, length_delimited(1, type_proto))
    value_info = length_delimited(1, b"x") + length_delimited(2, type_proto)
    graph = length_delimited(11, value_info)
    write_bytes(os.path.join(folder, "model.onnx"), length_delimited(7, graph))


# ---- Valid models ----------------------------------------------------------


def valid_external(folder):
    """Two tensors in one file; the second has no length, so it runs to
    the end of the file."""
    first = np.arange(6, dtype=np.float32)
    second = np.array([7, 8], dtype=np.int64)
    write_bytes(os.path.join(folder, "data", "weights.bin"), first.tobytes() + second.tobytes())
    tensors = [
        external_tensor("first", [2, 3], "data/weights.bin", offset=0, length=24),
        external_tensor("second", [2], "./data/weights.bin", offset=24,
                        data_type=TensorProto.INT64),
    ]
    nodes = [helper.make_node("Identity", ["first"], ["y"], name="id"),
             helper.make_node("Identity", ["second"], ["z"])]
    outputs = [float_input("y", [2, 3]), helper.make_tensor_value_info("z", TensorProto.INT64, [2])]
    write(folder, make_model(nodes, [], outputs, tensors))


def valid_typed(folder):
    """Typed fields that the reader rewrites into raw bytes: int4 packs two
    elements per int32_data entry, float16 stores bit patterns."""
    int4_typed = helper.make_tensor("int4_typed", TensorProto.INT4, [5], [1, -2, 3, -4, 7])
    int4_raw = TensorProto(name="int4_raw", data_type=TensorProto.INT4, dims=[3])
    int4_raw.raw_data = bytes([0xE1, 0x03])
    half = helper.make_tensor("half", TensorProto.FLOAT16, [2], np.array([1.0, -2.0], np.float16))
    uint32 = helper.make_tensor("uint32", TensorProto.UINT32, [2], [1, 0xFFFFFFFF])
    floats = helper.make_tensor("floats", TensorProto.FLOAT, [2], [1.0, -0.5])
    scalar = helper.make_tensor("scalar", TensorProto.INT64, [], [-1])
    tensors = [int4_typed, int4_raw, half, uint32, floats, scalar]
    nodes = [helper.make_node("Identity", [t.name], [t.name + "_out"]) for t in tensors]
    outputs = [helper.make_tensor_value_info(t.name + "_out", t.data_type, None) for t in tensors]
    write(folder, make_model(nodes, [], outputs, tensors))


def valid_unsorted(folder):
    """Nodes listed after their users; the reader sorts them."""
    nodes = [
        helper.make_node("Neg", ["b"], ["c"], name="third"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Add", ["x", "x"], ["a"], name="first",),
        helper.make_node("Transpose", ["c"], ["d"], name="fourth", perm=[0]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])]
    write(folder, make_model(nodes, inputs, [float_input("d", [None])]))


CASES = {function.__name__: function for function in [
    absolute_location, dotdot_location, symlink_escape, offset_past_end, length_past_end,
    offset_not_numeric, external_file_missing, external_size_mismatch, raw_size_mismatch,
    typed_count_mismatch, negative_dim, overflowing_dims, unsupported_type, wrong_typed_field,
    undefined_input, cycle, defined_twice, truncated, garbage, deep_nesting, valid_external,
    valid_typed, valid_unsorted,
]}


def main(argv):
    if len(argv) < 2:
        sys.exit(f"usage: {argv[0]} OUTPUT_DIR [CASE ...]; cases: {', '.join(CASES)}")
    output = argv[1]
    names = argv[2:] or list(CASES)
    for name in names:
        if name not in CASES:
            sys.exit(f"{argv[0]}: unknown case '{name}'; cases: {', '.join(CASES)}")
        CASES[name](os.path.join(output, name))


if __name__ == "__main__":
    main(sys.argv)
