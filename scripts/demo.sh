#!/usr/bin/env bash
# Builds iq (installing what is missing) and runs the main job on the
# bundled example: the attention block of a LLaMA decoder layer, verified
# and simplified by a pipeline of iq and upstream passes.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
example="$root_dir/docs/examples/decoder-layer.mlir"

echo "== Building iq" >&2
"$root_dir/scripts/build.sh"

iq_opt="$root_dir/build/bin/iq-opt"
echo "== Passes available" >&2
"$iq_opt" --help | sed -n '/^iq passes:/,$p'

echo "== Verifying and simplifying $example" >&2
output="$(mktemp --suffix=.mlir)"
trap 'rm -f "$output"' EXIT
"$iq_opt" "$example" \
  --pass-pipeline='builtin.module(iq-verify,func.func(iq-canonicalize,cse),canonicalize)' \
  -o "$output"
echo "iq ops before: $(grep -c '"iq\.' "$example"), after: $(grep -c '"iq\.' "$output")"
cat "$output"
