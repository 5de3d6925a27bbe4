#!/usr/bin/env python3
"""Compare an iq library of SmolLM2-135M with onnxruntime on a real prompt.

  compare.py MODEL.onnx [LIBRARY.so] --gguf TOKENIZER.gguf [--prompt TEXT]

The prompt is tokenized by `iq-run --tokenize` with the GGUF vocabulary and
cut to its first 16 tokens. A shorter prompt is an error. onnxruntime decodes greedily from it, and the
script prints its text. With a library, it then checks

  prefill   max relative logits error of the 16-token prompt in one call
  decode    the same for 8 one-token steps on the prefill's KV cache, both
            sides fed onnxruntime's argmax
  greedy    --generate tokens decoded greedily by each side on its own,
            which must be identical

The relative error of a step is max|iq - ort| / max|ort| over its logits.
The library and onnxruntime helpers come from
test/Codegen/compare_with_onnxruntime.py.
"""

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "test", "Codegen"))
from compare_with_onnxruntime import IqModel, OrtModel, relative_error  # noqa: E402

PROMPT_TOKENS = 16
DECODE_STEPS = 8
DEFAULT_PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


def tokenize(gguf_path, text):
    """Return the ids that `iq-run --tokenize` prints for text, BOS included."""
    iq_run = os.path.join(ROOT, "build", "bin", "iq-run")
    output = subprocess.run([iq_run, "--tokenizer", gguf_path, "--tokenize", text],
                            check=True, capture_output=True, text=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("ids: "))
    return [int(token) for token in line[len("ids: "):].split()]


def byte_decoder():
    """Map the characters of GPT-2 byte-level BPE pieces back to bytes (GPT-2's bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, characters)}


def read_pieces(gguf_path):
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    return reader.fields["tokenizer.ggml.tokens"].contents()


def decode(pieces, tokens):
    table = byte_decoder()
    data = bytearray()
    for token in tokens:
        piece = pieces[token]
        if piece.startswith("<|") and piece.endswith("|>"):
            data += piece.encode()
        else:
            data += bytes(table[c] for c in piece)
    return data.decode("utf-8", errors="replace")


def ort_greedy(ort_model, prompt, count):
    """Return count greedy tokens after the prompt, the prompt fed in one call."""
    logits, cache = ort_model.run(prompt, 0, ort_model.empty_cache())
    tokens = [int(np.argmax(logits[-1]))]
    while len(tokens) < count:
        logits, cache = ort_model.run([tokens[-1]], len(prompt) + len(tokens) - 1, cache)
        tokens.append(int(np.argmax(logits[-1])))
    return tokens


def iq_greedy(iq_model, prompt, count):
    session = iq_model.session(len(prompt) + count)
    logits = session.forward(prompt, 0, last_only=True)
    tokens = [int(np.argmax(logits[-1]))]
    while len(tokens) < count:
        logits = session.forward([tokens[-1]], len(prompt) + len(tokens) - 1)
        tokens.append(int(np.argmax(logits[-1])))
    session.destroy()
    return tokens


def compare_logits(iq_model, ort_model, prompt):
    """Return the max relative error of the prefill and of each decode step."""
    session = iq_model.session(len(prompt) + DECODE_STEPS)
    ort_logits, cache = ort_model.run(prompt, 0, ort_model.empty_cache())
    iq_logits = session.forward(prompt, 0)
    errors = {"prefill": relative_error(iq_logits, ort_logits)}
    position = len(prompt)
    token = int(np.argmax(ort_logits[-1]))
    for step in range(DECODE_STEPS):
        ort_logits, cache = ort_model.run([token], position, cache)
        iq_logits = session.forward([token], position)
        errors[f"decode {step + 1}"] = relative_error(iq_logits, ort_logits)
        token = int(np.argmax(ort_logits[-1]))
        position += 1
    session.destroy()
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="the ONNX graph written by build_onnx.py")
    parser.add_argument("library", nargs="?", help="the library iq-compile built from the graph")
    parser.add_argument("--weights", help="the library's weight file (default: LIBRARY with .iqw)")
    parser.add_argument("--gguf", required=True, help="the GGUF file, read for its vocabulary")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (default: %(default)r)")
    parser.add_argument("--generate", type=int, default=32, help="greedy tokens to compare (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max relative logits error per step (default: %(default)g)")
    parser.add_argument("--skip-logits", action="store_true",
                        help="compare only the greedy tokens, as for a slow emulated library")
    args = parser.parse_args()

    pieces = read_pieces(args.gguf)
    prompt = tokenize(args.gguf, args.prompt)
    if len(prompt) < PROMPT_TOKENS:
        sys.exit(f"error: the prompt has {len(prompt)} tokens, {PROMPT_TOKENS} needed; give a longer --prompt")
    prompt = prompt[:PROMPT_TOKENS]
    print(f"prompt ids: {' '.join(map(str, prompt))}")
    print(f"prompt text: {decode(pieces, prompt)!r}")

    ort_model = OrtModel(args.model)
    ort_tokens = ort_greedy(ort_model, prompt, args.generate)
    print(f"onnxruntime greedy ids: {' '.join(map(str, ort_tokens))}")
    print(f"onnxruntime greedy text: {decode(pieces, ort_tokens)!r}")
    if not args.library:
        return

    weights = args.weights or os.path.splitext(args.library)[0] + ".iqw"
    iq_model = IqModel(args.library, weights)
    failed = False
    if not args.skip_logits:
        for step, error in compare_logits(iq_model, ort_model, prompt).items():
            status = "OK" if error <= args.tolerance else "FAIL"
            failed |= status == "FAIL"
            print(f"{status} {step}: max relative error {error:.3e}")
    iq_tokens = iq_greedy(iq_model, prompt, args.generate)
    if iq_tokens == ort_tokens:
        print(f"OK {args.generate} greedy tokens equal onnxruntime's")
    else:
        index = next(i for i, (a, b) in enumerate(zip(iq_tokens, ort_tokens)) if a != b)
        print(f"FAIL greedy token {index} differs: iq {iq_tokens[index]}, onnxruntime {ort_tokens[index]}")
        print(f"iq greedy text: {decode(pieces, iq_tokens)!r}")
        failed = True
    iq_model.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
