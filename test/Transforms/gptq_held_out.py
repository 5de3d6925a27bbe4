#!/usr/bin/env python3
"""Check that GPTQ weights lower the output error of real layers on held-out text.

Inputs: the float store of a rotated graph (the weights before
iq-quantize), the stores that iq-quantize wrote with weights=rtn and with
weights=gptq, and a statistics file recorded on held-out text with every
row sampled. For each projection of each layer the script takes the
held-out rows X of the projection's input point (q, k, v: X; o: M; gate,
up: P; down: Z), dequantizes both weights as s * (code - z), and measures
||X W^T - X W_hat^T|| / ||X W^T||. It prints one line per layer with the
summed squared errors of its seven projections and exits with status 1
when GPTQ is not below --ratio times RTN for every layer.
"""

import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Analysis"))
from reference_forward import read_store  # noqa: E402
from statistics_file import Statistics  # noqa: E402

PROJECTION_POINTS = {"q_proj": "X", "k_proj": "X", "v_proj": "X", "o_proj": "M",
                     "gate_proj": "P", "up_proj": "P", "down_proj": "Z"}
NAME = re.compile(r"layers\.(\d+)\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.")


def dequantize(store, base):
    codes = store[base + ".codes"].astype(np.float64)
    return store[base + ".scales"].astype(np.float64) * (codes - store[base + ".zeros"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_store", help="weights of the rotated float graph (.iqw)")
    parser.add_argument("rtn_store", help="store written by iq-quantize weights=rtn")
    parser.add_argument("gptq_store", help="store written by iq-quantize weights=gptq")
    parser.add_argument("held_out", help="statistics of held-out text, every row sampled")
    parser.add_argument("--ratio", type=float, default=1.0,
                        help="GPTQ's summed squared error must be below this times RTN's")
    args = parser.parse_args()

    weights = read_store(args.float_store)
    rtn = read_store(args.rtn_store)
    gptq = read_store(args.gptq_store)
    held_out = Statistics(args.held_out)

    errors = {}
    for name in sorted(gptq):
        if not name.endswith(".codes"):
            continue
        base = name[:-len(".codes")]
        match = NAME.search(base)
        if not match:
            sys.exit(f"FAIL: cannot tell the layer and projection of {base}")
        layer, projection = int(match.group(1)), match.group(2)
        entry = held_out.entries[(layer, PROJECTION_POINTS[projection])]
        if entry["rows"] != held_out.token_count:
            sys.exit(f"FAIL: {args.held_out} must keep every row (sample-rows >= windows * length)")
        x = entry["samples"].reshape(entry["rows"], entry["channels"]).astype(np.float64)
        w = weights[base].astype(np.float64)
        reference = x @ w.T
        scale = np.linalg.norm(reference)
        pair = []
        for store in (rtn, gptq):
            w_hat = dequantize(store, base)
            # A transposed or mismatched weight would show up here as a
            # quantization error far above 4-bit levels.
            weight_error = np.linalg.norm(w_hat - w) / np.linalg.norm(w)
            if weight_error > 0.5:
                sys.exit(f"FAIL: {base}: dequantized weight differs from the float one by "
                         f"{weight_error:.3f} (relative); the stores do not belong together")
            pair.append((np.linalg.norm(x @ w_hat.T - reference) / scale) ** 2)
        totals = errors.setdefault(layer, [0.0, 0.0])
        totals[0] += pair[0]
        totals[1] += pair[1]

    if not errors:
        sys.exit("FAIL: the GPTQ store has no quantized projections")
    failed = False
    for layer in sorted(errors):
        rtn_error, gptq_error = errors[layer]
        verdict = "OK" if gptq_error < args.ratio * rtn_error else "FAIL"
        failed = failed or verdict == "FAIL"
        print(f"{verdict} layer {layer}: held-out squared relative error rtn {rtn_error:.4g}, "
              f"gptq {gptq_error:.4g}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
