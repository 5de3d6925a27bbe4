#!/usr/bin/env bash
# WikiText perplexity of one model under every quantization method of
# iq-compile, measured in one run on the same windows: float, W4A16 (RTN),
# and W4A4KV4 with RTN, QuaRot and InfoQuant, each with K4V4 and K4V16.
# Calibration (InfoQuant's PSOT, and GPTQ when WEIGHTS=gptq) uses windows
# of the same text after the scored part, so the two never overlap.
#
# Usage: bench/accuracy.sh MODEL.onnx TOKENIZER TEXT [OUTDIR]
# Settings come from the environment:
#   CONTEXT (512) and WINDOWS (8): perplexity windows, BOS included
#   CAL_WINDOWS (16) and CAL_LENGTH (512): calibration windows
#   SEEDS ("0"): seeds of the QuaRot and PSOT random starts; with several,
#     QuaRot and InfoQuant are compiled once per seed and averaged
#   WEIGHTS (rtn): weight quantizer of the W4A4KV4 libraries, rtn or gptq
#   PSOT_ARGS (""): extra iq-compile options for InfoQuant, e.g.
#     "--psot-epochs 8 --psot-lr 0.1"
#   KV_MODES ("k4v4 k4v16"): KV cache modes of the W4A4KV4 libraries
#   THREADS (1): iq-run worker threads
#   CAL_BUDGET (2048): calibration memory budget in MiB
#   IQ_BIN (build/bin): folder of iq-compile and iq-run
# Prints a Markdown table of perplexities, the share of the float-QuaRot
# gap that InfoQuant closes, and the time of every step. Each perplexity is
# also appended to OUTDIR/results.txt as soon as it is measured.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 MODEL.onnx TOKENIZER TEXT [OUTDIR]" >&2
  exit 2
fi
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$1" tokenizer="$2" text="$3"
out_dir="${4:-$(mktemp -d)}"
context="${CONTEXT:-512}" windows="${WINDOWS:-8}"
cal_windows="${CAL_WINDOWS:-16}" cal_length="${CAL_LENGTH:-512}"
seeds="${SEEDS:-0}" weights="${WEIGHTS:-rtn}" psot_args="${PSOT_ARGS:-}" threads="${THREADS:-1}"
kv_modes="${KV_MODES:-k4v4 k4v16}"
bin="${IQ_BIN:-$root_dir/build/bin}"
mkdir -p "$out_dir"

# iq-run scores at most WINDOWS * CONTEXT tokens from the start of the text
# (docs/calibration.md), so calibration skips that many.
skip=$((windows * context))
calibration=(--calibration "$text" --tokenizer "$tokenizer" --calibration-windows "$cal_windows"
             --calibration-length "$cal_length" --calibration-skip "$skip"
             --calibration-budget "${CAL_BUDGET:-2048}")
timings="$out_dir/timings.md"
printf '| step | seconds |\n| --- | --- |\n' > "$timings"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# compile NAME OPTIONS...: builds $out_dir/lib_NAME.so, logging to NAME.log.
compile() {
  local name="$1"
  shift
  local start
  start=$(now)
  if ! "$bin/iq-compile" "$model" -o "$out_dir/lib_$name.so" "$@" 2> "$out_dir/$name.log"; then
    echo "$0: iq-compile for $name failed:" >&2
    tail -5 "$out_dir/$name.log" >&2
    exit 1
  fi
  printf '| compile %s | %s |\n' "$name" "$(elapsed "$start" "$(now)")" >> "$timings"
  sed -n 's/^iq-compile: \(.*\) took \(.*\) s$/| '"$name"': \1 | \2 |/p' "$out_dir/$name.log" \
    >> "$timings"
}

# perplexity NAME: prints the perplexity of lib_NAME.so.
perplexity() {
  local name="$1" start value
  start=$(now)
  value=$("$bin/iq-run" "$out_dir/lib_$name.so" --tokenizer "$tokenizer" --perplexity "$text" \
            --context "$context" --windows "$windows" --threads "$threads" 2>&1 |
            sed -n 's/^perplexity: //p')
  if [ -z "$value" ]; then
    echo "$0: iq-run --perplexity failed for $name" >&2
    exit 1
  fi
  printf '| perplexity %s | %s |\n' "$name" "$(elapsed "$start" "$(now)")" >> "$timings"
  echo "$name $value" >> "$out_dir/results.txt"
  echo "$value"
}

declare -A result
compile float
result[float]=$(perplexity float)
compile w4a16 --quant=w4a16
result[w4a16]=$(perplexity w4a16)

for kv in $kv_modes; do
  compile "rtn_$kv" --quant=w4a4kv4 --kv="$kv" --weights="$weights" \
    $([ "$weights" = gptq ] && echo "${calibration[@]}")
  result[rtn_$kv]=$(perplexity "rtn_$kv")
done

for seed in $seeds; do
  for kv in $kv_modes; do
    compile "quarot_${kv}_s$seed" --quant=w4a4kv4 --kv="$kv" --method=quarot --seed "$seed" \
      --weights="$weights" $([ "$weights" = gptq ] && echo "${calibration[@]}")
    result[quarot_${kv}_s$seed]=$(perplexity "quarot_${kv}_s$seed")
  done
  # PSOT runs once per seed; the other KV modes fold the same rotations.
  rotations=""
  for kv in $kv_modes; do
    if [ -z "$rotations" ]; then
      # shellcheck disable=SC2086
      compile "infoquant_${kv}_s$seed" --quant=w4a4kv4 --kv="$kv" --method=infoquant \
        --seed "$seed" --weights="$weights" "${calibration[@]}" $psot_args
      rotations="$out_dir/lib_infoquant_${kv}_s$seed.rotations.iqw"
    else
      # shellcheck disable=SC2086
      compile "infoquant_${kv}_s$seed" --quant=w4a4kv4 --kv="$kv" --method=infoquant \
        --seed "$seed" --weights="$weights" --use-rotations "$rotations" \
        $([ "$weights" = gptq ] && echo "${calibration[@]}") $psot_args
    fi
    result[infoquant_${kv}_s$seed]=$(perplexity "infoquant_${kv}_s$seed")
  done
done

mean() { # mean PREFIX: the mean of result[PREFIX_sSEED] over the seeds
  local values=""
  for seed in $seeds; do values="$values ${result[$1_s$seed]}"; done
  echo "$values" | awk '{ s = 0; for (i = 1; i <= NF; ++i) s += $i; printf "%.4f", s / NF }'
}

echo "Model: $model"
echo "Perplexity: $windows windows of $context tokens; calibration: $cal_windows windows of" \
     "$cal_length tokens after the first $skip tokens; W4A4KV4 weights: $weights;" \
     "seeds: $seeds; PSOT options: ${psot_args:-defaults}"
echo
printf '| scheme | method | KV | perplexity |%s\n' "$(for s in $seeds; do printf ' seed %s |' "$s"; done)"
printf '| --- | --- | --- | --- |%s\n' "$(for s in $seeds; do printf ' --- |'; done)"
printf '| float | | | %s |\n' "${result[float]}"
printf '| W4A16 | rtn | | %s |\n' "${result[w4a16]}"
for kv in $kv_modes; do
  printf '| W4A4KV4 | rtn | %s | %s |\n' "$kv" "${result[rtn_$kv]}"
  for method in quarot infoquant; do
    printf '| W4A4KV4 | %s | %s | %s |' "$method" "$kv" "$(mean "${method}_$kv")"
    for seed in $seeds; do printf ' %s |' "${result[${method}_${kv}_s$seed]}"; done
    printf '\n'
  done
done
echo
for kv in $kv_modes; do
  awk -v f="${result[float]}" -v q="$(mean "quarot_$kv")" -v i="$(mean "infoquant_$kv")" \
      -v kv="$kv" 'BEGIN { printf "%s: InfoQuant closes %.1f %% of the float-QuaRot gap\n",
                           kv, 100 * (q - i) / (q - f) }'
done
echo
cat "$timings"
