"""Print the Markdown tables of bench/int4_model/run.sh from the files it
leaves in WORK_DIR.

Usage: report.py WORK_DIR --threads N --prefill N --decode N [--q4-0 FILE.gguf]

The script reads three kinds of files. WORK_DIR/runs/NAME.txt is the
output of iq-run --bench, ort_bench.py bench or llama-bench, followed by
the "peak RSS N KiB" line of /usr/bin/time. WORK_DIR/lib-NAME/compile.log
is iq-compile's standard error with the "total: ..." line of
/usr/bin/time, and options.txt beside it has the iq-compile options. The
weight summaries come from ort_bench.py quantize's JSON file and from the
Q4_0 GGUF file. An engine whose output file is missing is left out.
"""
import argparse
import json
import os
import re
import shlex

# iq libraries: directory name under WORK_DIR, table label.
IQ_LIBRARIES = [
    ("float", "iq float32"),
    ("quarot-int4", "iq W4A4KV4 QuaRot, int4 kernels"),
    ("quarot-float-kernels", "iq W4A4KV4 QuaRot, float kernels (fake quantization)"),
    ("infoquant-int4", "iq W4A4KV4 InfoQuant, int4 kernels"),
]


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return None


def minutes_seconds(text):
    """Return the seconds of an "m:ss" or "h:mm:ss" duration."""
    seconds = 0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def peak_rss_mib(text):
    match = re.search(r"peak RSS (\d+) KiB", text)
    return f"{int(match.group(1)) / 1024:.0f}" if match else "n/a"


def rate(text, kind):
    """Return the tokens/s of a "prefill: X tokens/s" or "decode: X tokens/s" line."""
    match = re.search(rf"^{kind}: ([0-9.]+) tokens/s", text, re.MULTILINE)
    return f"{float(match.group(1)):.1f}" if match else "n/a"


def llama_bench_rate(text, test):
    """Return the "t/s" cell (mean +- standard deviation) of one llama-bench row."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[-2] == test:
            return cells[-1].replace("±", "+-")
    return "n/a"


def lm_head_option(options):
    """Return the value of --lm-head in the iq-compile OPTIONS string, or None."""
    words = shlex.split(options)
    for index, word in enumerate(words):
        if word == "--lm-head" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--lm-head="):
            return word.split("=", 1)[1]
    return None


def iq_precision(name, options):
    if name == "float":
        return "f32 weights, activations and KV cache; embedding f32; lm_head f32"
    mode = lm_head_option(options)
    if mode is None or mode == "float":
        lm_head = "lm_head f32"
    elif mode == "w8a8":
        lm_head = "lm_head W8A8 (8-bit per-row weights and per-token input, --lm-head=w8a8)"
    else:
        lm_head = f"lm_head --lm-head={mode}"
    return f"W4A4 linears, int4 KV cache; embedding f32; {lm_head}"


def ort_int4_precision(work):
    summary = read(os.path.join(work, "ort-matmulnbits", "smollm2-135m-matmulnbits.json"))
    if summary is None:
        return "MatMulNBits 4-bit (weight summary missing)"
    summary = json.loads(summary)
    lm_head = summary["lm_head_precision"]
    if lm_head == "f32" and "not an initializer" in summary["lm_head"]:
        lm_head += " (MatMul on Transpose(embedding): the quantizer skips it)"
    return (f"{summary['matmul_nbits']} MatMulNBits, 4-bit asymmetric, block "
            f"{summary['block_size']}, accuracy_level {summary['accuracy_level']} (int8 compute); "
            f"embedding {summary['embedding'].replace('float32 Gather', 'f32')}; "
            f"lm_head {lm_head}")


def gguf_precision(path):
    """Describe the tensor types of llama.cpp's model file at PATH."""
    try:
        import gguf
    except ImportError:
        return "Q4_0 (gguf package missing, types not checked)"
    reader = gguf.GGUFReader(path)
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    counts = {}
    for tensor in reader.tensors:
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2:
            kind = tensor.tensor_type.name
            counts[kind] = counts.get(kind, 0) + 1
    layers = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    embedding = types.get("token_embd.weight", "missing")
    if "output.weight" in types:
        head = f"lm_head {types['output.weight']}"
    else:
        head = f"lm_head = token_embd {embedding} (tied, no output.weight)"
    # Not in the file: ggml's CPU backend multiplies Q4_0 weights with Q8_0
    # activations (vec_dot_type), and llama-bench's default cache type is
    # f16, in the llama.cpp of llama-cpp-python 0.3.16.
    return (f"layer matrices: {layers}; embedding {embedding}; {head}; "
            "activations Q8_0 in the matrix products; KV f16")


def performance_table(args):
    work = args.work_dir
    rows = []
    for name, label in IQ_LIBRARIES:
        text = read(os.path.join(work, "runs", f"iq-{name}.txt"))
        options = read(os.path.join(work, f"lib-{name}", "options.txt")) or ""
        if text is not None:
            rows.append((label, iq_precision(name, options),
                         rate(text, "prefill"), rate(text, "decode"), peak_rss_mib(text)))
    text = read(os.path.join(work, "runs", "ort-float.txt"))
    if text is not None:
        rows.append(("onnxruntime float32", "f32; embedding f32; lm_head f32",
                     rate(text, "prefill"), rate(text, "decode"), peak_rss_mib(text)))
    text = read(os.path.join(work, "runs", "ort-matmulnbits.txt"))
    if text is not None:
        rows.append(("onnxruntime MatMulNBits", ort_int4_precision(work),
                     rate(text, "prefill"), rate(text, "decode"), peak_rss_mib(text)))
    text = read(os.path.join(work, "runs", "llama-q4_0.txt"))
    if text is not None:
        precision = gguf_precision(args.q4_0) if args.q4_0 else "Q4_0"
        rows.append(("llama.cpp Q4_0 (llama-bench)", precision,
                     llama_bench_rate(text, f"pp{args.prefill}"),
                     llama_bench_rate(text, f"tg{args.decode} @ d{args.prefill}"),
                     peak_rss_mib(text)))

    print(f"Prefill of {args.prefill} tokens, then {args.decode} decode steps, "
          f"{args.threads} thread(s), tokens/s:")
    print()
    print("| engine | weights and precision | prefill tok/s | decode tok/s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def compile_stages(text):
    """Return {stage name: seconds} in the order iq-compile printed the stages."""
    stages = {}
    for line in text.splitlines():
        match = re.match(r"(import|codegen): .* in (\d+(?::\d+)+) ", line)
        if match:
            stages[match.group(1)] = float(minutes_seconds(match.group(2)))
            continue
        match = re.match(r"iq-compile: (.+) took ([0-9.]+) s$", line)
        if match:
            stages[match.group(1)] = stages.get(match.group(1), 0.0) + float(match.group(2))
    return stages


def compile_table(args):
    work = args.work_dir
    rows = []
    for name, label in IQ_LIBRARIES:
        text = read(os.path.join(work, f"lib-{name}", "compile.log"))
        if text is None:
            continue
        total = re.search(r"^total: ([0-9.]+) s wall", text, re.MULTILINE)
        rows.append((label, compile_stages(text), float(total.group(1)) if total else None,
                     peak_rss_mib(text)))
    for label, path in (("onnxruntime MatMulNBitsQuantizer",
                         os.path.join(work, "ort-matmulnbits", "quantize.log")),
                        ("llama-quantize Q4_1 to Q4_0",
                         os.path.join(work, "llama-quantize.log"))):
        text = read(path)
        if text is not None:
            total = re.search(r"^total: ([0-9.]+) s wall", text, re.MULTILINE)
            rows.append((label, {}, float(total.group(1)) if total else None, peak_rss_mib(text)))

    # import first and codegen last, the other stages in the order printed.
    columns = ["import"]
    for _, stages, _, _ in rows:
        for stage in stages:
            if stage not in columns and stage != "codegen":
                columns.append(stage)
    columns.append("codegen")
    print("Compile time in seconds (import and codegen are rounded to whole seconds; "
          "\"other\" is the rest of the total: raising, lowering, linking):")
    print()
    print("| step | " + " | ".join(columns) + " | other | total | peak RSS MiB |")
    print("| --- " * (len(columns) + 4) + "|")
    for label, stages, total, rss in rows:
        cells = [f"{stages[column]:.1f}" if column in stages else "" for column in columns]
        if total is None:
            other, total_text = "", "n/a"
        else:
            other = f"{max(total - sum(stages.values()), 0.0):.1f}" if stages else ""
            total_text = f"{total:.1f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {other} | {total_text} | {rss} |")

    print()
    print("iq-compile options of each library:")
    print()
    for name, label in IQ_LIBRARIES:
        options = read(os.path.join(work, f"lib-{name}", "options.txt"))
        if options is not None:
            print(f"- {label}: `{options}`")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument("--threads", required=True)
    parser.add_argument("--prefill", type=int, required=True)
    parser.add_argument("--decode", type=int, required=True)
    parser.add_argument("--q4-0", help="llama.cpp's Q4_0 GGUF file, to list its tensor types")
    args = parser.parse_args()
    performance_table(args)
    print()
    compile_table(args)


if __name__ == "__main__":
    main()
