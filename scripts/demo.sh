#!/usr/bin/env bash
# Builds iq (installing what is missing) and runs the main job on the
# bundled stories260K model. It compiles the ONNX export to a float32
# library and to a W4A4KV4 InfoQuant library calibrated on bundled
# WikiText-2 text. Then it generates a story with each library through its
# C interface and prints perplexity and tokens per second side by side.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$root_dir/test/models/stories260K/stories260K-decomposed.onnx"
tokenizer="$root_dir/test/models/stories260K/tok512.bin"
# Perplexity scores the first 20 windows of 512 tokens of this text, about
# 10,200 tokens. Calibration skips the first 12,000 tokens, so the two
# never share a token.
text="$root_dir/data/text/wikitext-2-test-tail.txt"
work_dir="$(mktemp -d /tmp/iq-demo.XXXXXX)"
trap 'rm -rf "$work_dir"' EXIT
bin="$root_dir/build/bin"
mkdir -p "$work_dir/float" "$work_dir/w4a4kv4"

echo "== 1/6 Building iq" >&2
"$root_dir/scripts/build.sh"

echo "== 2/6 Reading $model" >&2
"$bin/iq-onnx-dump" --summary "$model" | grep -v '^  '

echo "== 3/6 Importing and raising to canonical LLaMA ops" >&2
"$bin/iq-opt" "$model" --iq-raise-llama -o "$work_dir/stories260K.mlir"
head -1 "$work_dir/stories260K.mlir" | grep -o 'iq.config = {[^}]*}'
echo "$(grep -c '"iq\.' "$work_dir/stories260K.mlir") canonical iq ops; the first decoder layer:"
sed -n '/iq.embedding/,/arith.addf/p' "$work_dir/stories260K.mlir" | cut -c1-140 | head -16

echo "== 4/6 Compiling the float32 library" >&2
start_ns=$(date +%s%N)
"$bin/iq-compile" "$model" -o "$work_dir/float/libstories260K.so"
float_ms=$((($(date +%s%N) - start_ns) / 1000000))

echo "== 5/6 Compiling the W4A4KV4 InfoQuant library: norm fusion, calibration," \
     "PSOT rotations, folding, 4-bit quantization, int4 kernels" >&2
start_ns=$(date +%s%N)
"$bin/iq-compile" "$model" -o "$work_dir/w4a4kv4/libstories260K.so" \
  --quant=w4a4kv4 --method=infoquant --calibration "$text" --tokenizer "$tokenizer" \
  --calibration-skip 12000
quant_ms=$((($(date +%s%N) - start_ns) / 1000000))

echo "== 6/6 Running both libraries through iq_runtime.h" >&2
for kind in float w4a4kv4; do
  echo "-- $kind: greedy story"
  "$bin/iq-run" "$work_dir/$kind/libstories260K.so" --tokenizer "$tokenizer" \
    --prompt "Once upon a time" --max-tokens 100 --temperature 0
  echo
done
for kind in float w4a4kv4; do
  library="$work_dir/$kind/libstories260K.so"
  perplexity=$("$bin/iq-run" "$library" --tokenizer "$tokenizer" --perplexity "$text" \
    --context 512 --windows 20 2>&1 | sed -n 's/^perplexity: //p')
  bench=$("$bin/iq-run" "$library" --tokenizer "$tokenizer" --bench --prefill 128 --decode 128 \
    --threads 1 2>&1)
  prefill=$(echo "$bench" | sed -n 's/.*prefill[^0-9]*\([0-9.]*\) tokens\/s.*/\1/p' | head -1)
  decode=$(echo "$bench" | sed -n 's/.*decode[^0-9]*\([0-9.]*\) tokens\/s.*/\1/p' | head -1)
  printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$perplexity" "$prefill" "$decode" \
    "$(stat -c %s "${library%.so}.iqw")" >> "$work_dir/summary.tsv"
done
echo "compile time: float32 ${float_ms} ms, W4A4KV4 InfoQuant ${quant_ms} ms"
echo "perplexity: first 20 windows of 512 tokens of $(basename "$text"); throughput: 1 thread, 128-token prompt, 128 decode steps"
printf '%-10s %12s %16s %15s %14s\n' library perplexity "prefill tok/s" "decode tok/s" "weight bytes"
while IFS=$'\t' read -r kind perplexity prefill decode bytes; do
  printf '%-10s %12s %16s %15s %14s\n' "$kind" "$perplexity" "$prefill" "$decode" "$bytes"
done < "$work_dir/summary.tsv"
