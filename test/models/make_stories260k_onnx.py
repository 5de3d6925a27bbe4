#!/usr/bin/env python3
"""Build the stories260K ONNX fixtures from the GGUF file and check them.

stories260K is the smallest of Andrej Karpathy's tinyllamas (LLaMA-2
architecture: dim 64, 5 layers, 8 query heads, 4 KV heads, FFN 172,
vocabulary 512). This script writes two ONNX graphs of the same weights:

  stories260K-decomposed.onnx  opset 17, the op pattern of torch.onnx and
                               Hugging Face Optimum exports of LlamaForCausalLM
  stories260K-opset23.onnx     opset 23, with RMSNormalization, RotaryEmbedding
                               and Attention

and checks both with onnxruntime against a NumPy forward pass that follows
llama2.c's run.c (float64, interleaved RoPE on the GGUF weight layout).

  make_stories260k_onnx.py --gguf stories260K.gguf   write the fixtures, check them
  make_stories260k_onnx.py --check-only              check the committed fixtures

--check-only reads the weights back from the decomposed graph, rebuilds both
graphs from them and requires the result to equal the committed files byte
for byte, then runs the same checks. It writes nothing.
"""

import argparse
import dataclasses
import hashlib
import math
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT_DIR = os.path.join(HERE, "stories260K")
DECOMPOSED_NAME = "stories260K-decomposed.onnx"
OPSET23_NAME = "stories260K-opset23.onnx"
TOKENIZER_NAME = "tok512.bin"

PRODUCER_NAME = "iq test/models/make_stories260k_onnx.py"
PRODUCER_VERSION = "1"

BOS_ID = 1
GENERATED_TOKENS = 200
PROMPT_TOKENS = 16
# The prompt is split here for the check that feeds a multi-token chunk on
# top of a non-empty KV cache.
CHUNK_SPLIT = 10
EXPECTED_START = "Once upon a time, there was a little girl named Lily."
# Relative error is max|a - b| / max|b| over one logits tensor.
MAX_RELATIVE_ERROR = 1e-4


@dataclasses.dataclass(frozen=True)
class Config:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    max_positions: int
    rope_theta: float
    rms_eps: float

    @property
    def head_dim(self):
        return self.dim // self.n_heads



# ---------------------------------------------------------------------------
# Weights. The dictionary uses the GGUF tensor names and layout: every matrix
# is [out_features, in_features], and the q/k rows are in the order of the
# original Meta checkpoint, whose RoPE rotates interleaved pairs (2i, 2i+1).
# ---------------------------------------------------------------------------

def read_gguf(path):
    """Read the config and the F32 tensors of a LLaMA GGUF file."""
    import gguf  # Only needed to regenerate; --check-only works without it.

    reader = gguf.GGUFReader(path)

    def field(key, default=None):
        if key not in reader.fields:
            if default is None:
                raise KeyError(f"{path}: GGUF metadata key {key} is missing")
            return default
        return reader.fields[key].contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: general.architecture is {arch!r}, expected 'llama'")
    weights = {}
    for tensor in reader.tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: tensor {tensor.name} is {tensor.tensor_type.name}, only F32 is supported")
        # GGUF lists dimensions innermost first, so tensor.data already has the
        # NumPy (row-major) shape [out_features, in_features].
        weights[tensor.name] = np.array(tensor.data, dtype=np.float32)
    config = Config(
        dim=int(field("llama.embedding_length")),
        n_layers=int(field("llama.block_count")),
        n_heads=int(field("llama.attention.head_count")),
        n_kv_heads=int(field("llama.attention.head_count_kv")),
        ffn_dim=int(field("llama.feed_forward_length")),
        vocab_size=weights["token_embd.weight"].shape[0],
        max_positions=int(field("llama.context_length")),
        # llama.cpp uses 10000 when the key is absent, as it is in this file.
        rope_theta=float(field("llama.rope.freq_base", 10000.0)),
        rms_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
    )
    return config, weights


def interleaved_to_half_rows(w, n_heads):
    """Reorder q/k projection rows from interleaved-pair RoPE to rotate_half RoPE.

    Within each head, row 2i+j of the Meta layout becomes row j*(head_dim/2)+i,
    so the pair (x[2i], x[2i+1]) becomes (x[i], x[i + head_dim/2]). This is the
    permutation of Hugging Face's convert_llama_weights_to_hf.py. Without it the
    greedy tokens of the graphs differ from the reference at token 10.
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def half_to_interleaved_rows(w, n_heads):
    """Invert interleaved_to_half_rows."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def layer_names(i):
    return {
        "attn_norm": f"blk.{i}.attn_norm.weight",
        "q": f"blk.{i}.attn_q.weight",
        "k": f"blk.{i}.attn_k.weight",
        "v": f"blk.{i}.attn_v.weight",
        "o": f"blk.{i}.attn_output.weight",
        "ffn_norm": f"blk.{i}.ffn_norm.weight",
        "gate": f"blk.{i}.ffn_gate.weight",
        "up": f"blk.{i}.ffn_up.weight",
        "down": f"blk.{i}.ffn_down.weight",
    }


def hf_initializers(config, weights):
    """Return the ONNX initializers, named as in Hugging Face's LlamaForCausalLM.

    Projection matrices are transposed to [in_features, out_features], the
    layout MatMul(x, W) needs, and q/k rows are reordered for rotate_half RoPE.
    """
    tensors = {
        "model.embed_tokens.weight": weights["token_embd.weight"],
        "model.norm.weight": weights["output_norm.weight"],
        "lm_head.weight.T": weights["output.weight"].T,
    }
    for i in range(config.n_layers):
        src = layer_names(i)
        prefix = f"model.layers.{i}"
        q = interleaved_to_half_rows(weights[src["q"]], config.n_heads)
        k = interleaved_to_half_rows(weights[src["k"]], config.n_kv_heads)
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


def weights_from_decomposed(model):
    """Recover the config and the GGUF-layout weights from the decomposed graph."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    config = Config(
        dim=int(meta["dim"]),
        n_layers=int(meta["n_layers"]),
        n_heads=int(meta["n_heads"]),
        n_kv_heads=int(meta["n_kv_heads"]),
        ffn_dim=int(meta["ffn_dim"]),
        vocab_size=int(meta["vocab_size"]),
        max_positions=int(meta["max_positions"]),
        rope_theta=float(meta["rope_theta"]),
        rms_eps=float(meta["rms_eps"]),
    )
    weights = {
        "token_embd.weight": init["model.embed_tokens.weight"],
        "output_norm.weight": init["model.norm.weight"],
        "output.weight": init["lm_head.weight.T"].T,
    }
    for i in range(config.n_layers):
        dst = layer_names(i)
        prefix = f"model.layers.{i}"
        q = init[f"{prefix}.self_attn.q_proj.weight.T"].T
        k = init[f"{prefix}.self_attn.k_proj.weight.T"].T
        weights[dst["attn_norm"]] = init[f"{prefix}.input_layernorm.weight"]
        weights[dst["q"]] = half_to_interleaved_rows(q, config.n_heads)
        weights[dst["k"]] = half_to_interleaved_rows(k, config.n_kv_heads)
        weights[dst["v"]] = init[f"{prefix}.self_attn.v_proj.weight.T"].T
        weights[dst["o"]] = init[f"{prefix}.self_attn.o_proj.weight.T"].T
        weights[dst["ffn_norm"]] = init[f"{prefix}.post_attention_layernorm.weight"]
        weights[dst["gate"]] = init[f"{prefix}.mlp.gate_proj.weight.T"].T
        weights[dst["up"]] = init[f"{prefix}.mlp.up_proj.weight.T"].T
        weights[dst["down"]] = init[f"{prefix}.mlp.down_proj.weight.T"].T
    weights = {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in weights.items()}
    return config, weights


def config_metadata(config):
    # repr() of a float round-trips exactly, so --check-only rebuilds the same bytes.
    return {field.name: repr(getattr(config, field.name)) for field in dataclasses.fields(config)}


def inverse_frequencies(config):
    """Return theta^(-2i/head_dim) for i < head_dim/2, in float32 as HF computes it."""
    exponents = np.arange(0, config.head_dim, 2, dtype=np.int64).astype(np.float32) / config.head_dim
    return (1.0 / (np.float32(config.rope_theta) ** exponents)).astype(np.float32)


# ---------------------------------------------------------------------------
# Graph building.
# ---------------------------------------------------------------------------

class GraphBuilder:
    """Collect nodes and initializers, naming node outputs as torch.onnx does."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.initializer_names = set()
        self.node_names = set()

    def initializer(self, name, array):
        if name not in self.initializer_names:
            self.initializer_names.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const_i64(self, name, values):
        return self.initializer(name, np.array(values, dtype=np.int64))

    def const_f32(self, name, value):
        return self.initializer(name, np.array(value, dtype=np.float32))

    def op(self, op_type, inputs, name, num_outputs=1, **attrs):
        """Append a node named `name`; return its output name, or a list of them."""
        base = name
        suffix = 1
        while name in self.node_names:
            name = f"{base}_{suffix}"
            suffix += 1
        self.node_names.add(name)
        outputs = [f"{name}_output_{i}" for i in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0] if num_outputs == 1 else outputs

    def rename_output(self, old, new):
        """Give the node that produces `old` the graph output name `new`."""
        for node in self.nodes:
            for i, out in enumerate(node.output):
                if out == old:
                    node.output[i] = new
            for i, inp in enumerate(node.input):
                if inp == old:
                    node.input[i] = new


def float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def int64_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def kv_inputs_outputs(config):
    inputs, outputs = [], []
    past_shape = ["batch_size", config.n_kv_heads, "past_sequence_length", config.head_dim]
    present_shape = ["batch_size", config.n_kv_heads, "total_sequence_length", config.head_dim]
    for i in range(config.n_layers):
        for kind in ("key", "value"):
            inputs.append(float_input(f"past_key_values.{i}.{kind}", past_shape))
            outputs.append(float_input(f"present.{i}.{kind}", present_shape))
    return inputs, outputs


def finish_model(builder, config, name, inputs, outputs, opset, ir_version, doc):
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, builder.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=doc,
        ir_version=ir_version,
    )
    helper.set_model_props(model, config_metadata(config))
    onnx.checker.check_model(model, full_check=True)
    return model


def decomposed_rms_norm(b, x, weight, scope, config):
    """RMSNorm as torch.onnx exports LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * w."""
    squared = b.op("Pow", [x, b.const_f32("const_two", 2.0)], f"{scope}/Pow")
    mean = b.op("ReduceMean", [squared], f"{scope}/ReduceMean", axes=[-1], keepdims=1)
    shifted = b.op("Add", [mean, b.const_f32("const_rms_eps", config.rms_eps)], f"{scope}/Add")
    root = b.op("Sqrt", [shifted], f"{scope}/Sqrt")
    inverse = b.op("Reciprocal", [root], f"{scope}/Reciprocal")
    normalized = b.op("Mul", [x, inverse], f"{scope}/Mul")
    return b.op("Mul", [weight, normalized], f"{scope}/Mul")


def decomposed_swiglu(b, x, prefix, scope):
    gate = b.op("MatMul", [x, f"{prefix}.mlp.gate_proj.weight.T"], f"{scope}/gate_proj/MatMul")
    sigmoid = b.op("Sigmoid", [gate], f"{scope}/act_fn/Sigmoid")
    silu = b.op("Mul", [gate, sigmoid], f"{scope}/act_fn/Mul")
    up = b.op("MatMul", [x, f"{prefix}.mlp.up_proj.weight.T"], f"{scope}/up_proj/MatMul")
    product = b.op("Mul", [silu, up], f"{scope}/Mul")
    return b.op("MatMul", [product, f"{prefix}.mlp.down_proj.weight.T"], f"{scope}/down_proj/MatMul")


def decomposed_rotary_tables(b, config):
    """Compute cos and sin [batch, 1, seq, head_dim] from position_ids, as LlamaRotaryEmbedding does."""
    scope = "/model/rotary_emb"
    inv_freq = b.initializer("model.rotary_emb.inv_freq.expanded",
                             inverse_frequencies(config).reshape(1, -1, 1))
    positions = b.op("Cast", ["position_ids"], f"{scope}/Cast", to=TensorProto.FLOAT)
    positions = b.op("Unsqueeze", [positions, b.const_i64("const_axes_1", [1])], f"{scope}/Unsqueeze")
    # [1, head_dim/2, 1] x [batch, 1, seq] -> [batch, head_dim/2, seq]
    freqs = b.op("MatMul", [inv_freq, positions], f"{scope}/MatMul")
    freqs = b.op("Transpose", [freqs], f"{scope}/Transpose", perm=[0, 2, 1])
    angles = b.op("Concat", [freqs, freqs], f"{scope}/Concat", axis=-1)
    cos = b.op("Cos", [angles], f"{scope}/Cos")
    sin = b.op("Sin", [angles], f"{scope}/Sin")
    cos = b.op("Unsqueeze", [cos, "const_axes_1"], "/model/layers.0/self_attn/Unsqueeze")
    sin = b.op("Unsqueeze", [sin, "const_axes_1"], "/model/layers.0/self_attn/Unsqueeze")
    return cos, sin


def decomposed_attention_bias(b):
    """Build the additive mask [batch, 1, seq, total]: 0 where allowed, float32 min elsewhere.

    Query row q sits at absolute position past + q, with past = total - seq.
    Key column k is masked when k > past + q (causal) or attention_mask[k] == 0.
    """
    scope = "/model"
    seq_shape = b.op("Shape", ["input_ids"], f"{scope}/Shape")
    seq_len = b.op("Gather", [seq_shape, b.const_i64("const_one", 1)], f"{scope}/Gather", axis=0)
    total_shape = b.op("Shape", ["attention_mask"], f"{scope}/Shape")
    total_len = b.op("Gather", [total_shape, "const_one"], f"{scope}/Gather", axis=0)
    past_len = b.op("Sub", [total_len, seq_len], f"{scope}/Sub")
    query_pos = b.op("Range", [past_len, total_len, "const_one"], f"{scope}/Range")
    key_pos = b.op("Range", [b.const_i64("const_zero", 0), total_len, "const_one"], f"{scope}/Range")
    query_col = b.op("Unsqueeze", [query_pos, "const_axes_1"], f"{scope}/Unsqueeze")
    future = b.op("Less", [query_col, key_pos], f"{scope}/Less")  # [seq, total]
    padding = b.op("Equal", [b.op("Unsqueeze", ["attention_mask", b.const_i64("const_axes_1_2", [1, 2])],
                                  f"{scope}/Unsqueeze"),
                             "const_zero"], f"{scope}/Equal")  # [batch, 1, 1, total]
    masked = b.op("Or", [future, padding], f"{scope}/Or")  # [batch, 1, seq, total]
    float_min = b.const_f32("const_float32_min", np.finfo(np.float32).min)
    return b.op("Where", [masked, float_min, b.const_f32("const_zero_f", 0.0)], f"{scope}/Where")


def decomposed_rotate(b, x, cos, sin, scope, config):
    """Return x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1)."""
    half = config.head_dim // 2
    x1 = b.op("Slice", [x, b.const_i64("const_zero_1d", [0]), b.const_i64("const_half_1d", [half]),
                        b.const_i64("const_axes_3", [3])], f"{scope}/Slice")
    x2 = b.op("Slice", [x, "const_half_1d", b.const_i64("const_int64_max_1d", [np.iinfo(np.int64).max]),
                        "const_axes_3"], f"{scope}/Slice")
    neg = b.op("Neg", [x2], f"{scope}/Neg")
    rotated = b.op("Concat", [neg, x1], f"{scope}/Concat", axis=-1)
    direct = b.op("Mul", [x, cos], f"{scope}/Mul")
    cross = b.op("Mul", [rotated, sin], f"{scope}/Mul")
    return b.op("Add", [direct, cross], f"{scope}/Add")


def decomposed_repeat_kv(b, x, scope, config):
    """Expand [batch, kv_heads, total, head_dim] to [batch, heads, total, head_dim]."""
    n_rep = config.n_heads // config.n_kv_heads
    x = b.op("Unsqueeze", [x, b.const_i64("const_axes_2", [2])], f"{scope}/Unsqueeze")
    x = b.op("Expand", [x, b.const_i64("const_repeat_kv_shape", [1, 1, n_rep, 1, 1])], f"{scope}/Expand")
    shape = b.const_i64("const_heads_shape", [0, config.n_heads, -1, config.head_dim])
    return b.op("Reshape", [x, shape], f"{scope}/Reshape")


def decomposed_attention(b, x, i, cos, sin, bias, config):
    prefix = f"model.layers.{i}"
    scope = f"/model/layers.{i}/self_attn"
    q = b.op("MatMul", [x, f"{prefix}.self_attn.q_proj.weight.T"], f"{scope}/q_proj/MatMul")
    k = b.op("MatMul", [x, f"{prefix}.self_attn.k_proj.weight.T"], f"{scope}/k_proj/MatMul")
    v = b.op("MatMul", [x, f"{prefix}.self_attn.v_proj.weight.T"], f"{scope}/v_proj/MatMul")
    split_heads = b.const_i64("const_split_heads_shape", [0, 0, -1, config.head_dim])
    heads = []
    for proj in (q, k, v):
        reshaped = b.op("Reshape", [proj, split_heads], f"{scope}/Reshape")
        heads.append(b.op("Transpose", [reshaped], f"{scope}/Transpose", perm=[0, 2, 1, 3]))
    q, k, v = heads
    q = decomposed_rotate(b, q, cos, sin, scope, config)
    k = decomposed_rotate(b, k, cos, sin, scope, config)

    present_key = b.op("Concat", [f"past_key_values.{i}.key", k], f"{scope}/Concat", axis=2)
    present_value = b.op("Concat", [f"past_key_values.{i}.value", v], f"{scope}/Concat", axis=2)
    b.rename_output(present_key, f"present.{i}.key")
    b.rename_output(present_value, f"present.{i}.value")
    k_all = decomposed_repeat_kv(b, f"present.{i}.key", scope, config)
    v_all = decomposed_repeat_kv(b, f"present.{i}.value", scope, config)

    k_t = b.op("Transpose", [k_all], f"{scope}/Transpose", perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [q, k_t], f"{scope}/MatMul")
    scale = b.const_f32("const_sqrt_head_dim", math.sqrt(config.head_dim))
    scores = b.op("Div", [scores, scale], f"{scope}/Div")
    scores = b.op("Add", [scores, bias], f"{scope}/Add")
    probs = b.op("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = b.op("MatMul", [probs, v_all], f"{scope}/MatMul")
    context = b.op("Transpose", [context], f"{scope}/Transpose", perm=[0, 2, 1, 3])
    context = b.op("Reshape", [context, b.const_i64("const_merge_heads_shape", [0, 0, config.dim])],
                   f"{scope}/Reshape")
    return b.op("MatMul", [context, f"{prefix}.self_attn.o_proj.weight.T"], f"{scope}/o_proj/MatMul")


def build_decomposed(config, weights):
    b = GraphBuilder()
    for name, tensor in hf_initializers(config, weights).items():
        b.initializer(name, tensor)

    x = b.op("Gather", ["model.embed_tokens.weight", "input_ids"], "/model/embed_tokens/Gather")
    cos, sin = decomposed_rotary_tables(b, config)
    bias = decomposed_attention_bias(b)
    for i in range(config.n_layers):
        prefix = f"model.layers.{i}"
        scope = f"/model/layers.{i}"
        h = decomposed_rms_norm(b, x, f"{prefix}.input_layernorm.weight", f"{scope}/input_layernorm", config)
        x = b.op("Add", [x, decomposed_attention(b, h, i, cos, sin, bias, config)], f"{scope}/Add")
        h = decomposed_rms_norm(b, x, f"{prefix}.post_attention_layernorm.weight",
                                f"{scope}/post_attention_layernorm", config)
        x = b.op("Add", [x, decomposed_swiglu(b, h, prefix, f"{scope}/mlp")], f"{scope}/Add")
    x = decomposed_rms_norm(b, x, "model.norm.weight", "/model/norm", config)
    logits = b.op("MatMul", [x, "lm_head.weight.T"], "/lm_head/MatMul")
    b.rename_output(logits, "logits")

    kv_in, kv_out = kv_inputs_outputs(config)
    inputs = [
        int64_input("input_ids", ["batch_size", "sequence_length"]),
        int64_input("attention_mask", ["batch_size", "total_sequence_length"]),
        int64_input("position_ids", ["batch_size", "sequence_length"]),
    ] + kv_in
    outputs = [float_input("logits", ["batch_size", "sequence_length", config.vocab_size])] + kv_out
    doc = ("stories260K (tinyllamas, MIT) in the op pattern of a torch.onnx / Optimum export "
           "of LlamaForCausalLM with KV cache.")
    return finish_model(b, config, "stories260K_decomposed", inputs, outputs, 17, 8, doc)


def build_opset23(config, weights):
    b = GraphBuilder()
    for name, tensor in hf_initializers(config, weights).items():
        b.initializer(name, tensor)
    # cos/sin caches [max_positions, head_dim/2], computed as HF does: float32
    # angles position * inv_freq, then cos and sin.
    angles = np.arange(config.max_positions, dtype=np.float32)[:, None] * inverse_frequencies(config)[None, :]
    b.initializer("cos_cache", np.cos(angles).astype(np.float32))
    b.initializer("sin_cache", np.sin(angles).astype(np.float32))

    x = b.op("Gather", ["model.embed_tokens.weight", "input_ids"], "/model/embed_tokens/Gather")
    for i in range(config.n_layers):
        prefix = f"model.layers.{i}"
        scope = f"/model/layers.{i}"
        h = b.op("RMSNormalization", [x, f"{prefix}.input_layernorm.weight"],
                 f"{scope}/input_layernorm/RMSNormalization", axis=-1, epsilon=config.rms_eps)
        attn = f"{scope}/self_attn"
        q = b.op("MatMul", [h, f"{prefix}.self_attn.q_proj.weight.T"], f"{attn}/q_proj/MatMul")
        k = b.op("MatMul", [h, f"{prefix}.self_attn.k_proj.weight.T"], f"{attn}/k_proj/MatMul")
        v = b.op("MatMul", [h, f"{prefix}.self_attn.v_proj.weight.T"], f"{attn}/v_proj/MatMul")
        # 3D [batch, seq, heads * head_dim] inputs, so num_heads is required.
        q = b.op("RotaryEmbedding", [q, "cos_cache", "sin_cache", "position_ids"],
                 f"{attn}/q_rotary/RotaryEmbedding", interleaved=0, num_heads=config.n_heads)
        k = b.op("RotaryEmbedding", [k, "cos_cache", "sin_cache", "position_ids"],
                 f"{attn}/k_rotary/RotaryEmbedding", interleaved=0, num_heads=config.n_kv_heads)
        # is_causal with a KV cache masks key j for query i when j > past + i
        # (the ONNX 1.19 reference implementation's _apply_causal), which is
        # what decoding needs. The default scale is 1/sqrt(head_dim).
        context, present_key, present_value = b.op(
            "Attention", [q, k, v, "", f"past_key_values.{i}.key", f"past_key_values.{i}.value"],
            f"{attn}/Attention", num_outputs=3,
            q_num_heads=config.n_heads, kv_num_heads=config.n_kv_heads, is_causal=1)
        b.rename_output(present_key, f"present.{i}.key")
        b.rename_output(present_value, f"present.{i}.value")
        out = b.op("MatMul", [context, f"{prefix}.self_attn.o_proj.weight.T"], f"{attn}/o_proj/MatMul")
        x = b.op("Add", [x, out], f"{scope}/Add")
        h = b.op("RMSNormalization", [x, f"{prefix}.post_attention_layernorm.weight"],
                 f"{scope}/post_attention_layernorm/RMSNormalization", axis=-1, epsilon=config.rms_eps)
        x = b.op("Add", [x, decomposed_swiglu(b, h, prefix, f"{scope}/mlp")], f"{scope}/Add")
    x = b.op("RMSNormalization", [x, "model.norm.weight"], "/model/norm/RMSNormalization",
             axis=-1, epsilon=config.rms_eps)
    logits = b.op("MatMul", [x, "lm_head.weight.T"], "/lm_head/MatMul")
    b.rename_output(logits, "logits")

    kv_in, kv_out = kv_inputs_outputs(config)
    inputs = [
        int64_input("input_ids", ["batch_size", "sequence_length"]),
        int64_input("position_ids", ["batch_size", "sequence_length"]),
    ] + kv_in
    outputs = [float_input("logits", ["batch_size", "sequence_length", config.vocab_size])] + kv_out
    doc = ("stories260K (tinyllamas, MIT) with opset 23 RMSNormalization, RotaryEmbedding "
           "and Attention, with KV cache.")
    return finish_model(b, config, "stories260K_opset23", inputs, outputs, 23, 11, doc)


# ---------------------------------------------------------------------------
# NumPy reference: llama2.c run.c semantics, in float64.
# ---------------------------------------------------------------------------

class ReferenceModel:
    """Single-token forward pass with a KV cache on GGUF-layout weights."""

    def __init__(self, config, weights):
        self.config = config
        self.w = {name: t.astype(np.float64) for name, t in weights.items()}
        self.keys = [[] for _ in range(config.n_layers)]
        self.values = [[] for _ in range(config.n_layers)]

    def rms_norm(self, x, weight):
        return weight * (x / np.sqrt(np.mean(x * x) + self.config.rms_eps))

    def rope(self, x, pos):
        """Rotate the pairs (x[2i], x[2i+1]) of each head by pos * theta^(-2i/head_dim)."""
        cfg = self.config
        pairs = x.reshape(-1, cfg.head_dim // 2, 2)
        freq = cfg.rope_theta ** (-np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
        cos, sin = np.cos(pos * freq), np.sin(pos * freq)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        return np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(x.shape)

    def forward(self, token, pos):
        cfg = self.config
        w = self.w
        x = w["token_embd.weight"][token].copy()
        group = cfg.n_heads // cfg.n_kv_heads
        for i in range(cfg.n_layers):
            n = layer_names(i)
            h = self.rms_norm(x, w[n["attn_norm"]])
            q = self.rope(w[n["q"]] @ h, pos).reshape(cfg.n_heads, cfg.head_dim)
            self.keys[i].append(self.rope(w[n["k"]] @ h, pos).reshape(cfg.n_kv_heads, cfg.head_dim))
            self.values[i].append((w[n["v"]] @ h).reshape(cfg.n_kv_heads, cfg.head_dim))
            keys = np.stack(self.keys[i], axis=1)  # [kv_heads, pos + 1, head_dim]
            values = np.stack(self.values[i], axis=1)
            context = np.empty((cfg.n_heads, cfg.head_dim))
            for head in range(cfg.n_heads):
                scores = keys[head // group] @ q[head] / math.sqrt(cfg.head_dim)
                probs = np.exp(scores - scores.max())
                probs /= probs.sum()
                context[head] = probs @ values[head // group]
            x = x + w[n["o"]] @ context.reshape(-1)
            h = self.rms_norm(x, w[n["ffn_norm"]])
            gate = w[n["gate"]] @ h
            up = w[n["up"]] @ h
            x = x + w[n["down"]] @ (gate / (1.0 + np.exp(-gate)) * up)
        x = self.rms_norm(x, w["output_norm.weight"])
        return w["output.weight"] @ x


# ---------------------------------------------------------------------------
# onnxruntime runs.
# ---------------------------------------------------------------------------

class OnnxModel:
    """One onnxruntime session of a fixture graph, fed in the HF export convention."""

    def __init__(self, path, config):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.config = config
        self.input_names = {i.name for i in self.session.get_inputs()}

    def empty_cache(self):
        cfg = self.config
        shape = (1, cfg.n_kv_heads, 0, cfg.head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * cfg.n_layers)]

    def run(self, tokens, start, cache):
        """Feed tokens at positions start..start+len-1; return logits [len, vocab] and the new cache."""
        feed = {
            "input_ids": np.array([tokens], dtype=np.int64),
            "position_ids": np.arange(start, start + len(tokens), dtype=np.int64)[None, :],
        }
        if "attention_mask" in self.input_names:
            feed["attention_mask"] = np.ones((1, start + len(tokens)), dtype=np.int64)
        for i in range(self.config.n_layers):
            feed[f"past_key_values.{i}.key"] = cache[2 * i]
            feed[f"past_key_values.{i}.value"] = cache[2 * i + 1]
        outputs = self.session.run(None, feed)
        return outputs[0][0], outputs[1:]


def relative_error(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def max_step_error(actual_steps, expected_steps):
    return max(relative_error(a, e) for a, e in zip(actual_steps, expected_steps))


def greedy_decode(step, count):
    """Feed BOS, then each argmax, `count` times; return the tokens and per-step logits."""
    token = BOS_ID
    tokens, logits = [], []
    for pos in range(count):
        out = step(token, pos)
        logits.append(out)
        token = int(np.argmax(out))
        tokens.append(token)
    return tokens, logits


def onnx_greedy_decode(model, count):
    cache = model.empty_cache()

    def step(token, pos):
        nonlocal cache
        logits, cache = model.run([token], pos, cache)
        return logits[0]

    return greedy_decode(step, count)


# ---------------------------------------------------------------------------
# Tokenizer (llama2.c tokenizer.bin layout).
# ---------------------------------------------------------------------------

def read_vocabulary(path):
    """Read int32 max_token_length, then per token float32 score, int32 length, bytes."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 4
    pieces = []
    while offset < len(data):
        _score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        pieces.append(data[offset:offset + length])
        offset += length
    return pieces


def decode(pieces, tokens):
    """Decode as run.c does: "<0xNN>" pieces are raw bytes, and the leading space after BOS is dropped."""
    out = bytearray()
    prev = BOS_ID
    for token in tokens:
        piece = pieces[token].replace("\u2581".encode(), b" ")
        if prev == BOS_ID and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        out += piece
        prev = token
    return out.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------

class CheckFailed(Exception):
    pass


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_models(config, weights, paths, pieces):
    """Run all checks; print one OK line per passed check and return the figures."""
    results = {}
    reference = ReferenceModel(config, weights)
    ref_tokens, ref_logits = greedy_decode(reference.forward, GENERATED_TOKENS)
    text = decode(pieces, ref_tokens)
    first_line = text.split("\n")[0]
    require(text.startswith(EXPECTED_START),
            f"reference text starts with {text[:80]!r}, expected {EXPECTED_START!r}")
    print(f"OK reference text: {EXPECTED_START}")
    results["text"] = text

    models = {name: OnnxModel(path, config) for name, path in paths.items()}
    step_logits = {}
    for name, model in models.items():
        tokens, logits = onnx_greedy_decode(model, GENERATED_TOKENS)
        first_diff = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens)) if a != b), None)
        if first_diff is not None:
            raise CheckFailed(f"{name}: greedy token {first_diff} is {tokens[first_diff]}, "
                              f"reference has {ref_tokens[first_diff]}")
        error = max_step_error(logits, ref_logits)
        require(error <= MAX_RELATIVE_ERROR, f"{name}: decode logits differ from the reference by {error:.3g}")
        print(f"OK {name}: {GENERATED_TOKENS} greedy tokens match the reference")
        results[f"{name} decode vs reference"] = error
        step_logits[name] = logits

        prompt = [BOS_ID] + ref_tokens[:PROMPT_TOKENS - 1]
        prefill, _ = model.run(prompt, 0, model.empty_cache())
        error = max_step_error(prefill, logits[:PROMPT_TOKENS])
        require(error <= MAX_RELATIVE_ERROR, f"{name}: prefill logits differ from decode by {error:.3g}")
        print(f"OK {name}: {PROMPT_TOKENS}-token prefill matches token-by-token decode")
        results[f"{name} prefill vs decode"] = error

        head, cache = model.run(prompt[:CHUNK_SPLIT], 0, model.empty_cache())
        tail, _ = model.run(prompt[CHUNK_SPLIT:], CHUNK_SPLIT, cache)
        error = max_step_error(np.concatenate([head, tail]), logits[:PROMPT_TOKENS])
        require(error <= MAX_RELATIVE_ERROR, f"{name}: chunked prefill logits differ from decode by {error:.3g}")
        print(f"OK {name}: prefill of {CHUNK_SPLIT} then {PROMPT_TOKENS - CHUNK_SPLIT} tokens matches decode")
        results[f"{name} chunked prefill vs decode"] = error

    names = list(paths)
    error = max_step_error(step_logits[names[1]], step_logits[names[0]])
    require(error <= MAX_RELATIVE_ERROR, f"{names[1]} and {names[0]} logits differ by {error:.3g}")
    print(f"OK {names[0]} and {names[1]} logits agree")
    results[f"{names[1]} vs {names[0]}"] = error
    results["first_line"] = first_line
    return results


def print_results(results):
    print(f"generated text (first line): {results['first_line']}")
    for key, value in results.items():
        if isinstance(value, float):
            print(f"max relative error, {key}: {value:.3e}")


def serialize(model):
    return model.SerializeToString(deterministic=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", help="path of stories260K.gguf (F32); required unless --check-only")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR,
                        help="folder of the fixtures (default: %(default)s)")
    parser.add_argument("--check-only", action="store_true",
                        help="check the fixtures in --out-dir without writing anything")
    args = parser.parse_args()

    decomposed_path = os.path.join(args.out_dir, DECOMPOSED_NAME)
    opset23_path = os.path.join(args.out_dir, OPSET23_NAME)
    tokenizer_path = os.path.join(args.out_dir, TOKENIZER_NAME)

    if args.check_only:
        config, weights = weights_from_decomposed(onnx.load(decomposed_path))
    elif args.gguf:
        config, weights = read_gguf(args.gguf)
        with open(args.gguf, "rb") as f:
            print(f"read {args.gguf} (sha256 {hashlib.sha256(f.read()).hexdigest()})")
    else:
        parser.error("--gguf is required unless --check-only is given")

    built = {decomposed_path: serialize(build_decomposed(config, weights)),
             opset23_path: serialize(build_opset23(config, weights))}
    if args.check_only:
        for path, data in built.items():
            with open(path, "rb") as f:
                if f.read() != data:
                    sys.exit(f"error: {path} differs from the graph this script builds; "
                             "regenerate it with --gguf")
        print("OK committed graphs equal the rebuilt graphs")
    else:
        # The round trip through the decomposed graph must give back the GGUF
        # weights exactly, or --check-only would check different numbers.
        round_trip_config, round_trip = weights_from_decomposed(onnx.load_from_string(
            built[decomposed_path]))
        if round_trip_config != config or any(
                not np.array_equal(round_trip[name], weights[name]) for name in weights):
            sys.exit("error: the weights read back from the decomposed graph differ from the GGUF weights")
        os.makedirs(args.out_dir, exist_ok=True)
        for path, data in built.items():
            with open(path, "wb") as f:
                f.write(data)
            print(f"wrote {path} ({len(data)} bytes)")

    pieces = read_vocabulary(tokenizer_path)
    try:
        results = check_models(config, weights, {"decomposed": decomposed_path, "opset23": opset23_path},
                               pieces)
    except CheckFailed as error:
        sys.exit(f"error: check failed: {error}")
    print_results(results)


if __name__ == "__main__":
    main()
