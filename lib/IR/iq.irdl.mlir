// The iq dialect, defined in IRDL and loaded into every context iq creates.
//
// IRDL in MLIR 19 checks operand and result base types and the presence and
// kind of attributes. It cannot constrain tensor element types or relate
// shapes, so those rules live in the C verifier (lib/IR/Verify.c), which
// iq-opt runs after parsing and after every pass.
//
// Conventions shared by the ops:
// - Activations are float tensors whose last axis is the feature axis.
// - Linear weights are [out_features, in_features], as PyTorch stores them.
// - Quantization scheme attributes: `bits` (2 to 8), `signed` (i1),
//   `granularity` (per_tensor, per_channel, per_token or per_group),
//   `axis` (the axis a scale varies along; ignored for per_tensor),
//   `group_size` (elements per group along `axis`, 0 unless per_group),
//   `symmetric` (i1) and `clip_ratio` (a float in (0, 1]).
irdl.dialect @iq {
  // A named tensor of the weight store that the module's `iq.weight_store`
  // attribute points to. The result type is the tensor's type; with
  // `transposed` true the store holds the transpose of a 2-D result (ONNX
  // exports keep linear weights as [in, out]), which kernels read as is.
  irdl.operation @weight {
    %tensor = irdl.base "!builtin.tensor"
    %string = irdl.base "#builtin.string"
    %transposed = irdl.base "#builtin.integer"
    irdl.results(%tensor)
    irdl.attributes { "name" = %string, "transposed" = %transposed }
  }

  // Token embedding lookup: table [vocab, hidden], ids [batch, seq] of
  // integers, result [batch, seq, hidden].
  irdl.operation @embedding {
    %table = irdl.base "!builtin.tensor"
    %ids = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    irdl.operands(%table, %ids)
    irdl.results(%out)
  }

  // RMSNorm over the last axis: x / sqrt(mean(x^2) + epsilon) * gain. The
  // gain is absent once norm fusion has folded it into the next linears.
  irdl.operation @rms_norm {
    %x = irdl.base "!builtin.tensor"
    %gain = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    %float = irdl.base "#builtin.float"
    irdl.operands(%x, optional %gain)
    irdl.results(%out)
    irdl.attributes { "epsilon" = %float }
  }

  // y = x * weight^T (+ bias): x [..., in], weight [out, in], bias [out].
  irdl.operation @linear {
    %x = irdl.base "!builtin.tensor"
    %weight = irdl.base "!builtin.tensor"
    %bias = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    irdl.operands(%x, %weight, optional %bias)
    irdl.results(%out)
  }

  // Rotary position embedding of every head of x [batch, seq, heads *
  // head_dim] at positions [batch, seq]. `style` is "half" (rotate the two
  // halves of each head, as LLaMA on Hugging Face) or "interleaved" (rotate
  // adjacent pairs, as Meta's original LLaMA code); `theta` is the base of
  // the frequencies theta^(-2i / head_dim).
  irdl.operation @rope {
    %x = irdl.base "!builtin.tensor"
    %positions = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    %theta = irdl.base "#builtin.float"
    %head_dim = irdl.base "#builtin.integer"
    %half = irdl.is "half"
    %interleaved = irdl.is "interleaved"
    %style = irdl.any_of(%half, %interleaved)
    irdl.operands(%x, %positions)
    irdl.results(%out)
    irdl.attributes { "theta" = %theta, "head_dim" = %head_dim, "style" = %style }
  }

  // Causal grouped-query attention with a KV cache. q [batch, seq,
  // num_heads * head_dim]; k and v [batch, seq, num_kv_heads * head_dim];
  // the caches [batch, num_kv_heads, context, head_dim] hold the positions
  // before `positions` [batch, seq]. Results: the attention output [batch,
  // seq, num_heads * head_dim] and the caches with k and v written at
  // `positions`. Query i attends to cache entries up to its own position.
  irdl.operation @attention {
    %q = irdl.base "!builtin.tensor"
    %k = irdl.base "!builtin.tensor"
    %v = irdl.base "!builtin.tensor"
    %k_cache = irdl.base "!builtin.tensor"
    %v_cache = irdl.base "!builtin.tensor"
    %positions = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    %k_cache_out = irdl.base "!builtin.tensor"
    %v_cache_out = irdl.base "!builtin.tensor"
    %num_heads = irdl.base "#builtin.integer"
    %num_kv_heads = irdl.base "#builtin.integer"
    %scale = irdl.base "#builtin.float"
    irdl.operands(%q, %k, %v, %k_cache, %v_cache, %positions)
    irdl.results(%out, %k_cache_out, %v_cache_out)
    irdl.attributes {
      "num_heads" = %num_heads,
      "num_kv_heads" = %num_kv_heads,
      "scale" = %scale
    }
  }

  // The SwiGLU gate of LLaMA's MLP: silu(gate) * up, elementwise.
  irdl.operation @silu_mul {
    %gate = irdl.base "!builtin.tensor"
    %up = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    irdl.operands(%gate, %up)
    irdl.results(%out)
  }

  // The output projection to vocabulary logits: x [..., hidden] times
  // weight [vocab, hidden]^T. Kept apart from iq.linear because its
  // precision is chosen separately.
  irdl.operation @lm_head {
    %x = irdl.base "!builtin.tensor"
    %weight = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    irdl.operands(%x, %weight)
    irdl.results(%out)
  }

  // Quantization of a float tensor to integer codes with the scales and
  // zero points it computed: q = clamp(round_half_even(x / scale) + zero_point).
  // Scale and zero point have the input's shape with the reduced axes set
  // to 1 (per token: [..., 1]; per channel along axis a: size 1 elsewhere).
  irdl.operation @quantize {
    %x = irdl.base "!builtin.tensor"
    %codes = irdl.base "!builtin.tensor"
    %scale = irdl.base "!builtin.tensor"
    %zero_point = irdl.base "!builtin.tensor"
    %bits = irdl.base "#builtin.integer"
    %signed = irdl.base "#builtin.integer"
    %axis = irdl.base "#builtin.integer"
    %group_size = irdl.base "#builtin.integer"
    %symmetric = irdl.base "#builtin.integer"
    %clip_ratio = irdl.base "#builtin.float"
    %per_tensor = irdl.is "per_tensor"
    %per_channel = irdl.is "per_channel"
    %per_token = irdl.is "per_token"
    %per_group = irdl.is "per_group"
    %granularity = irdl.any_of(%per_tensor, %per_channel, %per_token, %per_group)
    irdl.operands(%x)
    irdl.results(%codes, %scale, %zero_point)
    irdl.attributes {
      "bits" = %bits,
      "signed" = %signed,
      "granularity" = %granularity,
      "axis" = %axis,
      "group_size" = %group_size,
      "symmetric" = %symmetric,
      "clip_ratio" = %clip_ratio
    }
  }

  // The inverse map: x = (q - zero_point) * scale, with the same scheme
  // attributes as the iq.quantize that produced the codes.
  irdl.operation @dequantize {
    %codes = irdl.base "!builtin.tensor"
    %scale = irdl.base "!builtin.tensor"
    %zero_point = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    %bits = irdl.base "#builtin.integer"
    %signed = irdl.base "#builtin.integer"
    %axis = irdl.base "#builtin.integer"
    %group_size = irdl.base "#builtin.integer"
    %symmetric = irdl.base "#builtin.integer"
    %clip_ratio = irdl.base "#builtin.float"
    %per_tensor = irdl.is "per_tensor"
    %per_channel = irdl.is "per_channel"
    %per_token = irdl.is "per_token"
    %per_group = irdl.is "per_group"
    %granularity = irdl.any_of(%per_tensor, %per_channel, %per_token, %per_group)
    irdl.operands(%codes, %scale, %zero_point)
    irdl.results(%out)
    irdl.attributes {
      "bits" = %bits,
      "signed" = %signed,
      "granularity" = %granularity,
      "axis" = %axis,
      "group_size" = %group_size,
      "symmetric" = %symmetric,
      "clip_ratio" = %clip_ratio
    }
  }

  // A calibration observer: records its operand x [batch, seq, channels]
  // when the compiled model runs, and computes nothing. `layer` is the
  // decoder layer (the number of layers for the lm_head input) and `point`
  // names the tensor: X (attention-input norm output, the q/k/v input),
  // P (MLP-input norm output, the gate/up input), V (v_proj output),
  // M (o_proj input), Z (down_proj input) or H (lm_head input). It has an
  // effect, so passes must not erase it as dead code.
  irdl.operation @observe {
    %x = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.integer"
    %x_point = irdl.is "X"
    %p_point = irdl.is "P"
    %v_point = irdl.is "V"
    %m_point = irdl.is "M"
    %z_point = irdl.is "Z"
    %h_point = irdl.is "H"
    %point = irdl.any_of(%x_point, %p_point, %v_point, %m_point, %z_point, %h_point)
    irdl.operands(%x)
    irdl.attributes { "layer" = %layer, "point" = %point }
  }

  // Orthonormal Hadamard transform of every contiguous block of `size`
  // elements along the last axis: y = x * H / sqrt(size), or x * H^T /
  // sqrt(size) when `transposed` is 1. `size` is a power of two or K * 2^m
  // for a K of the Sloane tables iq ships.
  irdl.operation @hadamard {
    %x = irdl.base "!builtin.tensor"
    %out = irdl.base "!builtin.tensor"
    %size = irdl.base "#builtin.integer"
    %transposed = irdl.base "#builtin.integer"
    irdl.operands(%x)
    irdl.results(%out)
    irdl.attributes { "size" = %size, "transposed" = %transposed }
  }
}
