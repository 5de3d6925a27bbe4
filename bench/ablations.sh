#!/usr/bin/env bash
# Splits the W4A4KV4 error of QuaRot and InfoQuant into its weight part and
# its activation and KV-cache part, on the windows of bench/accuracy.sh:
# each rotation is compiled with 4-bit weights only (--quant=w4a16) and
# with 4-bit inputs and cache only (--quant=a4kv4). InfoQuant folds the
# PSOT rotations that an accuracy.sh run learned (its
# lib_infoquant_k4v4_sSEED.rotations.iqw), so both runs use the same bases.
#
# Usage: bench/ablations.sh MODEL.onnx TOKENIZER TEXT ROTATIONS.iqw [OUTDIR]
# Settings come from the environment, as in bench/accuracy.sh: CONTEXT
# (512), WINDOWS (8), SEED (0), KV (k4v4), THREADS (1), IQ_BIN (build/bin).
# Prints a Markdown table of perplexities and the time of every step.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 MODEL.onnx TOKENIZER TEXT ROTATIONS.iqw [OUTDIR]" >&2
  exit 2
fi
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$1" tokenizer="$2" text="$3" rotations="$4"
out_dir="${5:-$(mktemp -d)}"
context="${CONTEXT:-512}" windows="${WINDOWS:-8}" seed="${SEED:-0}" kv="${KV:-k4v4}"
threads="${THREADS:-1}" bin="${IQ_BIN:-$root_dir/build/bin}"
if [ ! -f "$rotations" ]; then
  echo "$0: the rotations file $rotations is missing; run bench/accuracy.sh first" >&2
  exit 1
fi
mkdir -p "$out_dir"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# run is called in command substitutions (subshells), so the step times
# go to a file.
timings="$out_dir/timings.md"
: > "$timings"

# run NAME OPTIONS...: compiles lib_NAME.so and prints its perplexity.
run() {
  local name="$1" start value
  shift
  start=$(now)
  if ! "$bin/iq-compile" "$model" -o "$out_dir/lib_$name.so" "$@" 2> "$out_dir/$name.log"; then
    echo "$0: iq-compile for $name failed:" >&2
    tail -5 "$out_dir/$name.log" >&2
    exit 1
  fi
  value=$("$bin/iq-run" "$out_dir/lib_$name.so" --tokenizer "$tokenizer" --perplexity "$text" \
            --context "$context" --windows "$windows" --threads "$threads" 2>&1 |
            sed -n 's/^perplexity: //p')
  if [ -z "$value" ]; then
    echo "$0: iq-run --perplexity failed for $name" >&2
    exit 1
  fi
  printf '| %s | %s |\n' "$name" "$(elapsed "$start" "$(now)")" >> "$timings"
  echo "$value"
}

declare -A result
for quant in w4a16 a4kv4; do
  kv_option=()
  [ "$quant" = a4kv4 ] && kv_option=(--kv="$kv")
  result[quarot_$quant]=$(run "quarot_$quant" --quant="$quant" --method=quarot --seed "$seed" \
                            "${kv_option[@]}")
  result[infoquant_$quant]=$(run "infoquant_$quant" --quant="$quant" --method=infoquant \
                               --seed "$seed" --use-rotations "$rotations" "${kv_option[@]}")
done

echo "Model: $model"
echo "Perplexity: $windows windows of $context tokens; seed $seed; rotations: $rotations"
echo
echo "| quantized | QuaRot | InfoQuant |"
echo "| --- | --- | --- |"
echo "| weights only (w4a16) | ${result[quarot_w4a16]} | ${result[infoquant_w4a16]} |"
echo "| inputs and cache only (a4kv4, $kv) | ${result[quarot_a4kv4]} | ${result[infoquant_a4kv4]} |"
echo
printf '| step (compile and perplexity) | seconds |\n| --- | --- |\n'
cat "$timings"
