#!/usr/bin/env python3
"""Draw the InfoQuant pictures of a calibrated model as PNG files.

Inputs are the files iq writes, read here from their documented layouts
(docs/calibration.md for statistics, docs/weight-store.md for weight
stores), so the script needs neither the iq libraries nor the model:

  --statistics FILE.iqs   calibration statistics of the norm-fused float
                          graph (the activations PSOT learned from)
  --rotations FILE.iqw    the PSOT bases: layers.{i}.q1.{j}, layers.{i}.q4.{j}
                          ([D/b, D/b]) and layers.{i}.q2.{g} ([hd, hd])
  --perplexity FILE.csv   optional: lines "label,perplexity" for the bar chart

It writes into --output DIR:

  layer{N}-histograms.png   value histograms of X, P, V and M of layer N
                            before and after the layer's rotations
  layer{N}-absmax.png       per-channel absolute maximum of the same tensors
  psot-cost.png             InfoQuant's peak cost of every layer and stage,
                            unrotated against rotated
  perplexity.png            the perplexity table as a bar chart

The cost is the one PSOT minimises, with every token weight 1:
sqrt(sum over tokens of |S * A|^2), A = |rotated rows with the per-block
(X, P) or per-head (V, M) mean removed|, S = softmax(A / T) over the token's
D features (X, P) or over each head (V, M).
"""

import argparse
import csv
import os
import struct
import sys

import numpy as np

POINTS = "XPVMZH"
SECTION_TYPES = [np.float32] * 6 + [np.float64] * 3 + [np.float32, np.uint32, np.uint32]
DTYPES = {1: np.float32, 4: np.float64}


class StatisticsFile:
    """Memory-mapped calibration statistics (.iqs, version 1)."""

    def __init__(self, path):
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        header = bytes(self.data[:128])
        if header[:8] != b"IQSTATS\0":
            raise SystemExit(f"{path}: not an iq statistics file (magic {header[:8]!r})")
        (version, _, self.layers, self.windows, self.window_length, count, _, _, self.tokens,
         _, index, size, _) = struct.unpack_from("<IIIIIIQQQQQQQ", header, 8)
        if version != 1 or size != len(self.data):
            raise SystemExit(f"{path}: unsupported version {version} or truncated file "
                         f"(header size {size}, file size {len(self.data)}); recalibrate")
        self.entries = {}
        for i in range(count):
            record = bytes(self.data[index + 128 * i:index + 128 * (i + 1)])
            layer, point, channels, rows, tokens = struct.unpack_from("<IIIIQ", record)
            offsets = struct.unpack_from("<12Q", record, 24)
            self.entries[(layer, POINTS[point])] = (channels, rows, tokens, offsets)

    def samples(self, layer, point):
        if (layer, point) not in self.entries:
            raise SystemExit(f"the statistics file has no point {point} for layer {layer}")
        channels, rows, _, offsets = self.entries[(layer, point)]
        start = offsets[9]
        return np.frombuffer(self.data, np.float32, rows * channels, start).reshape(rows, channels)

    def channel_absmax(self, layer, point):
        channels, _, _, offsets = self.entries[(layer, point)]
        return np.frombuffer(self.data, np.float32, channels, offsets[2])


def read_weight_store(path):
    """Returns {name: array} for the float32 and float64 tensors of a store."""
    data = open(path, "rb").read()
    if data[:8] != b"IQWSTORE":
        raise SystemExit(f"{path}: not an iq weight store (magic {data[:8]!r})")
    count, data_offset, _, table_offset, table_size = struct.unpack_from("<IQQQQ", data, 12)
    tensors = {}
    at = table_offset
    for _ in range(count):
        (length,) = struct.unpack_from("<I", data, at)
        name = data[at + 4:at + 4 + length].decode()
        at += 4 + length
        dtype, _, rank = struct.unpack_from("<III", data, at)
        at += 12
        dims = struct.unpack_from(f"<{rank}q", data, at)
        at += 8 * rank
        offset, size, _ = struct.unpack_from("<QQQ", data, at)
        at += 24
        if dtype in DTYPES:
            count_elements = int(np.prod(dims)) if rank else 1
            tensors[name] = np.frombuffer(data, DTYPES[dtype], count_elements,
                                          data_offset + offset).reshape(dims).astype(np.float64)
    if at != table_offset + table_size:
        raise SystemExit(f"{path}: invalid weight store: the tensor table does not end at the end of the file")
    return tensors


def layer_bases(rotations, layer):
    """Returns (q1 blocks, q4 blocks, q2 per KV head) of one layer."""
    def collect(kind):
        blocks = []
        while f"layers.{layer}.{kind}.{len(blocks)}" in rotations:
            blocks.append(rotations[f"layers.{layer}.{kind}.{len(blocks)}"])
        if not blocks:
            raise SystemExit(f"the rotations file has no layers.{layer}.{kind}.0")
        return blocks
    return collect("q1"), collect("q4"), collect("q2")


def rotate_blocks(rows, blocks):
    width = blocks[0].shape[0]
    parts = [rows[:, j * width:(j + 1) * width] @ q for j, q in enumerate(blocks)]
    return np.concatenate(parts, axis=1)


def rotate_heads(rows, q2, heads):
    """Rotates head h of `rows` by q2[h // (heads // len(q2))]."""
    head_dim = q2[0].shape[0]
    group = heads // len(q2)
    parts = [rows[:, h * head_dim:(h + 1) * head_dim] @ q2[h // group] for h in range(heads)]
    return np.concatenate(parts, axis=1)


def peak_cost(rows, groups, temperature):
    """Computes PSOT's cost with unit token weights. `groups` gives the
    feature groups of the mean removal and of the softmax, (blocks, 1) for
    X and P and (heads, heads) for V and M."""
    mean_groups, softmax_groups = groups
    tokens, width = rows.shape
    centred = rows.reshape(tokens, mean_groups, width // mean_groups)
    centred = (centred - centred.mean(axis=2, keepdims=True)).reshape(tokens, width)
    magnitude = np.abs(centred).reshape(tokens, softmax_groups, width // softmax_groups)
    scaled = magnitude / temperature
    weights = np.exp(scaled - scaled.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    return float(np.sqrt(np.sum((weights * magnitude) ** 2)))


def rotated_points(statistics, rotations, layer):
    """Returns {point: (rows before, rows after, cost groups)}."""
    q1, q4, q2 = layer_bases(rotations, layer)
    x = statistics.samples(layer, "X").astype(np.float64)
    p = statistics.samples(layer, "P").astype(np.float64)
    v = statistics.samples(layer, "V").astype(np.float64)
    m = statistics.samples(layer, "M").astype(np.float64)
    head_dim = q2[0].shape[0]
    kv_heads, heads = v.shape[1] // head_dim, m.shape[1] // head_dim
    return {
        "X": (x, rotate_blocks(x, q1), (len(q1), 1)),
        "P": (p, rotate_blocks(p, q4), (len(q4), 1)),
        "V": (v, rotate_heads(v, q2, kv_heads), (kv_heads, kv_heads)),
        "M": (m, rotate_heads(m, q2, heads), (heads, heads)),
    }


NAMES = {"X": "attention input (X)", "P": "MLP input (P)", "V": "v_proj output (V)",
         "M": "o_proj input (M)"}


def draw_histograms(plt, points, layer, path):
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    for axis, (point, (before, after, _)) in zip(axes.flat, points.items()):
        limit = max(np.abs(before).max(), np.abs(after).max())
        bins = np.linspace(-limit, limit, 121)
        axis.hist(before.ravel(), bins=bins, alpha=0.6, label="before PSOT", color="tab:red")
        axis.hist(after.ravel(), bins=bins, alpha=0.6, label="after PSOT", color="tab:blue")
        axis.set_yscale("log")
        axis.set_title(f"layer {layer}: {NAMES[point]}")
        axis.set_xlabel("activation value")
        axis.set_ylabel("count")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_absmax(plt, points, layer, path):
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    for axis, (point, (before, after, _)) in zip(axes.flat, points.items()):
        channels = np.arange(before.shape[1])
        axis.plot(channels, np.abs(before).max(axis=0), color="tab:red", lw=0.8,
                  label="before PSOT")
        axis.plot(channels, np.abs(after).max(axis=0), color="tab:blue", lw=0.8,
                  label="after PSOT")
        axis.set_title(f"layer {layer}: {NAMES[point]}, per-channel absmax")
        axis.set_xlabel("channel")
        axis.set_ylabel("max |x| over sampled tokens")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_costs(plt, statistics, rotations, temperature, path):
    layers = list(range(statistics.layers))
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for index, point in enumerate("XPVM"):
        before, after = [], []
        for layer in layers:
            rows_before, rows_after, groups = rotated_points(statistics, rotations, layer)[point]
            before.append(peak_cost(rows_before, groups, temperature))
            after.append(peak_cost(rows_after, groups, temperature))
        axis = axes[index]
        width = 0.4
        axis.bar(np.array(layers) - width / 2, before, width, label="unrotated", color="tab:red")
        axis.bar(np.array(layers) + width / 2, after, width, label="PSOT", color="tab:blue")
        axis.set_title(NAMES[point])
        axis.set_xlabel("layer")
        axis.set_ylabel("peak cost")
        axis.legend()
        print(f"{point}: " + " ".join(f"{b:.3g}->{a:.3g}" for b, a in zip(before, after)))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_perplexity(plt, table_path, path):
    labels, values = [], []
    with open(table_path, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) != 2:
                raise SystemExit(f"{table_path}: expected 'label,perplexity' lines, got {row}")
            labels.append(row[0])
            values.append(float(row[1]))
    figure, axis = plt.subplots(figsize=(1.2 * len(labels) + 2, 4))
    bars = axis.bar(labels, values, color="tab:blue")
    axis.bar_label(bars, fmt="%.2f")
    axis.set_ylabel("perplexity (lower is better)")
    axis.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statistics", required=True, help="calibration statistics (.iqs)")
    parser.add_argument("--rotations", required=True, help="PSOT bases (.iqw)")
    parser.add_argument("--perplexity", help="CSV of label,perplexity lines")
    parser.add_argument("--layer", type=int, default=0, help="layer for the histograms")
    parser.add_argument("--temperature", type=float, default=2.0, help="PSOT temperature T")
    parser.add_argument("--output", required=True, help="folder for the PNG files")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    statistics = StatisticsFile(args.statistics)
    rotations = read_weight_store(args.rotations)
    if not 0 <= args.layer < statistics.layers:
        raise SystemExit(f"--layer {args.layer} is out of range: the model has "
                         f"{statistics.layers} layers")
    os.makedirs(args.output, exist_ok=True)

    points = rotated_points(statistics, rotations, args.layer)
    written = [os.path.join(args.output, f"layer{args.layer}-histograms.png"),
               os.path.join(args.output, f"layer{args.layer}-absmax.png"),
               os.path.join(args.output, "psot-cost.png")]
    draw_histograms(plt, points, args.layer, written[0])
    draw_absmax(plt, points, args.layer, written[1])
    draw_costs(plt, statistics, rotations, args.temperature, written[2])
    if args.perplexity:
        written.append(os.path.join(args.output, "perplexity.png"))
        draw_perplexity(plt, args.perplexity, written[-1])
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
