"""Times onnxruntime's MatMulNBits (4-bit weights, block 32) on float32
activations.

Usage: ort_bench.py THREADS ACCURACY_LEVEL M K N [M K N ...]; prints
    ort accN M K N median_ms GB/s GOPS
with GB/s over the 4-bit weight bytes plus the float32 block scales. The
weights cycle through sessions whose weights exceed 64 MiB in all, as in
iq_bench.
"""
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

BLOCK = 32
CYCLE_BYTES = 64 * 1024 * 1024


def make_model(m, k, n, accuracy_level, rng):
    blocks = k // BLOCK
    packed = rng.integers(0, 256, size=(n, blocks, BLOCK // 2), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.01 + 0.001).astype(np.float32)
    node = helper.make_node(
        "MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
        K=k, N=n, bits=4, block_size=BLOCK, accuracy_level=accuracy_level)
    graph = helper.make_graph(
        [node], "matmul_nbits",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        initializer=[
            helper.make_tensor("B", TensorProto.UINT8, packed.shape, packed.tobytes(), raw=True),
            helper.make_tensor("scales", TensorProto.FLOAT, scales.shape, scales.tobytes(),
                               raw=True),
        ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString(), packed.nbytes + scales.nbytes


def bench(threads, accuracy_level, m, k, n):
    if k % BLOCK:
        raise SystemExit(f"ort_bench: K = {k} is not a multiple of the block size {BLOCK}")
    rng = np.random.default_rng(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    model, weight_bytes = make_model(m, k, n, accuracy_level, rng)
    copies = int(CYCLE_BYTES / weight_bytes) + 2
    sessions = []
    for _ in range(copies):
        # Each copy gets its own random weights, so no two share memory.
        model, weight_bytes = make_model(m, k, n, accuracy_level, rng)
        sessions.append(ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]))
    x = (rng.random((m, k), dtype=np.float32) - 0.5).astype(np.float32)
    for session in sessions:
        session.run(None, {"A": x})
    calls = copies * 20 if m == 1 else (5 if m * n * k > 1 << 34 else 9)
    times = []
    for i in range(calls):
        session = sessions[i % copies]
        start = time.perf_counter()
        session.run(None, {"A": x})
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"ort acc{accuracy_level} {m} {k} {n} {seconds * 1e3:.4f} "
          f"{weight_bytes / seconds / 1e9:.2f} {2.0 * m * n * k / seconds / 1e9:.1f}", flush=True)


def main():
    if len(sys.argv) < 6 or (len(sys.argv) - 3) % 3:
        raise SystemExit("usage: ort_bench.py THREADS ACCURACY_LEVEL M K N [M K N ...]")
    threads, accuracy_level = int(sys.argv[1]), int(sys.argv[2])
    shapes = [int(v) for v in sys.argv[3:]]
    for i in range(0, len(shapes), 3):
        bench(threads, accuracy_level, *shapes[i:i + 3])


if __name__ == "__main__":
    main()
