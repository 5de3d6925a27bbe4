# lit configuration of the iq test suite. Run it through the site config in
# the build folder (scripts/test.sh does): lit build/test
import os
import shutil
import sys

import lit.formats
import lit.util

config.name = "iq"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py", "CMakeLists.txt", "unit"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.iq_build_dir, "test")

# Tools: ours first, then LLVM 19's FileCheck, not and count.
path = os.pathsep.join([config.iq_tools_dir, config.llvm_tools_dir,
                        "/usr/lib/llvm-19/bin", config.environment.get("PATH", os.environ["PATH"])])
config.environment["PATH"] = path

config.substitutions.append(("%iq-opt", os.path.join(config.iq_tools_dir, "iq-opt")))
config.substitutions.append(("%iq-compile", os.path.join(config.iq_tools_dir, "iq-compile")))
config.substitutions.append(("%iq-kernels", os.path.join(config.iq_tools_dir, "iq-kernels")))
config.substitutions.append(("%iq-onnx-dump", os.path.join(config.iq_tools_dir, "iq-onnx-dump")))
config.substitutions.append(("%iq-unit-tests", os.path.join(config.iq_tools_dir, "iq-unit-tests")))
config.substitutions.append(("%iq-quant-tests", os.path.join(config.iq_tools_dir, "iq-quant-tests")))
config.substitutions.append(("%iq-quant-driver", os.path.join(config.iq_tools_dir, "iq-quant-driver")))
config.substitutions.append(("%iq_src", config.iq_source_dir))

# Python with the onnx package, for scripts that generate test models.
venv_python = os.path.join(config.iq_source_dir, ".venv", "bin", "python")
config.substitutions.append(("%python", venv_python if os.path.exists(venv_python) else sys.executable))

# Sanitizer builds: leaks count as errors, and the first error of any kind
# aborts the program. A crash fails even RUN lines that expect an error
# exit, because `not` without --crash treats a signal as a failure.
if config.iq_sanitizers:
    config.available_features.add("sanitizers")
    config.environment["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1:abort_on_error=1"
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:abort_on_error=1"

# AArch64: code cross-built with gcc-aarch64-linux-gnu runs under qemu-aarch64.
qemu = shutil.which("qemu-aarch64")
cross_cc = shutil.which("aarch64-linux-gnu-gcc")
if qemu and cross_cc and os.path.isdir("/usr/aarch64-linux-gnu"):
    config.available_features.add("qemu-aarch64")
    config.substitutions.append(("%cc-aarch64", cross_cc))
    config.substitutions.append(("%qemu-aarch64", qemu + " -L /usr/aarch64-linux-gnu"))

# Linker arguments for a test program that calls iq_quant (iq/quant.h) as
# its reference. The sanitizer build compiled those archives with the
# sanitizers, so the program links their runtimes too.
quant_link = " ".join([os.path.join(config.iq_build_dir, "lib", "libiq_quant.a"),
                       os.path.join(config.iq_build_dir, "lib", "libiq_support.a"),
                       "-llapacke -lopenblas -lm -pthread"])
if config.iq_sanitizers:
    quant_link += " -fsanitize=address,undefined"
config.substitutions.append(("%iq-quant-link", quant_link))

# lit substitutes in list order, so %cc comes after %cc-aarch64.
config.substitutions.append(("%cc", config.iq_c_compiler))

config.environment["IQ_LOG_LEVEL"] = "warning"

# Fixture scripts under models/ need the project's virtual environment
# (.venv, built from requirements.txt) with onnxruntime, onnx and numpy.
import subprocess

venv_python = os.path.join(config.iq_source_dir, ".venv", "bin", "python")
if os.access(venv_python, os.X_OK) and subprocess.run(
        [venv_python, "-c", "import onnxruntime, onnx, numpy"], capture_output=True).returncode == 0:
    config.available_features.add("onnxruntime")
if os.access(venv_python, os.X_OK) and subprocess.run(
        [venv_python, "-c", "import numpy"], capture_output=True).returncode == 0:
    config.available_features.add("numpy")
    if not any(pattern == "%python" for pattern, _ in config.substitutions):
        config.substitutions.append(("%python", venv_python))

# bench/report.py draws with matplotlib, pinned in requirements.txt.
if os.access(venv_python, os.X_OK) and subprocess.run(
        [venv_python, "-c", "import matplotlib, numpy"], capture_output=True).returncode == 0:
    config.available_features.add("matplotlib")

# ONNX backend node tests, where CI keeps them: ../shared beside the checkout.
if os.path.isdir(os.path.join(config.iq_source_dir, "..", "shared", "data", "onnx-node-tests")):
    config.available_features.add("node-tests")

# Debian's libonnx-testdata (ONNX 1.12 backend tests), installed by
# scripts/setup.sh.
if os.path.isdir("/usr/share/libonnx-testdata/data/node"):
    config.available_features.add("debian-onnx-testdata")
