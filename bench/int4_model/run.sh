#!/usr/bin/env bash
# SmolLM2-135M end to end, in one run. The script measures prefill and
# decode tokens/s and peak RSS of seven engines: iq's float32 library, its
# W4A4KV4 QuaRot library on the int4 kernels and on the float kernels
# (fake quantization), its W4A4KV4 InfoQuant library on the int4 kernels,
# onnxruntime on the float32 ONNX file and on a MatMulNBits copy of it
# (4-bit weights, block 32, int8 compute), and llama.cpp's Q4_0 of the same
# model with llama-bench. Every benchmark runs pinned to the same CPUs with
# the same thread count, and /usr/bin/time gives each process's peak RSS.
# The compiles are not pinned. Their stage times, total time and peak RSS
# go to the second table.
#
# Not part of CI: each W4A4KV4 compile takes minutes (its weight
# quantization, and InfoQuant's calibration, take the longest), and llama.cpp's tools are built once from the
# llama-cpp-python sdist that bench/int4_matmul/run.sh downloads.
#
# Usage: bench/int4_model/run.sh [WORK_DIR]
#   WORK_DIR keeps the libraries, the MatMulNBits and Q4_0 models and the
#   logs between runs (default: a temporary folder, removed at the end). A
#   library is compiled again only when its iq-compile options change.
# Environment:
#   IQ_BENCH_CPUS (0,1) and IQ_BENCH_THREADS (2): taskset CPU list and
#     thread count of every benchmark
#   IQ_BENCH_PREFILL (128) and IQ_BENCH_DECODE (64): prompt tokens and
#     decode steps
#   IQ_BENCH_COMPILE_ARGS (""): extra iq-compile options of the W4A4KV4
#     libraries, e.g. "--lm-head=w8a8" or "--threads=auto"
#   IQ_BENCH_FLOAT_COMPILE_ARGS ("--threads=auto"): extra iq-compile
#     options of the float32 library. --threads=auto runs its large
#     linears on all threads, so it uses the same thread count as the rest
#   IQ_BENCH_CALIBRATION_TEXT: InfoQuant's calibration text (default: the
#     WikiText-2 raw test file in ../shared/data/text beside the checkout)
#   IQ_BENCH_CALIBRATION_WINDOWS (16), IQ_BENCH_CALIBRATION_LENGTH (512)
#     and IQ_BENCH_CALIBRATION_SKIP (4096): InfoQuant's calibration windows,
#     tokens per window, and tokens skipped at the start of the text
#   IQ_BIN (build/bin): folder of iq-compile and iq-run
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/iq"
model="$cache_dir/smollm2/smollm2-135m-decomposed.onnx"
gguf="$cache_dir/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
llama_source="$cache_dir/llama-cpp/llama_cpp_python-0.3.16/vendor/llama.cpp"
llama_build="$cache_dir/llama-cpp/tools-build"
cpus="${IQ_BENCH_CPUS:-0,1}"
threads="${IQ_BENCH_THREADS:-2}"
prefill="${IQ_BENCH_PREFILL:-128}"
decode="${IQ_BENCH_DECODE:-64}"
compile_args="${IQ_BENCH_COMPILE_ARGS:-}"
float_compile_args="${IQ_BENCH_FLOAT_COMPILE_ARGS-"--threads=auto"}"
calibration_text="${IQ_BENCH_CALIBRATION_TEXT:-$root_dir/../shared/data/text/wikitext-2-raw-test.txt}"
calibration_windows="${IQ_BENCH_CALIBRATION_WINDOWS:-16}"
calibration_length="${IQ_BENCH_CALIBRATION_LENGTH:-512}"
calibration_skip="${IQ_BENCH_CALIBRATION_SKIP:-4096}"
bin="${IQ_BIN:-$root_dir/build/bin}"
python="$root_dir/.venv/bin/python"

fail() {
  echo "run.sh: $*" >&2
  exit 1
}

for file in "$model" "$gguf"; do
  [ -f "$file" ] || fail "$file is missing; bench/smollm2/README.md says how to make it"
done
[ -f "$calibration_text" ] ||
  fail "the calibration text $calibration_text is missing; set IQ_BENCH_CALIBRATION_TEXT to" \
    "a plain text file such as the WikiText-2 raw test split"
[ -x "$bin/iq-compile" ] || fail "$bin/iq-compile is missing; build iq with scripts/build.sh"
for setting in "IQ_BENCH_THREADS=$threads" "IQ_BENCH_PREFILL=$prefill" "IQ_BENCH_DECODE=$decode" \
  "IQ_BENCH_CALIBRATION_WINDOWS=$calibration_windows" \
  "IQ_BENCH_CALIBRATION_LENGTH=$calibration_length" "IQ_BENCH_CALIBRATION_SKIP=$calibration_skip"; do
  case "${setting#*=}" in
    '' | *[!0-9]*) fail "invalid $setting; expected a non-negative integer" ;;
  esac
done
[ "$prefill" -gt 0 ] && [ "$threads" -gt 0 ] || fail "IQ_BENCH_PREFILL and IQ_BENCH_THREADS must be positive"

if [ -n "${1:-}" ]; then
  work="$1"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
runs="$work/runs"
rm -rf "$runs"
mkdir -p "$runs"

# The checksum of iq-compile and the x86-64 archives it links into each
# library, so a rebuilt iq recompiles the libraries.
iq_build_id="$(cat "$bin/iq-compile" "$bin"/../lib/x86_64/*.a 2>/dev/null | sha256sum | cut -d' ' -f1)"

# compile NAME OPTIONS...: builds $work/lib-NAME/libsmol.so unless the
# library there was compiled with the same options by the same iq build.
# iq-compile's standard error and the time and peak RSS of the whole
# command go to compile.log.
compile() {
  local name="$1"
  shift
  local dir="$work/lib-$name"
  local options="$*"
  if [ -f "$dir/libsmol.so" ] && [ "$(cat "$dir/options.txt" 2>/dev/null)" = "$options" ] &&
    [ "$(cat "$dir/iq-build.txt" 2>/dev/null)" = "$iq_build_id" ]; then
    echo "== iq-compile $name: kept from an earlier run (same options and iq build: $options)"
  else
    echo "== iq-compile $name: $options"
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! /usr/bin/time -f "total: %e s wall, peak RSS %M KiB" \
      "$bin/iq-compile" "$model" "$@" -o "$dir/libsmol.so" > "$dir/compile.log" 2>&1; then
      tail -20 "$dir/compile.log" >&2
      fail "iq-compile for $name failed; the whole log is $dir/compile.log"
    fi
    printf '%s' "$options" > "$dir/options.txt"
    printf '%s' "$iq_build_id" > "$dir/iq-build.txt"
  fi
  grep -E "^(import|codegen): |took|^total: " "$dir/compile.log" || true
}

read -r -a w4a4kv4_args <<< "$compile_args"
read -r -a float_args <<< "$float_compile_args"
compile float "${float_args[@]}"
compile quarot-int4 --quant=w4a4kv4 --method=quarot "${w4a4kv4_args[@]}"
compile quarot-float-kernels --quant=w4a4kv4 --method=quarot --kernels=float "${w4a4kv4_args[@]}"
compile infoquant-int4 --quant=w4a4kv4 --method=infoquant --calibration "$calibration_text" \
  --tokenizer "$gguf" --calibration-windows "$calibration_windows" \
  --calibration-length "$calibration_length" --calibration-skip "$calibration_skip" \
  "${w4a4kv4_args[@]}"

# onnxruntime's MatMulNBits copy of the ONNX file, made once.
ort_int4="$work/ort-matmulnbits/smollm2-135m-matmulnbits.onnx"
if [ ! -f "$ort_int4" ] || [ ! -f "${ort_int4%.onnx}.json" ]; then
  echo "== onnxruntime MatMulNBitsQuantizer"
  mkdir -p "$work/ort-matmulnbits"
  /usr/bin/time -f "total: %e s wall, peak RSS %M KiB" "$python" \
    "$root_dir/bench/smollm2/ort_bench.py" quantize "$model" "$ort_int4" --block-size 32 \
    --accuracy-level 4 2>&1 | tee "$work/ort-matmulnbits/quantize.log"
fi

# llama.cpp: llama-bench and llama-quantize, built once, and the Q4_0 model.
if [ ! -x "$llama_build/bin/llama-bench" ] || [ ! -x "$llama_build/bin/llama-quantize" ]; then
  [ -d "$llama_source" ] ||
    fail "$llama_source is missing; bench/int4_matmul/run.sh downloads the llama-cpp-python sdist"
  cmake -S "$llama_source" -B "$llama_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$llama_build" --target llama-bench llama-quantize
fi
q4_0="$work/smollm2-135m-q4_0.gguf"
if [ ! -f "$q4_0" ]; then
  echo "== llama-quantize Q4_0"
  if ! /usr/bin/time -f "total: %e s wall, peak RSS %M KiB" "$llama_build/bin/llama-quantize" \
    --allow-requantize "$gguf" "$q4_0.partial" Q4_0 > "$work/llama-quantize.log" 2>&1; then
    tail -20 "$work/llama-quantize.log" >&2
    fail "llama-quantize failed; the whole log is $work/llama-quantize.log"
  fi
  mv "$q4_0.partial" "$q4_0"
  grep -E "token_embd|^total: " "$work/llama-quantize.log" || true
fi

# bench NAME COMMAND...: runs COMMAND pinned, with its output and peak RSS
# in $runs/NAME.txt, and shows the output.
pin=(taskset -c "$cpus")
bench() {
  local name="$1"
  shift
  echo "== $name"
  if ! "${pin[@]}" /usr/bin/time -f "peak RSS %M KiB" "$@" > "$runs/$name.txt" 2>&1; then
    cat "$runs/$name.txt" >&2
    fail "the benchmark $name failed"
  fi
  cat "$runs/$name.txt"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before the runs: $load_before"
for name in float quarot-int4 quarot-float-kernels infoquant-int4; do
  bench "iq-$name" "$bin/iq-run" "$work/lib-$name/libsmol.so" --bench --prefill "$prefill" \
    --decode "$decode" --threads "$threads"
done
bench ort-float "$python" "$root_dir/bench/smollm2/ort_bench.py" bench "$model" \
  --threads "$threads" --prefill "$prefill" --decode "$decode"
bench ort-matmulnbits "$python" "$root_dir/bench/smollm2/ort_bench.py" bench "$ort_int4" \
  --threads "$threads" --prefill "$prefill" --decode "$decode"
# llama-bench times decode from an empty cache unless -d fills it first,
# so the decode test runs at the depth of the prompt, like the others.
# /usr/bin/time reports the larger peak RSS of the two processes.
bench llama-q4_0 bash -c '"$0" -m "$1" -t "$2" -p "$3" -n 0 -r 3 &&
  if [ "$4" -gt 0 ]; then "$0" -m "$1" -t "$2" -p 0 -n "$4" -d "$3" -r 3; fi' \
  "$llama_build/bin/llama-bench" "$q4_0" "$threads" "$prefill" "$decode"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average after the runs: $load_after"

echo
echo "CPUs $cpus; load average $load_before before the runs and $load_after after them."
"$python" "$root_dir/bench/smollm2/report.py" "$work" --threads "$threads" --prefill "$prefill" \
  --decode "$decode" --q4-0 "$q4_0"
