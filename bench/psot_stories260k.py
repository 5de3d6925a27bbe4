"""PSOT on real activations: captures the per-layer PSOT inputs of
stories260K on WikiText-2 windows with a numpy forward pass, runs the
library's PSOT driver on each layer and prints the losses with no
rotation, with the random Hadamard start and with the learned matrices.

Usage: psot_stories260k.py [--windows N] [--tokens N] [--epochs N]
                           [--lr LR] [--keep-best] [--driver PATH]

Reads ../shared/data/models/stories260K/stories260K.gguf and
../shared/data/text/wikitext-2-raw-test.txt beside the checkout, and the
tokenizer test/models/stories260K/tok512.bin. The driver is the test tool
build/bin/iq-quant-driver. Not part of CI.

The forward pass follows llama.cpp's LLaMA graph for this GGUF (RoPE on
adjacent pairs, theta 10000, RMSNorm eps 1e-5). PSOT sees the norm-fused
tensors: X and P are the RMS-normalized residuals with gamma = 1, V is
the v_proj output and M the o_proj input (unchanged by norm fusion).
Windows are random slices (seed 0) of the tokenized text without BOS.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
DIM, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 64, 8, 4, 8, 5


def load_tokenizer(path):
    """Reads a llama2.c tokenizer.bin: max length, then score, length, bytes."""
    vocab, scores = [], []
    with open(path, "rb") as f:
        f.read(4)
        for _ in range(512):
            score, length = struct.unpack("fi", f.read(8))
            vocab.append(f.read(length))
            scores.append(score)
    return vocab, scores


def encode(text, vocab, scores, index):
    """Greedy BPE as llama2.c does it: start from bytes, then merge the pair
    whose merged token has the highest score until none is in the vocabulary."""
    ids = [index.get(bytes([b]), index.get(("<0x%02X>" % b).encode(), 0)) for b in text.encode()]
    while True:
        best_score, best_at, best_id = -1e30, -1, -1
        for i in range(len(ids) - 1):
            merged = index.get(vocab[ids[i]] + vocab[ids[i + 1]])
            if merged is not None and scores[merged] > best_score:
                best_score, best_at, best_id = scores[merged], i, merged
        if best_at < 0:
            return ids
        ids[best_at:best_at + 2] = [best_id]


def rms_normalize(x):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)


def capture(weights, tokens, windows, length, out_dir):
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(tokens) - length, windows)
    inv_freq = 1.0 / (10000 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM))
    angles = np.arange(length)[:, None] * inv_freq[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]

    def rope(x):
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    captured = {(layer, name): [] for layer in range(LAYERS) for name in "XPVM"}
    mask = np.triu(np.ones((length, length), dtype=bool), 1)
    group = HEADS // KV_HEADS
    for start in starts:
        h = weights["token_embd.weight"][tokens[start:start + length]].astype(np.float64)
        for layer in range(LAYERS):
            prefix = f"blk.{layer}."
            x = rms_normalize(h)
            xg = x * weights[prefix + "attn_norm.weight"]
            q = rope((xg @ weights[prefix + "attn_q.weight"].T).reshape(length, HEADS, HEAD_DIM))
            k = rope((xg @ weights[prefix + "attn_k.weight"].T).reshape(length, KV_HEADS, HEAD_DIM))
            v = xg @ weights[prefix + "attn_v.weight"].T
            values = v.reshape(length, KV_HEADS, HEAD_DIM)
            attention = np.empty((length, HEADS, HEAD_DIM))
            for head in range(HEADS):
                scores = q[:, head] @ k[:, head // group].T / np.sqrt(HEAD_DIM)
                scores[mask] = -np.inf
                scores = np.exp(scores - scores.max(1, keepdims=True))
                scores /= scores.sum(1, keepdims=True)
                attention[:, head] = scores @ values[:, head // group]
            m = attention.reshape(length, HEADS * HEAD_DIM)
            h = h + m @ weights[prefix + "attn_output.weight"].T
            p = rms_normalize(h)
            pg = p * weights[prefix + "ffn_norm.weight"]
            gate = pg @ weights[prefix + "ffn_gate.weight"].T
            up = pg @ weights[prefix + "ffn_up.weight"].T
            h = h + (gate / (1 + np.exp(-gate)) * up) @ weights[prefix + "ffn_down.weight"].T
            for name, value in zip("XPVM", (x, p, v, m)):
                captured[(layer, name)].append(value)
    for (layer, name), parts in captured.items():
        np.concatenate(parts).astype(np.float32).tofile(os.path.join(out_dir, f"layer{layer}_{name}.bin"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--keep-best", action="store_true")
    parser.add_argument("--driver", default=os.path.join(ROOT, "build", "bin", "iq-quant-driver"))
    args = parser.parse_args()

    model = os.path.join(SHARED, "models", "stories260K", "stories260K.gguf")
    text_path = os.path.join(SHARED, "text", "wikitext-2-raw-test.txt")
    for path in (model, text_path, args.driver):
        if not os.path.exists(path):
            sys.exit(f"psot_stories260k.py: {path} not found")
    import gguf

    reader = gguf.GGUFReader(model)
    weights = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    vocab, scores = load_tokenizer(os.path.join(ROOT, "test", "models", "stories260K", "tok512.bin"))
    index = {piece: i for i, piece in enumerate(vocab)}
    with open(text_path) as f:
        text = f.read(60000)
    tokens = []
    for paragraph in text.split("\n"):
        if paragraph.strip():
            tokens += encode(" " + paragraph.strip(), vocab, scores, index)
    tokens = np.array(tokens)

    with tempfile.TemporaryDirectory() as work:
        capture(weights, tokens, args.windows, args.tokens, work)
        for layer in range(LAYERS):
            files = [os.path.join(work, f"layer{layer}_{name}.bin") for name in "XPVM"]
            result = subprocess.run(
                [args.driver, "psot", str(layer), str(args.windows), str(args.tokens), str(DIM),
                 str(HEADS), str(KV_HEADS), str(HEAD_DIM), str(args.epochs), str(args.lr),
                 "1" if args.keep_best else "0", *files],
                check=True, capture_output=True, text=True)
            summary = [line for line in result.stdout.splitlines() if not line.startswith("epoch")]
            print(f"layer {layer}: " + " | ".join(summary))


if __name__ == "__main__":
    main()
