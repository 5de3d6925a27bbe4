#!/usr/bin/env bash
# Builds iq (installing what is missing) and runs the main job as far as iq
# goes today on the bundled stories260K model: import the ONNX export,
# raise it to canonical LLaMA ops, and show the configuration read from the
# graph and the first decoder layer.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$root_dir/test/models/stories260K/stories260K-decomposed.onnx"
work_dir="$(mktemp -d /tmp/iq-demo.XXXXXX)"
trap 'rm -rf "$work_dir"' EXIT

echo "== 1/4 Building iq" >&2
"$root_dir/scripts/build.sh"
iq_opt="$root_dir/build/bin/iq-opt"

echo "== 2/4 Reading $model" >&2
"$root_dir/build/bin/iq-onnx-dump" --summary "$model" | grep -v '^  '

echo "== 3/4 Importing and raising to canonical iq ops" >&2
start_ns=$(date +%s%N)
"$iq_opt" "$model" --log-level=info \
  --pass-pipeline='builtin.module(iq-raise-llama,iq-verify,func.func(iq-canonicalize,cse))' \
  -o "$work_dir/stories260K.mlir"
end_ns=$(date +%s%N)
printf 'import and raise took %d ms; %d ONNX nodes became %d iq ops; weights in %s (%d bytes)\n' \
  "$(((end_ns - start_ns) / 1000000))" \
  "$("$root_dir/build/bin/iq-onnx-dump" --summary "$model" | awk '/^nodes:/ {print $2}')" \
  "$(grep -c '"iq\.' "$work_dir/stories260K.mlir")" \
  "stories260K.iqw" "$(stat -c %s "$work_dir/stories260K.iqw")"

echo "== 4/4 The model configuration and the first decoder layer" >&2
head -1 "$work_dir/stories260K.mlir" | grep -o 'iq.config = {[^}]*}'
sed -n '/iq.embedding/,/arith.addf/p' "$work_dir/stories260K.mlir" | cut -c1-160
echo "(code generation, quantization and the runtime are not built yet)"
