#!/usr/bin/env bash
# Builds iq into build/ (tools in build/bin/), after installing what is
# missing. Options:
#   --sanitize   build into build-asan/ with AddressSanitizer and UBSan
#   --no-setup   skip scripts/setup.sh (dependencies already installed)
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="$root_dir/build"
cmake_args=()
run_setup=1

for arg in "$@"; do
  case "$arg" in
    --sanitize) build_dir="$root_dir/build-asan"; cmake_args+=(-DIQ_ENABLE_SANITIZERS=ON) ;;
    --no-setup) run_setup=0 ;;
    *) echo "build.sh: unknown option '$arg'; use --sanitize or --no-setup" >&2; exit 2 ;;
  esac
done

if [ "$run_setup" -eq 1 ]; then
  "$root_dir/scripts/setup.sh"
fi

generator=()
if command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi
# A build folder configured with another generator must be reconfigured
# from scratch.
if [ -f "$build_dir/CMakeCache.txt" ] && [ "${#generator[@]}" -gt 0 ] &&
   ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt"; then
  rm -rf "$build_dir"
fi

cmake -S "$root_dir" -B "$build_dir" "${generator[@]}" "${cmake_args[@]}" \
  -DIQ_LIT_COMMAND="$root_dir/.venv/bin/lit" >/dev/null
cmake --build "$build_dir" --parallel "$(nproc)"
echo "build.sh: tools are in $build_dir/bin" >&2
