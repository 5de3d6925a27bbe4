#!/usr/bin/env python3
"""Check that two iq-run --perplexity outputs agree to a number of significant digits.

Each file is the standard output of one iq-run --perplexity run; the
"perplexity: X" line is compared after rounding both values to --digits
significant digits. Prints one OK line, or a FAIL line and exits with 1.
"""

import argparse
import re
import sys


def read_perplexity(path):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"perplexity: ([0-9.eE+-]+)", line)
            if match:
                return float(match.group(1))
    raise SystemExit(f"FAIL: {path} has no 'perplexity:' line")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("test")
    parser.add_argument("--digits", type=int, required=True,
                        help="significant digits that must be equal")
    args = parser.parse_args()
    reference, test = read_perplexity(args.reference), read_perplexity(args.test)
    rounded = [float(f"{value:.{args.digits}g}") for value in (reference, test)]
    if rounded[0] != rounded[1]:
        print(f"FAIL: perplexity {test} differs from {reference} in the first {args.digits} "
              "significant digits")
        return 1
    print(f"OK perplexity {test} equals {reference} to {args.digits} significant digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
