"""Prints the markdown table of run.sh's results: each kernel's median
time per call, iq's fraction of the machine's limit (read bandwidth for
M = 1, int8 multiply-add peak of the instructions iq used for M > 1) and
iq's speedup over the fastest peer. The fraction compares iq's best call
with the best run of the limit loop, the same statistic on both sides.

Usage: report.py RESULTS.txt (the lines iq_bench, ort_bench.py and
ggml_bench print).
"""
import sys
from collections import defaultdict


def main():
    limits = {}
    times = defaultdict(dict)  # (m, k, n) -> {name: (ms, gbs, gops)}
    with open(sys.argv[1]) as results:
        for line in results:
            fields = line.split()
            if not fields:
                continue
            if fields[0] in ("bandwidth", "peak-avx2", "peak-vnni"):
                # The higher of the two measurements, so fractions are not flattered.
                limits[fields[0]] = max(limits.get(fields[0], 0.0), float(fields[1]))
            elif fields[0] in ("iq", "ort", "ggml") and len(fields) in (8, 9):
                m, k, n = (int(v) for v in fields[2:5])
                name = f"{fields[0]} {fields[1]}"
                values = [float(v) for v in fields[5:]]
                if len(values) == 3:
                    values.append(values[0])  # no best time: use the median
                times[(m, k, n)][name] = tuple(values)
    print(f"Read bandwidth {limits.get('bandwidth', 0):.1f} GB/s; int8 peak "
          f"{limits.get('peak-avx2', 0):.0f} GOPS (vpmaddubsw), "
          f"{limits.get('peak-vnni', 0):.0f} GOPS (vpdpbusd ymm).\n")
    peers = ["ort acc4", "ort acc0", "ggml q4_0"]
    iq_sets = sorted({name for row in times.values() for name in row if name.startswith("iq ")})
    header = ["K x N", "M"] + [f"{s} ms" for s in iq_sets] + [f"{p} ms" for p in peers]
    header += [f"{s} best: % of limit" for s in iq_sets] + [f"{s}: x best peer" for s in iq_sets]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (m, k, n), row in sorted(times.items(), key=lambda item: (item[0][0], item[0][1:])):
        cells = [f"{k} x {n}", str(m)]
        cells += [f"{row[s][0]:.3f}" if s in row else "-" for s in iq_sets + peers]
        best_peer = min((row[p][0] for p in peers if p in row), default=None)
        for s in iq_sets:
            if s not in row:
                cells.append("-")
                continue
            median_ms, gbs, gops, best_ms = row[s]
            gbs *= median_ms / best_ms
            gops *= median_ms / best_ms
            if m == 1:
                limit = limits.get("bandwidth")
                cells.append(f"{100 * gbs / limit:.0f} % of bandwidth" if limit else "-")
            else:
                limit = limits.get("peak-vnni" if "vnni" in s else "peak-avx2")
                cells.append(f"{100 * gops / limit:.0f} % of int8 peak" if limit else "-")
        for s in iq_sets:
            cells.append(f"{best_peer / row[s][0]:.2f}" if s in row and best_peer else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
