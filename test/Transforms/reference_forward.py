#!/usr/bin/env python3
"""Run a canonical iq graph in numpy and compare its logits with a library.

The graph is the MLIR text that iq-opt prints for a raised LLaMA model,
possibly after iq-fuse-norms, iq-rotate and iq-quantize. This script
interprets its ops one by one in float32 numpy, independently of the
generated kernels. Weights come from the module's weight store. Hadamard
transforms are built from the +-1 tables in data/hadamard/, and the fake
quantizers follow the formulas of docs/passes.md. The library compiled
from the same MLIR runs the same 16-token prefill and 4 greedy decode
steps on its KV cache through iq_runtime.h.

The script prints the largest relative logit error, max|lib - ref| /
max|ref|. The tolerance must absorb rare flips of a quantization code
where a value lies on a rounding boundary and the two sides sum in a
different order. Exit status 1 when the error is above --tolerance.
"""

import argparse
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Codegen"))
from compare_with_onnxruntime import IqModel, PROMPT  # noqa: E402

SOURCE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
HADAMARD_ORDERS = [172, 156, 140, 108, 60, 52, 36, 28, 44, 40, 20, 12]
DTYPES = {1: np.float32, 2: np.float16, 4: np.float64, 21: "u4"}


def read_store(path):
    """Return {name: array} for the tensors of a weight store (format 1)."""
    with open(path, "rb") as file:
        blob = file.read()
    magic, version, count, data_offset, _, table_offset, table_size, _, _ = struct.unpack_from(
        "<8sIIQQQQQQ", blob, 0)
    if magic != b"IQWSTORE" or version != 1:
        raise ValueError(f"{path}: not a weight store of format 1")
    tensors = {}
    cursor = table_offset
    for _ in range(count):
        (length,) = struct.unpack_from("<I", blob, cursor)
        name = blob[cursor + 4:cursor + 4 + length].decode()
        cursor += 4 + length
        dtype, _, rank = struct.unpack_from("<III", blob, cursor)
        cursor += 12
        dims = struct.unpack_from(f"<{rank}q", blob, cursor)
        cursor += 8 * rank
        offset, size, _ = struct.unpack_from("<QQQ", blob, cursor)
        cursor += 24
        payload = blob[data_offset + offset:data_offset + offset + size]
        kind = DTYPES.get(dtype)
        if kind is None:
            raise ValueError(f"{path}: {name}: dtype {dtype} is not supported here")
        if kind == "u4":
            packed = np.frombuffer(payload, np.uint8)
            codes = np.empty(packed.size * 2, np.uint8)
            codes[0::2] = packed & 15
            codes[1::2] = packed >> 4
            tensors[name] = codes[:int(np.prod(dims))].reshape(dims)
        else:
            tensors[name] = np.frombuffer(payload, kind).reshape(dims).astype(np.float32)
    assert cursor == table_offset + table_size
    return tensors


def hadamard_matrix(n):
    """The normalized matrix Hn with iq_hadamard_transform(x) == Hn @ x."""
    k = next((order for order in HADAMARD_ORDERS
              if n % order == 0 and (n // order) & (n // order - 1) == 0), 1)
    m = n // k
    sylvester = np.ones((1, 1))
    while sylvester.shape[0] < m:
        sylvester = np.block([[sylvester, sylvester], [sylvester, -sylvester]])
    if k == 1:
        table = np.ones((1, 1))
    else:
        with open(os.path.join(SOURCE_ROOT, "data", "hadamard", f"had{k}.txt")) as file:
            rows = [line.strip() for line in file if line.strip()]
        table = np.array([[1.0 if c == "+" else -1.0 for c in row] for row in rows])
    return np.kron(table, sylvester) / np.sqrt(n)


def fake_quant(x, bits, group, clip, include_zero):
    """Quantize and dequantize the last axis of x in groups, in float32."""
    shape = x.shape
    g = x.reshape(-1, group).astype(np.float32)
    maxq = np.float32(2 ** bits - 1)
    clip = np.float32(clip)
    high, low = g.max(axis=1), g.min(axis=1)
    if include_zero:
        high, low = np.maximum(high, np.float32(0)), np.minimum(low, np.float32(0))
    high, low = high * clip, low * clip
    empty = (high == 0) & (low == 0)
    high = np.where(empty, np.float32(1), high)
    low = np.where(empty, np.float32(-1), low)
    eps = np.float32(1e-8 if include_zero else 1e-6)
    s = np.maximum((high - low) / maxq, eps).astype(np.float32)
    z = np.rint(-low / s).astype(np.float32)
    code = np.clip(np.rint(g / s[:, None]) + z[:, None], 0, maxq).astype(np.float32)
    return (s[:, None] * (code - z[:, None])).astype(np.float32).reshape(shape)


def parse_attributes(text):
    attributes = {}
    for key, value in re.findall(r'(\w+) = ("[^"]*"|[^,}]+)', text):
        value = value.strip()
        if value.startswith('"'):
            attributes[key] = value[1:-1]
        elif value in ("true", "false"):
            attributes[key] = value == "true"
        else:
            attributes[key] = float(value.split(":")[0])
    return attributes


class Interpreter:
    def __init__(self, mlir_path):
        with open(mlir_path) as file:
            self.lines = file.read().splitlines()
        store = re.search(r'iq.weight_store = "([^"]*)"', self.lines[0]).group(1)
        self.store = read_store(os.path.join(os.path.dirname(mlir_path), store))
        self.theta = float(re.search(r"rope_theta = ([0-9.e+-]+)", self.lines[0]).group(1))

    def run(self, ids):
        tokens = len(ids)
        positions = np.arange(tokens)
        env = {"%arg0": np.array([ids]), "%arg1": positions[None, :]}
        op_pattern = re.compile(r'^\s*(%[\w]+)(?::\d+)? = "iq\.(\w+)"\(([^)]*)\)\s*(\{[^}]*\})?')
        for line in self.lines:
            add = re.match(r"^\s*(%\w+) = arith\.addf (%\w+), (%\w+)", line)
            if add:
                env[add.group(1)] = (env[add.group(2)] + env[add.group(3)]).astype(np.float32)
                continue
            match = op_pattern.match(line)
            if match:
                result, op, operands, attributes = match.groups()
                args = [env.get(name.strip()) for name in operands.split(",") if name.strip()]
                outputs = self.execute(op, args, parse_attributes(attributes or ""), line)
                if isinstance(outputs, tuple):
                    for index, value in enumerate(outputs):
                        env[f"{result}#{index}"] = value
                else:
                    env[result] = outputs
            returned = re.match(r"^\s*return (%[\w#]+)", line)
            if returned:
                return env[returned.group(1)][0]
        raise ValueError("no return found")

    def execute(self, op, args, attributes, line):
        if op == "weight":
            tensor = self.store[attributes["name"]]
            return tensor.T if attributes.get("transposed") else tensor
        if op == "embedding":
            table = args[0]
            return table[args[1]]
        if op == "rms_norm":
            x = args[0]
            scale = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(attributes["epsilon"]))
            y = (x * scale.astype(np.float32)).astype(np.float32)
            return y * args[1] if len(args) > 1 else y
        if op in ("linear", "lm_head"):
            return (args[0] @ args[1].T).astype(np.float32)
        if op == "rope":
            x = args[0].copy()
            head_dim = int(attributes["head_dim"])
            half = head_dim // 2
            frequencies = (1.0 / self.theta ** (np.arange(half) * 2 / head_dim)).astype(np.float32)
            angles = args[1][0].astype(np.float32)[:, None] * frequencies[None, :]
            cos, sin = np.cos(angles), np.sin(angles)
            for base in range(0, x.shape[-1], head_dim):
                a = x[0, :, base:base + half].copy()
                b = x[0, :, base + half:base + head_dim].copy()
                x[0, :, base:base + half] = a * cos - b * sin
                x[0, :, base + half:base + head_dim] = b * cos + a * sin
            return x
        if op == "attention":
            q, k, v = args[0][0], args[1][0], args[2][0]
            heads, kv_heads = int(attributes["num_heads"]), int(attributes["num_kv_heads"])
            head_dim = q.shape[-1] // heads
            out = np.zeros_like(q)
            tokens = q.shape[0]
            mask = np.triu(np.full((tokens, tokens), -np.inf, np.float32), 1)
            for h in range(heads):
                g = h // (heads // kv_heads)
                qh = q[:, h * head_dim:(h + 1) * head_dim]
                kh = k[:, g * head_dim:(g + 1) * head_dim]
                vh = v[:, g * head_dim:(g + 1) * head_dim]
                scores = qh @ kh.T * np.float32(attributes["scale"]) + mask
                weights = np.exp(scores - scores.max(axis=1, keepdims=True))
                weights /= weights.sum(axis=1, keepdims=True)
                out[:, h * head_dim:(h + 1) * head_dim] = weights @ vh
            return (out[None], None, None)
        if op == "silu_mul":
            gate = args[0]
            return (gate / (1 + np.exp(-gate)) * args[1]).astype(np.float32)
        if op == "hadamard":
            size = int(attributes["size"])
            matrix = hadamard_matrix(size)
            if attributes.get("transposed"):
                matrix = matrix.T
            x = args[0]
            blocks = x.reshape(-1, size).astype(np.float64) @ matrix.T
            return blocks.astype(np.float32).reshape(x.shape)
        if op == "quantize":
            group = int(attributes["group_size"]) or args[0].shape[-1]
            include_zero = attributes["granularity"] == "per_token" or attributes.get("zero_in_range", False)
            value = fake_quant(args[0], int(attributes["bits"]), group, attributes["clip_ratio"], include_zero)
            return (value, None, None)
        if op == "dequantize":
            if args[1] is None:
                return args[0]
            codes, scales, zeros = args
            return (scales * (codes.astype(np.float32) - zeros)).astype(np.float32)
        raise ValueError(f"op iq.{op} is not interpreted: {line.strip()}")


DECODE_STEPS = 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mlir", help="the canonical graph, as iq-opt printed it")
    parser.add_argument("library", help="the library iq-compile built from it")
    parser.add_argument("--tolerance", type=float, required=True)
    args = parser.parse_args()

    # The library runs a prefill and greedy decode steps on its KV cache.
    model = IqModel(args.library, os.path.splitext(args.library)[0] + ".iqw")
    session = model.session(len(PROMPT) + DECODE_STEPS)
    rows = [session.forward(PROMPT, 0)]
    tokens = list(PROMPT)
    for _ in range(DECODE_STEPS):
        tokens.append(int(np.argmax(rows[-1][-1])))
        rows.append(session.forward([tokens[-1]], len(tokens) - 1))
    session.destroy()
    model.close()
    actual = np.concatenate(rows)

    # Every quantizer works on one token's values and attention is causal,
    # so one pass over all tokens gives each decode step's logits too.
    expected = Interpreter(args.mlir).run(tokens)
    error = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    checked = f"prefill of {len(PROMPT)} tokens and {DECODE_STEPS} decode steps"
    if not error <= args.tolerance:
        print(f"FAIL {checked}: max relative error {error:.3e} against the numpy interpreter is "
              f"above {args.tolerance:.0e}")
        return 1
    print(f"OK {checked}: max relative error {error:.3e} against the numpy interpreter "
          f"(tolerance {args.tolerance:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
