// The attention half of one LLaMA decoder layer in iq's canonical ops, at
// stories260K's sizes (hidden 64, 8 query heads, 4 KV heads, head_dim 8,
// a KV cache of 512 positions), with the per-token 4-bit quantization of
// the attention input that W4A4 inserts and an online Hadamard pair on the
// o_proj input. The pair cancels and is folded by iq-canonicalize.
func.func @attention_block(%x: tensor<1x?x64xf32>, %positions: tensor<1x?xi64>,
                           %k_cache: tensor<1x4x512x8xf32>, %v_cache: tensor<1x4x512x8xf32>)
    -> (tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>) {
  %norm = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %codes, %scale, %zero = "iq.quantize"(%norm) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<1x?x64xf32>) -> (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>)
  %xq = "iq.dequantize"(%codes, %scale, %zero) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>) -> tensor<1x?x64xf32>
  %wq = "iq.weight"() {name = "model.layers.0.self_attn.q_proj.weight.T", transposed = true} : () -> tensor<64x64xf32>
  %wk = "iq.weight"() {name = "model.layers.0.self_attn.k_proj.weight.T", transposed = true} : () -> tensor<32x64xf32>
  %wv = "iq.weight"() {name = "model.layers.0.self_attn.v_proj.weight.T", transposed = true} : () -> tensor<32x64xf32>
  %wo = "iq.weight"() {name = "model.layers.0.self_attn.o_proj.weight.T", transposed = true} : () -> tensor<64x64xf32>
  %q = "iq.linear"(%xq, %wq) : (tensor<1x?x64xf32>, tensor<64x64xf32>) -> tensor<1x?x64xf32>
  %k = "iq.linear"(%xq, %wk) : (tensor<1x?x64xf32>, tensor<32x64xf32>) -> tensor<1x?x32xf32>
  %v = "iq.linear"(%xq, %wv) : (tensor<1x?x64xf32>, tensor<32x64xf32>) -> tensor<1x?x32xf32>
  %qr = "iq.rope"(%q, %positions) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "half"} : (tensor<1x?x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
  %kr = "iq.rope"(%k, %positions) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "half"} : (tensor<1x?x32xf32>, tensor<1x?xi64>) -> tensor<1x?x32xf32>
  %out, %k_next, %v_next = "iq.attention"(%qr, %kr, %v, %k_cache, %v_cache, %positions)
      {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.353553385 : f32}
      : (tensor<1x?x64xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>, tensor<1x?xi64>)
      -> (tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>)
  %h1 = "iq.hadamard"(%out) {size = 64 : i64, transposed = false} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %h2 = "iq.hadamard"(%h1) {size = 64 : i64, transposed = true} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %y = "iq.linear"(%h2, %wo) : (tensor<1x?x64xf32>, tensor<64x64xf32>) -> tensor<1x?x64xf32>
  %r = arith.addf %x, %y : tensor<1x?x64xf32>
  return %r, %k_next, %v_next : tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>
}
