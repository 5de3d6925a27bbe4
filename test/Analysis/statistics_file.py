"""Reader of iq calibration statistics files (.iqs) for the tests, written
from the layout in docs/statistics.md, independently of lib/Analysis."""

import struct

import numpy as np

POINTS = "XPVMZH"
SECTIONS = [
    ("channel_min", np.float32), ("channel_max", np.float32), ("channel_absmax", np.float32),
    ("token_min", np.float32), ("token_max", np.float32), ("token_outlier", np.float32),
    ("window_mean", np.float64), ("window_std", np.float64), ("xtx", np.float64),
    ("samples", np.float32), ("sample_window", np.uint32), ("sample_position", np.uint32),
]


class Statistics:
    def __init__(self, path):
        data = open(path, "rb").read()
        if data[:8] != b"IQSTATS\0":
            raise ValueError(f"{path}: not a statistics file")
        (self.version, header_size, self.layers, self.windows, self.window_length, entry_count,
         self.seed, self.skip_tokens, self.token_count, windows_offset, index_offset, file_size,
         tokens_offset) = struct.unpack_from("<IIIIIIQQQQQQQ", data, 8)
        if self.version != 1 or header_size != 128 or file_size != len(data):
            raise ValueError(f"{path}: unexpected version, header size or file size")
        self.window_starts = np.frombuffer(data, np.uint64, self.windows, windows_offset)
        self.window_tokens = np.frombuffer(data, np.int32, self.token_count,
                                           tokens_offset).reshape(self.windows, self.window_length)
        self.entries = {}
        for i in range(entry_count):
            base = index_offset + 128 * i
            layer, point, channels, rows, tokens = struct.unpack_from("<IIIIQ", data, base)
            offsets = struct.unpack_from("<12Q", data, base + 24)
            counts = [channels] * 3 + [tokens] * 3 + [self.windows] * 2 + [channels * channels,
                                                                          rows * channels, rows, rows]
            entry = {"layer": layer, "point": POINTS[point], "channels": channels, "rows": rows}
            for (name, dtype), offset, count in zip(SECTIONS, offsets, counts):
                entry[name] = np.frombuffer(data, dtype, count, offset)
            entry["xtx"] = entry["xtx"].reshape(channels, channels)
            entry["samples"] = entry["samples"].reshape(rows, channels)
            self.entries[(layer, POINTS[point])] = entry
