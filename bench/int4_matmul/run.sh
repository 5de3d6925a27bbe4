#!/usr/bin/env bash
# W4A4 matmul benchmark: iq's kernels against onnxruntime's MatMulNBits
# (accuracy_level 4 and 0) and ggml's Q4_0 matmul from the llama.cpp
# source in the llama-cpp-python sdist, plus the machine's read bandwidth
# and int8 peak, all pinned to the same CPUs. Prints the results and the
# table of report.py. Not part of CI: it downloads the sdist once into
# ~/.cache/iq/llama-cpp and runs for several minutes.
#
# Usage: bench/int4_matmul/run.sh [--quick]
#   --quick   one shape (4096 x 4096) instead of four
# Environment: IQ_BENCH_CPUS (default 0,1), IQ_BENCH_THREADS (default 2).
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bench_dir="$root_dir/bench/int4_matmul"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/iq/llama-cpp"
llama_version=0.3.16
cpus="${IQ_BENCH_CPUS:-0,1}"
threads="${IQ_BENCH_THREADS:-2}"
python="$root_dir/.venv/bin/python"

shapes=(4096 4096 4096 11008 11008 4096 14336 4096)
if [ "${1:-}" = "--quick" ]; then
  shapes=(4096 4096)
elif [ -n "${1:-}" ]; then
  echo "run.sh: unknown option '$1'; use --quick or nothing" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# iq: the kernel library and the timing program.
"$root_dir/build/bin/iq-kernels" -o "$work/libiqk.so"
cc -std=gnu17 -O2 -I"$root_dir/include" "$bench_dir/iq_bench.c" -o "$work/iq_bench" \
  -L"$work" -liqk -Wl,-rpath,"$work" -pthread

# ggml from the pinned llama-cpp-python sdist, built once.
source_dir="$cache_dir/llama_cpp_python-$llama_version/vendor/llama.cpp"
ggml_lib="$cache_dir/ggml-build-$llama_version/bin"
if [ ! -f "$ggml_lib/libggml-cpu.so" ]; then
  mkdir -p "$cache_dir"
  if [ ! -d "$source_dir" ]; then
    "$python" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$llama_version" \
      -d "$cache_dir"
    tar -xzf "$cache_dir/llama_cpp_python-$llama_version.tar.gz" -C "$cache_dir"
  fi
  cmake -S "$source_dir" -B "$cache_dir/ggml-build-$llama_version" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$cache_dir/ggml-build-$llama_version" --target ggml ggml-base ggml-cpu
fi
cc -std=gnu17 -O2 -I"$source_dir/ggml/include" "$bench_dir/ggml_bench.c" -o "$work/ggml_bench" \
  -L"$ggml_lib" -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$ggml_lib"

results="$work/results.txt"
pin=(taskset -c "$cpus")
# The load average shows how quiet the machine was. Each shape runs every
# tool back to back, so a change of load between shapes hits all of them,
# and the limits are measured before, between and after the shapes.
echo "start: $(uptime)"
{
  "${pin[@]}" "$work/iq_bench" "$threads"
  for m in 1 512; do
    for ((i = 0; i < ${#shapes[@]}; i += 2)); do
      shape=("$m" "${shapes[i]}" "${shapes[i + 1]}")
      "${pin[@]}" "$work/iq_bench" "$threads" "${shape[@]}"
      IQ_KERNEL=avx2 "${pin[@]}" "$work/iq_bench" "$threads" "${shape[@]}"
      "${pin[@]}" "$python" "$bench_dir/ort_bench.py" "$threads" 4 "${shape[@]}"
      "${pin[@]}" "$python" "$bench_dir/ort_bench.py" "$threads" 0 "${shape[@]}"
      "${pin[@]}" "$work/ggml_bench" "$threads" "${shape[@]}"
    done
    "${pin[@]}" "$work/iq_bench" "$threads"
  done
} | tee "$results"
echo "end: $(uptime)"
echo
"$python" "$bench_dir/report.py" "$results"
