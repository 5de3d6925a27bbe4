#!/usr/bin/env bash
# Fuzzes the ONNX reader with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer. Not part of CI.
#
# Usage: scripts/fuzz-onnx.sh [SECONDS] [-- extra libFuzzer flags]
#   SECONDS  how long to fuzz (default 1800)
#
# Needs clang-19 and a configured build folder (BUILD_DIR, default build),
# whose build generates onnx.pb-c.c. Seeds come from SEED_DIR (default
# ../shared/data/onnx-node-tests, then test/Frontend/Inputs). The corpus
# and any crash files go to FUZZ_DIR (default build-fuzz/onnx-reader).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${1:-1800}"
shift || true
[[ "${1:-}" == "--" ]] && shift

build_dir="${BUILD_DIR:-$root/build}"
fuzz_dir="${FUZZ_DIR:-$root/build-fuzz/onnx-reader}"
seed_dir="${SEED_DIR:-$root/../shared/data/onnx-node-tests}"
cc="${CC_FUZZ:-clang-19}"

if ! command -v "$cc" >/dev/null; then
  echo "fuzz-onnx.sh: error: $cc not found; install clang-19 (scripts/setup.sh does)" >&2
  exit 1
fi

# The protobuf-c reader is generated at build time.
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >/dev/null
fi
ninja -C "$build_dir" iq_onnx_proto >/dev/null
generated="$build_dir/python-free-frontend/generated"

mkdir -p "$fuzz_dir/corpus" "$fuzz_dir/artifacts"
binary="$fuzz_dir/onnx_reader_fuzzer"
echo "fuzz-onnx.sh: building $binary"
"$cc" -std=c17 -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$root/include" -I "$generated" -I "$root/python-free-frontend/reader" \
  "$root/test/fuzz/onnx_reader_fuzzer.c" \
  "$root"/python-free-frontend/reader/*.c \
  "$root"/lib/Support/*.c \
  "$generated/onnx.pb-c.c" \
  -lprotobuf-c -lm -o "$binary"

# Seed the corpus with real models; libFuzzer keeps what it adds there.
seeds=0
for model in "$seed_dir"/*/model.onnx "$root"/test/Frontend/Inputs/*.onnx; do
  [[ -f "$model" ]] || continue
  name="seed-$(basename "$(dirname "$model")")-$(basename "$model")"
  cp -f "$model" "$fuzz_dir/corpus/$name"
  seeds=$((seeds + 1))
done
echo "fuzz-onnx.sh: $seeds seed models"

# max_len: room for the largest seed (a few KiB) plus growth.
max_len=$(( $(find "$fuzz_dir/corpus" -type f -printf '%s\n' | sort -n | tail -1) * 2 ))
(( max_len < 65536 )) && max_len=65536

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
exec "$binary" "$fuzz_dir/corpus" -max_total_time="$duration" -max_len="$max_len" \
  -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$fuzz_dir/artifacts/" "$@"
