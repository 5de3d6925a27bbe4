#!/bin/sh
# For each model folder given, runs iq-opt on DIR/model.onnx with -o and
# prints "NAME: rejected" when it exits non-zero and leaves neither the
# output nor its weight store behind, or what went wrong otherwise.
# Usage: reject_without_output.sh IQ_OPT DIR...
iq_opt="$1"
shift
for dir in "$@"; do
  name=$(basename "$dir")
  if "$iq_opt" "$dir/model.onnx" -o "$dir/out.mlir" 2>"$dir/stderr.txt"; then
    echo "$name: accepted"
  elif [ -e "$dir/out.mlir" ] || [ -e "$dir/out.iqw" ]; then
    echo "$name: left output behind"
  elif ! grep -q "error:" "$dir/stderr.txt"; then
    echo "$name: failed without an error message"
  else
    echo "$name: rejected"
  fi
done
