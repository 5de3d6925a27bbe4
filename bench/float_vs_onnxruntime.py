"""Float32 prefill and decode speed of an iq library against onnxruntime on
the same ONNX model, measured in one run.

Usage: float_vs_onnxruntime.py MODEL.onnx LIBRARY.so [--prefill N] [--decode N]
                               [--repeats N] [--threads N]

The library is the output of `iq-compile MODEL.onnx -o LIBRARY.so`; its
weights are read from LIBRARY.iqw. Both sides get the same prompt (token
ids 1..N of the vocabulary, wrapped) and decode greedily from it. Each
number is the median over --repeats runs. Not part of CI.
"""
import argparse
import ctypes
import os
import statistics
import time

import numpy as np
import onnxruntime as ort


class Library:
    """The public iq_runtime.h interface of an emitted library, via ctypes."""

    def __init__(self, path, threads):
        self.lib = ctypes.CDLL(os.path.abspath(path))
        self.lib.iq_model_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p,
                                           ctypes.POINTER(ctypes.c_void_p)]
        self.lib.iq_session_create.argtypes = [ctypes.c_void_p, ctypes.c_int32,
                                               ctypes.POINTER(ctypes.c_void_p)]
        self.lib.iq_session_forward.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32),
                                                ctypes.c_int32, ctypes.c_int32,
                                                ctypes.POINTER(ctypes.c_float), ctypes.c_int32]
        self.lib.iq_session_destroy.argtypes = [ctypes.c_void_p]
        self.lib.iq_model_close.argtypes = [ctypes.c_void_p]
        self.lib.iq_last_error.restype = ctypes.c_char_p
        os.environ["IQ_NUM_THREADS"] = str(threads)
        self.model = ctypes.c_void_p()
        weights = os.path.splitext(os.path.abspath(path))[0] + ".iqw"
        self.check(self.lib.iq_model_open(weights.encode(), None, ctypes.byref(self.model)))

    def check(self, status):
        if status != 0:
            raise RuntimeError(self.lib.iq_last_error().decode())

    def run(self, prompt, decode, vocab, context):
        session = ctypes.c_void_p()
        self.check(self.lib.iq_session_create(self.model, context, ctypes.byref(session)))
        logits = (ctypes.c_float * vocab)()
        tokens = (ctypes.c_int32 * len(prompt))(*prompt)
        start = time.perf_counter()
        self.check(self.lib.iq_session_forward(session, tokens, len(prompt), 0, logits, 1))
        prefill = time.perf_counter() - start
        token = (ctypes.c_int32 * 1)(int(np.argmax(np.ctypeslib.as_array(logits))))
        start = time.perf_counter()
        for step in range(decode):
            self.check(self.lib.iq_session_forward(session, token, 1, len(prompt) + step, logits, 1))
            token[0] = int(np.argmax(np.ctypeslib.as_array(logits)))
        decode_time = time.perf_counter() - start
        self.lib.iq_session_destroy(session)
        return prefill, decode_time


def onnxruntime_run(session, prompt, decode, kv_heads, head_dim):
    names = [value.name for value in session.get_inputs()]
    outputs = [value.name for value in session.get_outputs()]
    past = {name: np.zeros((1, kv_heads, 0, head_dim), np.float32)
            for name in names if name.startswith("past_key_values")}

    def step(ids, position):
        feeds = {"input_ids": np.array([ids], np.int64),
                 "position_ids": np.arange(position, position + len(ids), dtype=np.int64)[None]}
        if "attention_mask" in names:
            feeds["attention_mask"] = np.ones((1, position + len(ids)), np.int64)
        feeds.update(past)
        results = session.run(None, feeds)
        for name, value in zip(outputs, results):
            if name.startswith("present."):
                past["past_key_values." + name[len("present."):]] = value
        return int(np.argmax(results[0][0, -1]))

    start = time.perf_counter()
    token = step(prompt, 0)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for index in range(decode):
        token = step([token], len(prompt) + index)
    return prefill, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("library")
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    cache = next(value for value in session.get_inputs() if value.name.startswith("past_key_values"))
    kv_heads, head_dim = cache.shape[1], cache.shape[3]
    vocab = session.get_outputs()[0].shape[2]
    prompt = [1 + index % (vocab - 1) for index in range(args.prefill)]
    library = Library(args.library, args.threads)

    results = {"iq": [], "onnxruntime": []}
    for _ in range(args.repeats):
        results["iq"].append(library.run(prompt, args.decode, vocab, args.prefill + args.decode))
        results["onnxruntime"].append(
            onnxruntime_run(session, prompt, args.decode, kv_heads, head_dim))

    rates = {}
    for name, runs in results.items():
        prefill = args.prefill / statistics.median(run[0] for run in runs)
        decode = args.decode / statistics.median(run[1] for run in runs)
        rates[name] = (prefill, decode)
        print(f"{name:12s} prefill {prefill:10.1f} tokens/s   decode {decode:10.1f} tokens/s")
    print(f"iq / onnxruntime: prefill {rates['iq'][0] / rates['onnxruntime'][0]:.2f}x, "
          f"decode {rates['iq'][1] / rates['onnxruntime'][1]:.2f}x "
          f"({args.threads} thread(s), prompt {args.prefill}, {args.decode} decode steps, "
          f"median of {args.repeats})")


if __name__ == "__main__":
    main()
