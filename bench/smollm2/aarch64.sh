#!/usr/bin/env bash
# Compiles one W4A4KV4 SmolLM2-135M library for x86-64 and for
# aarch64-linux-gnu. Both decode N greedy tokens from token 1 with
# test/Codegen/Inputs/generate.c, the AArch64 one under qemu-aarch64. The
# script prints the tokens, the time of each step, and PASS when the two
# token lists are equal (FAIL otherwise). Not part of CI: each compile
# takes minutes.
#
# Usage: bench/smollm2/aarch64.sh [WORK_DIR]
#   WORK_DIR keeps the libraries and the token lists (default: a temporary
#   folder, removed at the end). Libraries are compiled again on each run.
# Environment:
#   METHOD        quarot (default), rtn or infoquant
#   ROTATIONS     with METHOD=infoquant: the --rotations file (.iqw) of an
#                 earlier InfoQuant compile of the same model, passed as
#                 --use-rotations so no calibration runs (required)
#   COMPILE_ARGS  extra iq-compile options for both targets
#   N             tokens to generate (default 32)
#   IQ_BIN        folder of iq-compile (default build/bin)
# Exit status: 0 on PASS, 1 on FAIL or error.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/iq"
model="$cache_dir/smollm2/smollm2-135m-decomposed.onnx"
bin="${IQ_BIN:-$root_dir/build/bin}"
method="${METHOD:-quarot}"
count="${N:-32}"
read -r -a extra_args <<< "${COMPILE_ARGS:-}"

fail() {
  echo "aarch64.sh: $*" >&2
  exit 1
}

[ -f "$model" ] || fail "$model is missing; bench/smollm2/README.md says how to build it"
[ -x "$bin/iq-compile" ] || fail "$bin/iq-compile is missing; build iq with scripts/build.sh"
for tool in qemu-aarch64 aarch64-linux-gnu-gcc cc; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/setup.sh installs it)"
done
[ -d /usr/aarch64-linux-gnu ] || fail "/usr/aarch64-linux-gnu is missing; install libc6-dev-arm64-cross"
case "$count" in
  '' | *[!0-9]* | 0) fail "N must be a positive integer, not '$count'" ;;
esac

method_args=(--quant=w4a4kv4 "--method=$method")
case "$method" in
  quarot | rtn) ;;
  infoquant)
    [ -n "${ROTATIONS:-}" ] ||
      fail "METHOD=infoquant needs ROTATIONS=FILE.iqw, the --rotations output of an earlier" \
        "InfoQuant compile of this model"
    [ -f "$ROTATIONS" ] || fail "the rotations file $ROTATIONS does not exist"
    method_args+=(--use-rotations "$ROTATIONS")
    ;;
  *) fail "invalid METHOD '$method'; use quarot, rtn or infoquant" ;;
esac

if [ -n "${1:-}" ]; then
  work="$1"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/x86_64" "$work/aarch64"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# run_step LABEL OUTPUT COMMAND...: runs COMMAND with its standard output in
# the file OUTPUT and prints how long it took. A failed command ends the
# script with the last lines of its standard error.
run_step() {
  local label="$1" output="$2"
  shift 2
  local start
  start=$(now)
  if ! "$@" > "$output" 2> "$work/step.err"; then
    tail -20 "$work/step.err" >&2
    fail "$label failed"
  fi
  echo "$label: $(elapsed "$start" "$(now)") s"
}

echo "model: $model"
echo "iq-compile options: ${method_args[*]} ${extra_args[*]}"
run_step "iq-compile x86_64" /dev/null "$bin/iq-compile" "$model" "${method_args[@]}" "${extra_args[@]}" \
  -o "$work/x86_64/libsmollm2.so"
run_step "iq-compile aarch64" /dev/null "$bin/iq-compile" "$model" "${method_args[@]}" "${extra_args[@]}" \
  --target=aarch64-linux-gnu -o "$work/aarch64/libsmollm2.so"

generate_c="$root_dir/test/Codegen/Inputs/generate.c"
run_step "cc x86_64" /dev/null cc -std=c17 -O2 -I"$root_dir/include" "$generate_c" \
  -o "$work/x86_64/generate" -L"$work/x86_64" -lsmollm2 -Wl,-rpath,'$ORIGIN'
run_step "cc aarch64" /dev/null aarch64-linux-gnu-gcc -std=c17 -O2 -I"$root_dir/include" "$generate_c" \
  -o "$work/aarch64/generate" -L"$work/aarch64" -lsmollm2 -Wl,-rpath,'$ORIGIN'

run_step "generate $count tokens, x86_64" "$work/x86_64.txt" \
  "$work/x86_64/generate" "$work/x86_64/libsmollm2.iqw" "$count"
run_step "generate $count tokens, aarch64 under qemu-aarch64" "$work/aarch64.txt" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$work/aarch64/generate" \
  "$work/aarch64/libsmollm2.iqw" "$count"

echo "x86_64 tokens:  $(tr '\n' ' ' < "$work/x86_64.txt")"
echo "aarch64 tokens: $(tr '\n' ' ' < "$work/aarch64.txt")"
if [ "$(wc -l < "$work/x86_64.txt")" -eq "$count" ] && cmp -s "$work/x86_64.txt" "$work/aarch64.txt"; then
  echo "PASS: the $count greedy tokens are equal"
else
  echo "FAIL: the token lists differ:"
  diff "$work/x86_64.txt" "$work/aarch64.txt" || true
  exit 1
fi
