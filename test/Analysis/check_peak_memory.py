#!/usr/bin/env python3
"""Fail unless the calibration log reports a peak memory growth within its budget."""

import re
import sys

text = open(sys.argv[1]).read()
match = re.search(r"peak memory growth ([0-9.]+) MiB \(budget ([0-9]+) MiB\)", text)
if not match:
    sys.exit("FAIL: the log has no peak memory line")
growth, budget = float(match.group(1)), float(match.group(2))
if growth > budget:
    sys.exit(f"FAIL: peak memory growth {growth} MiB exceeds the budget of {budget} MiB")
print(f"OK peak memory growth {growth} MiB within {budget} MiB")
