#!/usr/bin/env bash
# Perplexity of a model compiled with each --quant/--method pair of
# iq-compile, on one text, with the same windows for every library.
# Usage: bench/quant_perplexity.sh MODEL.onnx TOKENIZER TEXT [WINDOWS] [OUTDIR]
# WINDOWS defaults to 256 windows of 512 tokens; OUTDIR to a temporary folder.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 MODEL.onnx TOKENIZER TEXT [WINDOWS] [OUTDIR]" >&2
  exit 2
fi
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$1" tokenizer="$2" text="$3" windows="${4:-256}"
out_dir="${5:-$(mktemp -d)}"
bin="$root_dir/build/bin"
mkdir -p "$out_dir"

printf '| --quant | --method | perplexity |\n| --- | --- | --- |\n'
for pair in "none rtn" "none quarot" "w4a16 rtn" "w4a16 quarot" "w4a4kv4 rtn" "w4a4kv4 quarot"; do
  set -- $pair
  library="$out_dir/lib_$1_$2.so"
  if ! "$bin/iq-compile" "$model" --quant="$1" --method="$2" -o "$library" 2>"$out_dir/compile.log"; then
    echo "$0: iq-compile --quant=$1 --method=$2 failed:" >&2
    cat "$out_dir/compile.log" >&2
    exit 1
  fi
  perplexity=$("$bin/iq-run" "$library" --tokenizer "$tokenizer" --perplexity "$text" \
                 --windows "$windows" --threads 1 2>&1 | sed -n 's/^perplexity: //p')
  printf '| %s | %s | %s |\n' "$1" "$2" "$perplexity"
done
