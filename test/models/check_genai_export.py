#!/usr/bin/env python3
"""Load the onnxruntime-genai tiny-random Llama export and run it with onnxruntime.

Prints the graph inputs and outputs and the op types it uses, then runs a
4-token prompt and 2 greedy decode steps with the KV cache. The weights are
random, so the tokens mean nothing. The run shows that the model loads, that
the cache grows by one position per step, and that the logits are finite.
"""

import argparse
import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL_DIR = os.path.join(HERE, "tiny-random-llama-genai")
PROMPT = [0, 1000, 2000, 3000]  # Token 0 is BOS in genai_config.json.
DECODE_STEPS = 2


def describe(value):
    dims = [d if isinstance(d, int) else str(d) for d in value.shape]
    return f"{value.name} {value.type} {dims}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=DEFAULT_MODEL_DIR,
                        help="folder with model.onnx and genai_config.json (default: %(default)s)")
    args = parser.parse_args()

    with open(os.path.join(args.model_dir, "genai_config.json")) as f:
        decoder = json.load(f)["model"]["decoder"]
    model_path = os.path.join(args.model_dir, decoder["filename"])
    names = decoder["inputs"]
    n_layers = decoder["num_hidden_layers"]
    kv_heads = decoder["num_key_value_heads"]
    head_size = decoder["head_size"]

    model = onnx.load(model_path, load_external_data=False)
    op_types = collections.Counter(f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in model.graph.node)
    print("opsets: " + ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import))
    print("op types: " + ", ".join(f"{op} x{count}" for op, count in sorted(op_types.items())))

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    for value in session.get_inputs():
        print("input: " + describe(value))
    for value in session.get_outputs():
        print("output: " + describe(value))

    cache_dtype = np.float16 if "float16" in session.get_inputs()[-1].type else np.float32
    cache = {}
    for i in range(n_layers):
        for pattern in (names["past_key_names"], names["past_value_names"]):
            cache[pattern % i] = np.zeros((1, kv_heads, 0, head_size), cache_dtype)
    output_names = [o.name for o in session.get_outputs()]

    tokens = list(PROMPT)
    chunk = list(PROMPT)
    generated = []
    for step in range(1 + DECODE_STEPS):
        start = len(tokens) - len(chunk)
        feed = {
            names["input_ids"]: np.array([chunk], dtype=np.int64),
            names["attention_mask"]: np.ones((1, len(tokens)), dtype=np.int64),
            names["position_ids"]: np.arange(start, len(tokens), dtype=np.int64)[None, :],
        }
        feed.update(cache)
        outputs = dict(zip(output_names, session.run(None, feed)))
        logits = outputs["logits"]
        if logits.shape[:2] != (1, len(chunk)) or not np.all(np.isfinite(logits)):
            sys.exit(f"error: step {step}: logits have shape {logits.shape} or non-finite values")
        for i in range(n_layers):
            for past, present in ((names["past_key_names"], "present.%d.key"),
                                  (names["past_value_names"], "present.%d.value")):
                cache[past % i] = outputs[present % i]
                if cache[past % i].shape[2] != len(tokens):
                    sys.exit(f"error: step {step}: {present % i} has {cache[past % i].shape[2]} positions, "
                             f"expected {len(tokens)}")
        chunk = [int(np.argmax(logits[0, -1]))]
        generated.append(chunk[0])
        tokens += chunk
    print(f"OK genai export: {len(PROMPT)}-token prompt and {DECODE_STEPS} decode steps ran, "
          f"greedy tokens {generated}")


if __name__ == "__main__":
    main()
