#!/usr/bin/env python3
"""Check that two iq-run --perplexity outputs agree within a relative tolerance.

Each file is the standard output of one iq-run --perplexity run, and the
"perplexity: X" lines are compared as |test - reference| / reference.
Prints one OK line, or a FAIL line and exits with 1.
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
    parser.add_argument("--tolerance", type=float, required=True,
                        help="the largest relative difference allowed")
    args = parser.parse_args()
    reference, test = read_perplexity(args.reference), read_perplexity(args.test)
    difference = abs(test - reference) / reference
    if difference > args.tolerance:
        print(f"FAIL: perplexity {test} differs from {reference} by {difference:.2%}, more than "
              f"{args.tolerance:.2%}")
        return 1
    print(f"OK perplexity {test} against {reference}: {difference:.2%} apart "
          f"(tolerance {args.tolerance:.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
