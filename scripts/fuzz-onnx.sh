#!/usr/bin/env bash
# Fuzzes the ONNX reader, or the reader and the importer, with libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer. Not part of CI.
#
# Usage: scripts/fuzz-onnx.sh [--target reader|import] [SECONDS] [-- extra libFuzzer flags]
#   --target reader  fuzz the ONNX reader alone (the default)
#   --target import  fuzz the reader, the importer, iq_verify and the
#                    iq-raise-llama pass; MLIR itself is not instrumented
#   SECONDS          how long to fuzz (default 1800)
#
# Needs clang-19 and a configured build folder (BUILD_DIR, default build),
# whose build generates onnx.pb-c.c and, for the import target, the
# embedded IRDL source. Seeds come from SEED_DIR (default
# ../shared/data/onnx-node-tests), test/Frontend/Inputs and
# test/fuzz/regressions; the import target also gets the models under
# test/models. The corpus and any crash files go to FUZZ_DIR (default
# build-fuzz/onnx-reader or build-fuzz/onnx-import).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

target=reader
if [[ "${1:-}" == "--target" ]]; then
  target="${2:-}"
  shift 2 || shift
elif [[ "${1:-}" == --target=* ]]; then
  target="${1#--target=}"
  shift
fi
if [[ "$target" != reader && "$target" != import ]]; then
  echo "fuzz-onnx.sh: error: invalid --target '$target'; use reader or import" >&2
  exit 2
fi

duration="${1:-1800}"
shift || true
[[ "${1:-}" == "--" ]] && shift

build_dir="${BUILD_DIR:-$root/build}"
fuzz_dir="${FUZZ_DIR:-$root/build-fuzz/onnx-$target}"
seed_dir="${SEED_DIR:-$root/../shared/data/onnx-node-tests}"
cc="${CC_FUZZ:-clang-19}"
llvm_lib=/usr/lib/llvm-19/lib

if ! command -v "$cc" >/dev/null; then
  echo "fuzz-onnx.sh: error: $cc not found; install clang-19 (scripts/setup.sh does)" >&2
  exit 1
fi

# The protobuf-c reader and the embedded IRDL source are generated at build
# time. Only those two outputs are built, which leaves the rest of the
# build folder alone.
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >/dev/null
fi
ninja -C "$build_dir" iq_onnx_proto lib/IR/iq_irdl_source.c >/dev/null
generated="$build_dir/python-free-frontend/generated"

mkdir -p "$fuzz_dir/corpus" "$fuzz_dir/artifacts"
binary="$fuzz_dir/onnx_${target}_fuzzer"
echo "fuzz-onnx.sh: building $binary"
cflags=(-std=c17 -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700 -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I "$root/include" -I "$generated" -I "$root/python-free-frontend/reader")
sources=("$root"/python-free-frontend/reader/*.c "$root"/lib/Support/*.c "$generated/onnx.pb-c.c")
libraries=(-lprotobuf-c -lm)

if [[ "$target" == import ]]; then
  cflags+=(-I "$llvm_lib/../include")
  sources+=("$root"/python-free-frontend/import/*.c "$root"/lib/IR/*.c
            "$build_dir/lib/IR/iq_irdl_source.c" "$root"/lib/Transforms/*.c
            "$root"/lib/WeightStore/*.c)
  # The same MLIR C API archives as the iq_mlir target in CMakeLists.txt,
  # read from there so the two lists cannot drift apart. They and libMLIR
  # stay uninstrumented: the fuzzer looks for bugs in iq, not in MLIR.
  capi=()
  for name in $(sed -n '/set(IQ_MLIR_CAPI_LIBRARIES/,/)/p' "$root/CMakeLists.txt" |
                grep -o 'MLIRCAPI[A-Za-z]*'); do
    capi+=("$llvm_lib/lib$name.a")
  done
  libraries=(-Wl,--start-group "${capi[@]}" -Wl,--end-group "$llvm_lib/libMLIR.so"
             "$llvm_lib/libLLVM.so" -lprotobuf-c -lstdc++ -lm "-Wl,-rpath,$llvm_lib")
fi

"$cc" "${cflags[@]}" "$root/test/fuzz/onnx_${target}_fuzzer.c" "${sources[@]}" \
  "${libraries[@]}" -o "$binary"

# Seed the corpus with real models; libFuzzer keeps what it adds there.
seeds=0
add_seed() {
  local name="seed-$(basename "$(dirname "$1")")-$(basename "$1")"
  cp -f "$1" "$fuzz_dir/corpus/$name"
  seeds=$((seeds + 1))
}
for model in "$seed_dir"/*/model.onnx "$root"/test/Frontend/Inputs/*.onnx \
             "$root"/test/fuzz/regressions/*; do
  [[ -f "$model" ]] && add_seed "$model"
done
if [[ "$target" == import ]]; then
  # LLaMA exports, so that the raise pass gets graphs it can recognise.
  for model in "$root"/test/models/stories260K/*.onnx \
               "$root"/test/models/tiny-random-llama-genai/model.onnx; do
    [[ -f "$model" ]] && add_seed "$model"
  done
  # The fuzzer loads models without a base folder, which rejects external
  # data, so the genai model also goes in with its weights stored inline.
  genai="$root/test/models/tiny-random-llama-genai/model.onnx"
  inline_seed="$fuzz_dir/corpus/seed-tiny-random-llama-genai-inline.onnx"
  if [[ -f "$genai" && ! -f "$inline_seed" ]] &&
     "$root/.venv/bin/python" -c 'import onnx' 2>/dev/null; then
    "$root/.venv/bin/python" -c '
import sys, onnx
onnx.save(onnx.load(sys.argv[1], load_external_data=True), sys.argv[2])
' "$genai" "$inline_seed"
  fi
  [[ -f "$inline_seed" ]] && seeds=$((seeds + 1))
fi
echo "fuzz-onnx.sh: $seeds seed models"

# A dictionary of the names the reader and importer compare against, so
# that mutations can swap one op or attribute for another: the op types of
# lib/IR/OnnxOps.c, their domains, and the attributes the importer and the
# raise pass read.
dict="$fuzz_dir/onnx.dict"
{
  sed -n '/static const iq_onnx_op_info_t onnx_ops/,/^};/p' "$root/lib/IR/OnnxOps.c" |
    grep -o '{"[^"]*", "[^"]*"' | cut -d'"' -f4
  printf '%s\n' ai.onnx com.microsoft epsilon interleaved kv_num_heads num_heads \
    output_dtype q_num_heads scale to transA transB value value_float value_floats \
    value_int value_ints
} | sort -u | sed 's/.*/"&"/' > "$dict"

# max_len: room for the largest seed plus growth.
max_len=$(( $(find "$fuzz_dir/corpus" -type f -printf '%s\n' | sort -n | tail -1) * 2 ))
(( max_len < 65536 )) && max_len=65536

# The import target writes weight stores under TMPDIR. Runs that end in a
# crash or an interrupt leave their folder there, so it is emptied here.
if [[ "$target" == import ]]; then
  rm -rf "$fuzz_dir/tmp"
  mkdir -p "$fuzz_dir/tmp"
  export TMPDIR="$fuzz_dir/tmp"
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
exec "$binary" "$fuzz_dir/corpus" -max_total_time="$duration" -max_len="$max_len" \
  -dict="$dict" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$fuzz_dir/artifacts/" "$@"
