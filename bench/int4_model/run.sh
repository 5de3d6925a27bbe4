#!/usr/bin/env bash
# SmolLM2-135M decode and prefill: iq's W4A4KV4 QuaRot library on the int4
# kernels, the same model on the float path (--kernels=float), iq's
# float32 library, and llama.cpp's Q4_0 of the same model with
# llama-bench, all pinned to the same CPUs with the same thread count.
# Peak RSS comes from /usr/bin/time. Not part of CI: compiling the
# quantized model takes minutes, and llama.cpp's tools are built once from
# the llama-cpp-python sdist that bench/int4_matmul/run.sh downloads.
#
# Usage: bench/int4_model/run.sh [WORK_DIR]
#   WORK_DIR keeps the compiled libraries between runs (default: a
#   temporary folder).
# Environment: IQ_BENCH_CPUS (default 0,1), IQ_BENCH_THREADS (default 2),
#   IQ_BENCH_PREFILL (default 128), IQ_BENCH_DECODE (default 64).
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
bin="$root_dir/build/bin"

for file in "$model" "$gguf"; do
  if [ ! -f "$file" ]; then
    echo "run.sh: $file is missing; bench/smollm2/README.md says how to make it" >&2
    exit 1
  fi
done

if [ -n "${1:-}" ]; then
  work="$1"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi

compile() { # NAME OPTIONS...
  local name="$1"
  shift
  if [ ! -f "$work/$name/libsmol.so" ]; then
    mkdir -p "$work/$name"
    /usr/bin/time -f "$name: compiled in %e s, peak RSS %M KiB" \
      "$bin/iq-compile" "$model" "$@" -o "$work/$name/libsmol.so" 2>&1 | grep -v "^import\|^codegen"
  fi
}
compile int4 --quant=w4a4kv4 --method=quarot
compile fake --quant=w4a4kv4 --method=quarot --kernels=float
compile float

pin=(taskset -c "$cpus")
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in int4 fake float; do
  echo "== iq $name"
  "${pin[@]}" /usr/bin/time -f "peak RSS %M KiB" "$bin/iq-run" "$work/$name/libsmol.so" --bench \
    --prefill "$prefill" --decode "$decode" --threads "$threads" 2>&1
done

# llama.cpp: llama-bench and llama-quantize, built once.
if [ ! -x "$llama_build/bin/llama-bench" ] || [ ! -x "$llama_build/bin/llama-quantize" ]; then
  cmake -S "$llama_source" -B "$llama_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$llama_build" --target llama-bench llama-quantize
fi
q4_0="$work/smollm2-135m-q4_0.gguf"
if [ ! -f "$q4_0" ]; then
  "$llama_build/bin/llama-quantize" --allow-requantize "$gguf" "$q4_0" Q4_0 >/dev/null 2>&1
fi
echo "== llama.cpp Q4_0"
"${pin[@]}" /usr/bin/time -f "peak RSS %M KiB" "$llama_build/bin/llama-bench" -m "$q4_0" \
  -t "$threads" -p "$prefill" -n "$decode" -r 3 2>&1
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
