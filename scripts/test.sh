#!/usr/bin/env bash
# Installs what is missing, builds iq and runs the whole test suite: first
# the normal build, then the same suite under AddressSanitizer and UBSan.
# Options:
#   --no-sanitize   run only the normal build's suite
#   --no-setup      skip scripts/setup.sh (dependencies already installed)
#   -- ARGS         pass ARGS to lit (for example a test path filter)
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sanitize=1
setup_args=()
lit_args=()

while [ $# -gt 0 ]; do
  case "$1" in
    --no-sanitize) sanitize=0 ;;
    --no-setup) setup_args+=(--no-setup) ;;
    --) shift; lit_args=("$@"); break ;;
    *) echo "test.sh: unknown option '$1'; use --no-sanitize, --no-setup or -- LIT_ARGS" >&2; exit 2 ;;
  esac
  shift
done

lit="$root_dir/.venv/bin/lit"

"$root_dir/scripts/build.sh" "${setup_args[@]}"
echo "test.sh: running the suite on build/" >&2
"$lit" -sv "$root_dir/build/test" "${lit_args[@]}"

if [ "$sanitize" -eq 1 ]; then
  "$root_dir/scripts/build.sh" --no-setup --sanitize
  echo "test.sh: running the suite on build-asan/ (AddressSanitizer, UBSan)" >&2
  "$lit" -sv "$root_dir/build-asan/test" "${lit_args[@]}"
fi
