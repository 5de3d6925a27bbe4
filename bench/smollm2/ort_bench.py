"""Prefill and decode speed of onnxruntime on SmolLM2-135M, float32 or with
4-bit MatMulNBits weights.

Usage:
  ort_bench.py quantize MODEL.onnx OUT.onnx [--block-size 32] [--accuracy-level 4]
  ort_bench.py bench MODEL.onnx [--threads N] [--prefill N] [--decode N] [--warmup N]

`quantize` runs onnxruntime.quantization's MatMulNBitsQuantizer (round to
nearest, asymmetric, one scale and zero point per block of K) on every
MatMul whose weight is an initializer. It writes OUT.onnx with its weights
in OUT.onnx.data, and OUT.json, which states which ops kept float32
weights (the embedding Gather, and lm_head when its weight is not an
initializer).

`bench` feeds the prompt ids 1..N in one call (prefill), then runs --decode
single-token steps, each feeding back the present.* outputs of the last
call as past_key_values.* and the argmax of its logits as the next token.
One untimed run of the same shapes (the prompt and --warmup decode steps)
comes first. It prints the onnxruntime version, then the same two lines
as `iq-run --bench`.
"""
import argparse
import json
import logging
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

# Exceptions of InferenceSession for a missing, unreadable or invalid model.
LOAD_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
               ort_errors.InvalidProtobuf, ort_errors.NoSuchFile)


def describe_weights(model):
    """Return which float32 ops the quantizer left in MODEL, as a dict."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    constant_matmuls = sum(1 for node in model.graph.node
                           if node.op_type == "MatMul" and node.input[1] in initializers)

    logits = model.graph.output[0].name
    head = producers.get(logits)
    lm_head_precision = "f32"
    if head is None:
        lm_head = f"not found: no node writes the output {logits}"
        lm_head_precision = "unknown"
    elif head.op_type == "MatMulNBits":
        lm_head = "4-bit MatMulNBits"
        lm_head_precision = "4-bit"
    elif head.op_type == "MatMul" and head.input[1] in initializers:
        lm_head = "float32 MatMul on an initializer"
    elif head.op_type == "MatMul":
        source = producers.get(head.input[1])
        origin = f"the output of {source.op_type}({', '.join(source.input)})" if source else \
            head.input[1]
        lm_head = (f"float32 MatMul: its weight is {origin}, not an initializer, "
                   "so MatMulNBitsQuantizer skips it")
    else:
        lm_head = f"{head.op_type} (not a MatMul)"
        lm_head_precision = "unknown"

    gathers = [node for node in model.graph.node
               if node.op_type == "Gather" and node.input[0] in initializers]
    embedding = ("float32 Gather" if gathers else
                 "no Gather on an initializer (quantized or missing)")
    return {"op_counts": counts, "matmul_nbits": counts.get("MatMulNBits", 0),
            "float_matmuls_on_initializers": constant_matmuls,
            "lm_head": lm_head, "lm_head_precision": lm_head_precision, "embedding": embedding}


def quantize(args):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs two INFO lines for every node of the graph.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(args.model)  # external data included
    quantizer = MatMulNBitsQuantizer(model, block_size=args.block_size, is_symmetric=False,
                                     accuracy_level=args.accuracy_level)
    quantizer.process()
    quantized = quantizer.model.model

    # Write into a folder beside OUT, then rename the files into place, the
    # .onnx last, so an interrupted run leaves no OUT.onnx behind.
    out = os.path.abspath(args.out)
    name = os.path.basename(out)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as staging:
        onnx.save_model(quantized, os.path.join(staging, name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + ".data")
        summary = describe_weights(quantized)
        summary.update(block_size=args.block_size, accuracy_level=args.accuracy_level,
                       symmetric=False, onnxruntime=ort.__version__)
        with open(os.path.join(staging, name + ".json"), "w") as file:
            json.dump(summary, file, indent=1)
        os.replace(os.path.join(staging, name + ".data"), out + ".data")
        os.replace(os.path.join(staging, name + ".json"), os.path.splitext(out)[0] + ".json")
        os.replace(os.path.join(staging, name), out)
    print(f"ort_bench: wrote {out}: {summary['matmul_nbits']} MatMulNBits, "
          f"{summary['float_matmuls_on_initializers']} float32 MatMuls on initializers; "
          f"lm_head: {summary['lm_head']}; embedding: {summary['embedding']}")


def run(session, prompt, decode):
    """Time the prompt and DECODE greedy steps, returning (prefill_s, decode_s)."""
    inputs = [value.name for value in session.get_inputs()]
    outputs = [value.name for value in session.get_outputs()]
    cache = next(value for value in session.get_inputs()
                 if value.name.startswith("past_key_values."))
    kv_heads, head_dim = cache.shape[1], cache.shape[3]
    past = {name: np.zeros((1, kv_heads, 0, head_dim), np.float32)
            for name in inputs if name.startswith("past_key_values.")}

    def step(ids, position):
        feeds = {"input_ids": np.array([ids], np.int64),
                 "position_ids": np.arange(position, position + len(ids), dtype=np.int64)[None]}
        if "attention_mask" in inputs:
            feeds["attention_mask"] = np.ones((1, position + len(ids)), np.int64)
        feeds.update(past)
        results = session.run(None, feeds)
        for name, value in zip(outputs, results):
            if name.startswith("present."):
                past["past_key_values." + name[len("present."):]] = value
        return int(np.argmax(results[outputs.index("logits")][0, -1]))

    start = time.perf_counter()
    token = step(prompt, 0)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for index in range(decode):
        token = step([token], len(prompt) + index)
    return prefill_s, time.perf_counter() - start


def bench(args):
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except LOAD_ERRORS as error:
        raise SystemExit(f"ort_bench: onnxruntime cannot load {args.model}: {error}") from None
    names = {value.name for value in session.get_inputs()}
    missing = {"input_ids", "position_ids", "past_key_values.0.key"} - names
    if missing:
        raise SystemExit(f"ort_bench: {args.model} has no input {', '.join(sorted(missing))}; "
                         "expected the graph of bench/smollm2/build_onnx.py")
    vocab = session.get_outputs()[0].shape[2]
    prompt = [1 + index % (vocab - 1) for index in range(args.prefill)]

    run(session, prompt, args.warmup)
    prefill_s, decode_s = run(session, prompt, args.decode)
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op thread(s), {args.model}")
    print(f"prefill: {args.prefill / prefill_s:.2f} tokens/s "
          f"({args.prefill} tokens in {prefill_s:.3f} s)")
    print(f"decode: {args.decode / decode_s if args.decode else 0.0:.2f} tokens/s "
          f"({args.decode} tokens in {decode_s:.3f} s)")


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("quantize", help="write a MatMulNBits copy of a model")
    make.add_argument("model")
    make.add_argument("out")
    make.add_argument("--block-size", type=positive, default=32, help="weights per scale (32)")
    make.add_argument("--accuracy-level", type=int, default=4, choices=range(5),
                      help="MatMulNBits compute type: 4 quantizes activations to int8 (4)")
    timing = commands.add_parser("bench", help="time prefill and decode")
    timing.add_argument("model")
    timing.add_argument("--threads", type=positive, default=1, help="intra-op threads (1)")
    timing.add_argument("--prefill", type=positive, default=128, help="prompt tokens (128)")
    timing.add_argument("--decode", type=non_negative, default=64, help="decode steps (64)")
    timing.add_argument("--warmup", type=non_negative, default=2,
                        help="decode steps of the untimed first run (2)")
    args = parser.parse_args()
    if args.command == "quantize":
        quantize(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
