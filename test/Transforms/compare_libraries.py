#!/usr/bin/env python3
"""Compare the logits of two libraries compiled by iq-compile.

Both are loaded with ctypes through include/iq/iq_runtime.h, each with the
weight file beside it (libx.so -> libx.iqw). The checks are a prefill of a
16-token prompt and 8 greedy decode steps on its KV cache, the decoded
tokens being the reference library's choice. Each step's error is
max|test - reference| / max|reference| over that step's logits.

Without --min-error, the script prints one OK line with the maximum error
and exits with status 1 when it is above --tolerance. With --min-error the
error must also be at least that large, which checks that a transform
changed the model at all (for example that quantization is in effect).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Codegen"))
from compare_with_onnxruntime import IqModel, PROMPT  # noqa: E402

DECODE_STEPS = 8


def weight_path(library):
    return os.path.splitext(library)[0] + ".iqw"


def run_steps(model, decode_tokens=None):
    """Return the logits of the prefill and of each decode step, and the tokens fed."""
    session = model.session(len(PROMPT) + DECODE_STEPS)
    steps = [session.forward(PROMPT, 0)]
    tokens = []
    position = len(PROMPT)
    for i in range(DECODE_STEPS):
        token = int(np.argmax(steps[-1][-1])) if decode_tokens is None else decode_tokens[i]
        tokens.append(token)
        steps.append(session.forward([token], position))
        position += 1
    session.destroy()
    return steps, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="the library whose logits are the reference")
    parser.add_argument("test", help="the library under test")
    parser.add_argument("--tolerance", type=float, required=True,
                        help="the largest relative error allowed")
    parser.add_argument("--min-error", type=float, default=None,
                        help="the smallest relative error required")
    args = parser.parse_args()

    reference = IqModel(args.reference, weight_path(args.reference))
    reference_steps, tokens = run_steps(reference)
    reference.close()
    test = IqModel(args.test, weight_path(args.test))
    quantization = test.config.quantization.decode()
    test_steps, _ = run_steps(test, tokens)
    test.close()

    errors = []
    for expected, actual in zip(reference_steps, test_steps):
        if not np.all(np.isfinite(actual)):
            print("FAIL: the library under test returned non-finite logits")
            return 1
        errors.append(float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected))))
    worst = max(errors)
    if worst > args.tolerance:
        print(f"FAIL: max relative error {worst:.3e} is above the tolerance {args.tolerance:.0e} "
              f"(per step: {', '.join(f'{e:.2e}' for e in errors)})")
        return 1
    if args.min_error is not None and worst < args.min_error:
        print(f"FAIL: max relative error {worst:.3e} is below {args.min_error:.0e}: the libraries "
              "compute the same function")
        return 1
    print(f"OK prefill of {len(PROMPT)} tokens and {DECODE_STEPS} decode steps: "
          f"max relative error {worst:.3e} (tolerance {args.tolerance:.0e}); the library under "
          f"test is {quantization}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
