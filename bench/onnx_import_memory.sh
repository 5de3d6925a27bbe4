#!/usr/bin/env bash
# Measures the peak resident memory of loading and of importing a model with
# 1 GiB of external weights: 16 float32 initializers of 4096 x 4096 (64 MiB
# each) in one external file, joined by one Concat node. The reader maps
# the file and never copies it, and the importer streams each tensor into
# the weight store, so both peaks should stay far below 1 GiB. Not part of
# CI.
#
# Usage: bench/onnx_import_memory.sh [WORK_DIR]
#   WORK_DIR  where the 1 GiB model is written (default: a new folder under
#             /tmp, removed afterwards)
# Needs a built iq-onnx-dump (BUILD_DIR, default build) and the venv's
# Python with onnx and numpy.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
python="${PYTHON:-$root/.venv/bin/python}"
dump="$build_dir/bin/iq-onnx-dump"
iq_opt="$build_dir/bin/iq-opt"

if [[ ! -x "$dump" ]]; then
  echo "onnx_import_memory.sh: error: $dump not found; build it with: ninja -C $build_dir iq-onnx-dump" >&2
  exit 1
fi

if [[ $# -ge 1 ]]; then
  work_dir="$1"
  mkdir -p "$work_dir"
else
  work_dir="$(mktemp -d /tmp/iq-onnx-memory.XXXXXX)"
  trap 'rm -rf "$work_dir"' EXIT
fi

"$python" - "$work_dir" <<'PY'
import os
import sys

import numpy as np
from onnx import TensorProto, helper

folder = sys.argv[1]
count, rows, cols = 16, 4096, 4096
tensor_bytes = rows * cols * 4
tensors = []
# Written one tensor at a time, so the generator never keeps 1 GiB in memory either.
with open(os.path.join(folder, "weights.bin"), "wb") as stream:
    for index in range(count):
        stream.write(np.full((rows, cols), index, dtype=np.float32).tobytes())
        tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[rows, cols])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in [("location", "weights.bin"), ("offset", str(index * tensor_bytes)),
                           ("length", str(tensor_bytes))]:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensors.append(tensor)
node = helper.make_node("Concat", [t.name for t in tensors], ["y"], name="concat", axis=0)
output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [count * rows, cols])
graph = helper.make_graph([node], "memory", [], [output], tensors)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
with open(os.path.join(folder, "model.onnx"), "wb") as stream:
    stream.write(model.SerializeToString())
PY

weights_bytes=$(stat -c %s "$work_dir/weights.bin")
# --bytes 16 reads the start of every tensor, as an importer would.
/usr/bin/time -v "$dump" --bytes 16 "$work_dir/model.onnx" >"$work_dir/dump.txt" 2>"$work_dir/time.txt"
peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work_dir/time.txt")
grep '^initializers:' "$work_dir/dump.txt"
echo "external weights: $((weights_bytes / 1048576)) MiB"
echo "iq-onnx-dump peak RSS: $((peak_kib / 1024)) MiB ($peak_kib KiB)"

# The importer reads every weight and writes it to the store.
/usr/bin/time -v "$iq_opt" "$work_dir/model.onnx" -o "$work_dir/model.mlir" 2>"$work_dir/import-time.txt"
peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work_dir/import-time.txt")
echo "weight store: $(($(stat -c %s "$work_dir/model.iqw") / 1048576)) MiB"
echo "iq-opt import peak RSS: $((peak_kib / 1024)) MiB ($peak_kib KiB)"
