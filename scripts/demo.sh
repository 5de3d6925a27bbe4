#!/usr/bin/env bash
# Builds iq (installing what is missing) and runs the main job as far as iq
# goes today on the bundled stories260K model: compile the ONNX export to a
# float32 shared library, generate a story through the library's C
# interface, and print perplexity and tokens per second.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$root_dir/test/models/stories260K/stories260K-decomposed.onnx"
tokenizer="$root_dir/test/models/stories260K/tok512.bin"
text="$root_dir/../shared/data/text/wikitext-2-raw-test.txt"
work_dir="$(mktemp -d /tmp/iq-demo.XXXXXX)"
trap 'rm -rf "$work_dir"' EXIT
bin="$root_dir/build/bin"

echo "== 1/5 Building iq" >&2
"$root_dir/scripts/build.sh"

echo "== 2/5 Reading $model" >&2
"$bin/iq-onnx-dump" --summary "$model" | grep -v '^  '

echo "== 3/5 Importing and raising to canonical LLaMA ops" >&2
"$bin/iq-opt" "$model" --iq-raise-llama -o "$work_dir/stories260K.mlir"
head -1 "$work_dir/stories260K.mlir" | grep -o 'iq.config = {[^}]*}'
echo "$(grep -c '"iq\.' "$work_dir/stories260K.mlir") canonical iq ops; the first decoder layer:"
sed -n '/iq.embedding/,/arith.addf/p' "$work_dir/stories260K.mlir" | cut -c1-140 | head -16

echo "== 4/5 Compiling to a float32 library for x86-64 (quantized modes are not built yet)" >&2
start_ns=$(date +%s%N)
"$bin/iq-compile" "$model" -o "$work_dir/libstories260K.so"
end_ns=$(date +%s%N)
echo "compiled in $(((end_ns - start_ns) / 1000000)) ms: $(stat -c %s "$work_dir/libstories260K.so") bytes of code," \
     "$(stat -c %s "$work_dir/libstories260K.iqw") bytes of weights"

echo "== 5/5 Running the library through iq_runtime.h" >&2
"$bin/iq-run" "$work_dir/libstories260K.so" --tokenizer "$tokenizer" \
  --prompt "Once upon a time" --max-tokens 120 --temperature 0
if [[ -f "$text" ]]; then
  "$bin/iq-run" "$work_dir/libstories260K.so" --tokenizer "$tokenizer" \
    --perplexity "$text" --context 512 --windows 10
else
  echo "(skipping perplexity: $text not found)"
fi
"$bin/iq-run" "$work_dir/libstories260K.so" --tokenizer "$tokenizer" --bench --prefill 128 --decode 128
