#!/usr/bin/env python3
"""Write a rotations file for iq-rotate method=infoquant.

The file is a weight store (format version 1 of docs/weight-store.md) with
float32 tensors layers.{i}.q1.{j} and layers.{i}.q4.{j} of [hidden/blocks,
hidden/blocks] and layers.{i}.q2.{g} of [head_dim, head_dim]: random
orthogonal matrices from numpy's QR of Gaussian matrices, seeded. With
--not-orthogonal, layers.0.q1.0 is scaled by 2; with --drop NAME, that
tensor is left out. Both make files that iq-rotate must reject.
"""

import argparse
import struct

import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
DTYPE_F32 = 1


def fnv1a(data):
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value


def write_store(path, tensors):
    data = bytearray()
    table = bytearray()
    for name, array in tensors:
        payload = np.ascontiguousarray(array, dtype="<f4").tobytes()
        offset = len(data)
        data += payload
        data += b"\0" * (-len(data) % 64)
        encoded = name.encode()
        table += struct.pack("<I", len(encoded)) + encoded
        table += struct.pack("<III", DTYPE_F32, 0, array.ndim)
        table += b"".join(struct.pack("<q", d) for d in array.shape)
        table += struct.pack("<QQQ", offset, len(payload), fnv1a(payload))
    header = b"IQWSTORE" + struct.pack("<IIQQQQQQ", 1, len(tensors), 64, len(data),
                                       64 + len(data), len(table), fnv1a(table), 0)
    with open(path, "wb") as out:
        out.write(header + bytes(data) + bytes(table))


def random_orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--blocks", type=int, required=True)
    parser.add_argument("--kv-heads", type=int, required=True)
    parser.add_argument("--head-dim", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--not-orthogonal", action="store_true")
    parser.add_argument("--drop", default=None)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    d = args.hidden // args.blocks
    tensors = []
    for i in range(args.layers):
        for kind in ("q1", "q4"):
            for j in range(args.blocks):
                tensors.append((f"layers.{i}.{kind}.{j}", random_orthogonal(rng, d)))
        for g in range(args.kv_heads):
            tensors.append((f"layers.{i}.q2.{g}", random_orthogonal(rng, args.head_dim)))
    if args.not_orthogonal:
        tensors[0] = (tensors[0][0], tensors[0][1] * 2)
    tensors = [(name, array) for name, array in tensors if name != args.drop]
    write_store(args.output, tensors)


if __name__ == "__main__":
    main()
