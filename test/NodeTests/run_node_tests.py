#!/usr/bin/env python3
"""Run ONNX backend node tests through `iq-compile --graph`.

Each test directory contains model.onnx and test_data_set_0/{input,output}_N.pb.
A test runs when every node's op is one the generic lowering supports and
every graph input and output has a dtype it handles. It is compiled to a
shared library, iq_graph_forward(slots) is called through ctypes with
slots = input addresses then output addresses, and the outputs are compared
with the expected ones: exactly for integers and bool, with rtol/atol for
floats. Prints one summary line per op type and exits 1 if any test failed.
"""
import argparse
import ctypes
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

CHECKOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
# Where CI and the development machines keep the ONNX node test data.
DEFAULT_ROOT = os.path.normpath(os.path.join(CHECKOUT, "..", "shared", "data", "onnx-node-tests"))

# The generic ai.onnx ops of the importer's table (lib/IR/OnnxOps.c)
# that iq-compile --graph lowers.
GENERIC_OPS = {
    "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Cos",
    "DequantizeLinear", "Div", "DynamicQuantizeLinear", "Equal", "Exp", "Expand",
    "Gather", "Gemm", "Greater", "GreaterOrEqual", "Identity", "Less",
    "LessOrEqual", "MatMul", "MatMulInteger", "Max", "Min", "Mul", "Neg", "Not",
    "Or", "Pow", "QuantizeLinear", "Range", "Reciprocal", "ReduceMean",
    "Reshape", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Sqrt", "Squeeze",
    "Sub", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where",
}

TP = onnx.TensorProto
SUPPORTED_DTYPES = {
    TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.BFLOAT16, TP.BOOL, TP.INT8, TP.INT16,
    TP.INT32, TP.INT64, TP.UINT8, TP.UINT16, TP.UINT32, TP.UINT64, TP.INT4,
    TP.UINT4,
}
FLOAT_DTYPES = {TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.BFLOAT16}
FOUR_BIT_DTYPES = {TP.INT4, TP.UINT4}

# The tolerances of the ONNX backend test runner; every float test passes
# with them, float16 and bfloat16 included.
RTOL = 1e-3
ATOL = 1e-7


def dtype_name(dtype):
    """The TensorProto name of a dtype; this onnx package may predate it."""
    try:
        return TP.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def element_type(value_info):
    return value_info.type.tensor_type.elem_type


def op_group(model):
    """The op type a test counts under; graphs of several nodes (the
    *_expanded function bodies) count under their test family."""
    ops = [node.op_type for node in model.graph.node]
    if len(ops) == 1:
        return ops[0]
    return "(graphs of %s)" % "+".join(sorted(set(ops)))


def skip_reason(model):
    unsupported = sorted({n.op_type for n in model.graph.node
                          if n.op_type not in GENERIC_OPS or n.domain not in ("", "ai.onnx")})
    if unsupported:
        return None  # not a test of a generic op: not counted at all
    for value in list(model.graph.input) + list(model.graph.output):
        if not value.type.HasField("tensor_type"):
            return "non-tensor input or output"
        dtype = element_type(value)
        if dtype not in SUPPORTED_DTYPES:
            return "dtype " + dtype_name(dtype)
    return ""


def to_bytes(array, dtype):
    """The raw bytes of a tensor as iq_graph_forward reads them."""
    if dtype in FOUR_BIT_DTYPES:
        values = np.asarray(array).astype(np.int8).ravel().astype(np.uint8) & 0xF
        if values.size % 2:
            values = np.append(values, np.uint8(0))
        packed = values[0::2] | (values[1::2] << 4)
        return np.ascontiguousarray(packed.astype(np.uint8))
    return np.ascontiguousarray(array).view(np.uint8).ravel().copy()


def from_bytes(raw, expected, dtype):
    if dtype in FOUR_BIT_DTYPES:
        count = expected.size
        low = raw & 0xF
        high = raw >> 4
        values = np.empty(2 * raw.size, dtype=np.int16)
        values[0::2] = low
        values[1::2] = high
        values = values[:count]
        if dtype == TP.INT4:
            values = np.where(values >= 8, values - 16, values)
        return values.reshape(expected.shape), np.asarray(expected).astype(np.int16)
    return raw.view(expected.dtype).reshape(expected.shape), expected


def compare(actual, expected, dtype):
    """Returns None when equal within tolerance, else a short message."""
    if dtype in FLOAT_DTYPES:
        a = np.asarray(actual).astype(np.float64)
        e = np.asarray(expected).astype(np.float64)
        try:
            np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, equal_nan=True)
        except AssertionError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            return " ".join(lines[1:4])
        return None
    if not np.array_equal(np.asarray(actual), np.asarray(expected)):
        mismatch = np.argwhere(np.asarray(actual) != np.asarray(expected))
        first = tuple(mismatch[0]) if len(mismatch) else ()
        return "%d mismatches, first at %s: got %s, expected %s" % (
            len(mismatch), first, np.asarray(actual)[first], np.asarray(expected)[first])
    return None


def load_tensors(directory, prefix):
    tensors = []
    index = 0
    while os.path.exists(os.path.join(directory, "%s_%d.pb" % (prefix, index))):
        tensors.append(numpy_helper.to_array(
            onnx.load_tensor(os.path.join(directory, "%s_%d.pb" % (prefix, index)))))
        index += 1
    return tensors


def execute(library, model, data_dir, result_pipe):
    """Runs in a forked child so a crash in generated code fails one test."""
    try:
        inputs = load_tensors(data_dir, "input")
        expected = load_tensors(data_dir, "output")
        graph_inputs = list(model.graph.input)
        graph_outputs = list(model.graph.output)
        if len(inputs) != len(graph_inputs) or len(expected) != len(graph_outputs):
            raise RuntimeError("the test data does not match the graph's inputs and outputs")
        buffers = [to_bytes(array, element_type(info)) for array, info in zip(inputs, graph_inputs)]
        outputs = []
        for array, info in zip(expected, graph_outputs):
            dtype = element_type(info)
            size = (array.size + 1) // 2 if dtype in FOUR_BIT_DTYPES else array.nbytes
            outputs.append(np.zeros(max(size, 1), dtype=np.uint8))
        slots = (ctypes.c_uint64 * (len(buffers) + len(outputs)))(
            *[buffer.ctypes.data for buffer in buffers + outputs])
        handle = ctypes.CDLL(library)
        forward = handle.iq_graph_forward
        forward.argtypes = [ctypes.c_void_p]
        forward.restype = None
        forward(slots)
        problems = []
        for index, (raw, array, info) in enumerate(zip(outputs, expected, graph_outputs)):
            dtype = element_type(info)
            size = (array.size + 1) // 2 if dtype in FOUR_BIT_DTYPES else array.nbytes
            actual, reference = from_bytes(raw[:size], array, dtype)
            problem = compare(actual, reference, dtype)
            if problem:
                problems.append("output %d: %s" % (index, problem))
        message = {"passed": not problems, "detail": "; ".join(problems)}
    except Exception as error:  # any failure in the child is this test's failure
        message = {"passed": False, "detail": "%s: %s" % (type(error).__name__, error)}
    os.write(result_pipe, json.dumps(message).encode())
    os._exit(0)


def run_test(arguments):
    test_dir, compiler = arguments
    name = os.path.basename(test_dir)
    model = onnx.load(os.path.join(test_dir, "model.onnx"))
    reason = skip_reason(model)
    group = op_group(model)
    if reason is None:
        return None
    if reason:
        return {"test": name, "group": group, "status": "skipped", "detail": reason}
    with tempfile.TemporaryDirectory(prefix="iq-node-") as work:
        library = os.path.join(work, "libgraph.so")
        try:
            compiled = subprocess.run(
                [compiler, "--graph", os.path.join(test_dir, "model.onnx"), "-o", library],
                capture_output=True, text=True)
        except OSError as error:  # e.g. iq-compile missing or being rebuilt
            return {"test": name, "group": group, "status": "failed",
                    "detail": "cannot run %s: %s" % (compiler, error)}
        if compiled.returncode != 0 and "the shape of the result of Range is unknown" in compiled.stderr:
            # The window-function expansions compute Range's length from an
            # input value, so the graph has no static shape; --graph needs one.
            return {"test": name, "group": group, "status": "skipped",
                    "detail": "Range's output length depends on an input value"}
        if compiled.returncode != 0:
            lines = [line for line in compiled.stderr.splitlines() if "error" in line]
            detail = (lines[0] if lines else compiled.stderr.strip()[-300:])[:300]
            return {"test": name, "group": group, "status": "failed",
                    "detail": "compile: " + detail}
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            execute(library, model, os.path.join(test_dir, "test_data_set_0"), write_end)
        os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) or not chunks:
            return {"test": name, "group": group, "status": "failed",
                    "detail": "crashed (status %d)" % status}
        result = json.loads(b"".join(chunks))
        return {"test": name, "group": group,
                "status": "passed" if result["passed"] else "failed",
                "detail": result["detail"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help="folder of node test folders (default: %(default)s)")
    parser.add_argument("--iq-compile", default=None,
                        help="the iq-compile binary (default: build/bin/iq-compile of this checkout)")
    parser.add_argument("--filter", default=None,
                        help="regular expression a test folder name must match")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="tests compiled and run at once (default: the number of CPUs)")
    parser.add_argument("--verbose", action="store_true",
                        help="print every test's result, not only failures")
    options = parser.parse_args()

    if not os.path.isdir(options.root):
        print("node tests not found at %s; nothing to run" % options.root)
        return 0
    compiler = options.iq_compile or os.path.join(CHECKOUT, "build", "bin", "iq-compile")
    pattern = re.compile(options.filter) if options.filter else None
    tests = sorted(
        os.path.join(options.root, name) for name in os.listdir(options.root)
        if os.path.isfile(os.path.join(options.root, name, "model.onnx"))
        and (pattern is None or pattern.search(name)))

    with multiprocessing.Pool(options.jobs) as pool:
        results = [r for r in pool.imap(run_test, [(test, compiler) for test in tests]) if r]

    groups = defaultdict(lambda: {"ran": 0, "passed": 0, "skipped": 0, "reasons": set()})
    for result in results:
        group = groups[result["group"]]
        if result["status"] == "skipped":
            group["skipped"] += 1
            group["reasons"].add(result["detail"])
            continue
        group["ran"] += 1
        if result["status"] == "passed":
            group["passed"] += 1
        if result["status"] == "failed" or options.verbose:
            print("%s %s: %s" % (result["status"].upper(), result["test"], result["detail"]))
    for name in sorted(groups):
        group = groups[name]
        reasons = " (%s)" % ", ".join(sorted(group["reasons"])) if group["reasons"] else ""
        print("%s: ran %d, passed %d, skipped %d%s" % (
            name, group["ran"], group["passed"], group["skipped"], reasons))
    ran = sum(group["ran"] for group in groups.values())
    passed = sum(group["passed"] for group in groups.values())
    skipped = sum(group["skipped"] for group in groups.values())
    print("TOTAL: ran %d, passed %d, failed %d, skipped %d" % (ran, passed, ran - passed, skipped))
    return 1 if passed < ran else 0


if __name__ == "__main__":
    sys.exit(main())
