#!/usr/bin/env bash
# Installs every dependency of iq on a Debian 12 (bookworm) machine.
#
# Idempotent: packages already present are skipped by apt, and the Python
# virtual environment is only rebuilt when requirements.txt changes.
# Run as root, or as a user with passwordless sudo.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${IQ_VENV:-$root_dir/.venv}"

# LLVM/MLIR 19.1 and their tools (libomp for threaded kernels), protobuf-c
# with Debian's onnx.proto,
# BLAS/LAPACK for the offline linear algebra, cross-compilation and
# emulation for AArch64, cJSON for tokenizer.json files.
apt_packages=(
  build-essential cmake ninja-build pkg-config git
  llvm-19 llvm-19-dev llvm-19-tools libmlir-19-dev mlir-19-tools
  clang-19 lld-19 libclang-rt-19-dev libomp-19-dev
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev libonnx-testdata
  libopenblas-dev liblapacke-dev
  qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  libcjson-dev libzstd-dev zlib1g-dev
  python3 python3-venv
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present" >&2
fi

# The test dependencies come from PyPI, pinned, in a virtual environment of
# Debian's interpreter so that a pyenv python3 on PATH does not matter.
stamp="$venv_dir/.requirements.sha256"
wanted="$(sha256sum "$root_dir/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv_dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: creating Python environment in $venv_dir" >&2
  /usr/bin/python3 -m venv "$venv_dir"
  "$venv_dir/bin/python" -m pip install -q --upgrade pip
  "$venv_dir/bin/python" -m pip install -q -r "$root_dir/requirements.txt"
  echo "$wanted" > "$stamp"
else
  echo "setup: Python environment up to date" >&2
fi
