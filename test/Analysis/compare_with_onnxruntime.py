#!/usr/bin/env python3
"""Check a calibration statistics file against onnxruntime and numpy.

onnxruntime runs the ONNX model the statistics were recorded from, with the
intermediate tensors of every layer exposed as extra graph outputs: the
v_proj input (X) and output (V), the o_proj input (M), the gate_proj input
(P), the down_proj input (Z) and the lm_head input (H). Each window of the
file runs as one prefill from position 0 on an empty KV cache, as the
calibration driver runs it. Checks, with max|iq - ort| / max|ort| against
--tolerance:

  rows      every sampled row against the same (window, position) of onnxruntime
  channels  per-channel min, max and absmax over all windows
  windows   per-window mean and population standard deviation
  outliers  per-token max_c |x - mean| / std, and per-token min and max
  xtx       x^T x against numpy's float64 sum over the sampled rows (needs
            every token sampled); the sums differ only in order, so the limit
            is 1e-9
"""

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from statistics_file import Statistics  # noqa: E402


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def intermediate_names(model):
    """Map (layer, point) to the ONNX tensor name, from the MatMul of each projection."""
    names = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        weight = node.input[1]
        parts = weight.split(".")
        if weight.startswith("lm_head."):
            names[("lm_head", "H")] = node.input[0]
        if len(parts) < 4 or parts[1] != "layers":
            continue
        layer = int(parts[2])
        if ".v_proj." in weight:
            names[(layer, "X")] = node.input[0]
            names[(layer, "V")] = node.output[0]
        elif ".o_proj." in weight:
            names[(layer, "M")] = node.input[0]
        elif ".gate_proj." in weight:
            names[(layer, "P")] = node.input[0]
        elif ".down_proj." in weight:
            names[(layer, "Z")] = node.input[0]
    return names


def relative_error(actual, expected):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected))
    return float(np.max(np.abs(actual - expected)) / (scale if scale > 0 else 1.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("statistics")
    parser.add_argument("--tolerance", type=float, required=True)
    args = parser.parse_args()

    stats = Statistics(args.statistics)
    model = onnx.load(args.model)
    names = intermediate_names(model)
    if ("lm_head", "H") in names:
        names[(stats.layers, "H")] = names.pop(("lm_head", "H"))
    for key in stats.entries:
        if key not in names:
            fail(f"no onnx tensor for layer {key[0]} point {key[1]}")
    existing = {output.name for output in model.graph.output}
    for key, name in sorted(names.items(), key=str):
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]

    # Run every window and keep the intermediate tensors as [windows, T, C].
    tensors = {key: [] for key in stats.entries}
    length = stats.window_length
    for window in range(stats.windows):
        feed = {"input_ids": stats.window_tokens[window][None, :].astype(np.int64),
                "position_ids": np.arange(length, dtype=np.int64)[None, :]}
        if "attention_mask" in inputs:
            feed["attention_mask"] = np.ones((1, length), np.int64)
        for name, value in inputs.items():
            if name.startswith("past_key_values."):
                feed[name] = np.zeros((1, value.shape[1], 0, value.shape[3]), np.float32)
        outputs = dict(zip(output_names, session.run(None, feed)))
        for key in stats.entries:
            value = outputs[names[key]]
            tensors[key].append(value.reshape(length, -1))
    tensors = {key: np.stack(value) for key, value in tensors.items()}

    errors = {"rows": 0.0, "channels": 0.0, "windows": 0.0, "outliers": 0.0, "xtx": 0.0}
    for key, entry in sorted(stats.entries.items()):
        ort_values = tensors[key].astype(np.float64)
        if ort_values.shape[2] != entry["channels"]:
            fail(f"layer {key[0]} {key[1]}: {entry['channels']} channels, onnxruntime "
                 f"{ort_values.shape[2]}")
        reference_rows = ort_values[entry["sample_window"], entry["sample_position"]]
        errors["rows"] = max(errors["rows"], relative_error(entry["samples"], reference_rows))

        flat = ort_values.reshape(-1, entry["channels"])
        for name, reference in (("channel_min", flat.min(0)), ("channel_max", flat.max(0)),
                                ("channel_absmax", np.abs(flat).max(0))):
            errors["channels"] = max(errors["channels"], relative_error(entry[name], reference))

        mean = ort_values.mean(axis=(1, 2))
        std = ort_values.std(axis=(1, 2))
        errors["windows"] = max(errors["windows"], relative_error(entry["window_mean"], mean),
                                relative_error(entry["window_std"], std))

        outlier = (np.abs(ort_values - mean[:, None, None]).max(2) / std[:, None]).reshape(-1)
        errors["outliers"] = max(errors["outliers"], relative_error(entry["token_outlier"], outlier),
                                 relative_error(entry["token_min"], flat.min(1)),
                                 relative_error(entry["token_max"], flat.max(1)))

        if entry["rows"] != stats.token_count:
            fail("x^T x needs every token sampled: pass sample-rows >= windows * length")
        rows = entry["samples"].astype(np.float64)
        errors["xtx"] = max(errors["xtx"], relative_error(entry["xtx"], rows.T @ rows))

    limits = {"rows": args.tolerance, "channels": args.tolerance, "windows": args.tolerance,
              "outliers": args.tolerance, "xtx": 1e-9}
    print(f"statistics: {len(stats.entries)} entries, {stats.windows} windows of {length} tokens")
    for check, error in errors.items():
        if not error <= limits[check]:
            fail(f"{check}: max relative error {error:.3e} exceeds {limits[check]:.0e}")
        print(f"OK {check}: max relative error {error:.3e} (limit {limits[check]:.0e})")


if __name__ == "__main__":
    main()
