// The attention half of one LLaMA decoder layer in iq's canonical ops, at
// stories260K's sizes (hidden 64, 8 query heads, 4 KV heads, head_dim 8),
// with the per-token 4-bit activation quantization and the online Hadamard
// on the o_proj input that W4A4 inserts. The pair of Hadamards before the
// o_proj quantizer cancels and is folded by iq-canonicalize.
func.func @attention_block(%x: tensor<1x?x64xf32>, %positions: tensor<1x?xi64>,
                           %k_cache: tensor<1x4x512x8xf32>, %v_cache: tensor<1x4x512x8xf32>)
    -> (tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>) {
  %c1 = arith.constant 1 : index
  %seq = tensor.dim %x, %c1 : tensor<1x?x64xf32>
  %norm = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %codes, %scale, %zero = "iq.quantize"(%norm) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<1x?x64xf32>) -> (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>)
  %xq = "iq.dequantize"(%codes, %scale, %zero) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>) -> tensor<1x?x64xf32>
  %wq = "iq.weight"() {name = "blk.0.attn_q.weight"} : () -> tensor<64x64xf32>
  %wk = "iq.weight"() {name = "blk.0.attn_k.weight"} : () -> tensor<32x64xf32>
  %wv = "iq.weight"() {name = "blk.0.attn_v.weight"} : () -> tensor<32x64xf32>
  %wo = "iq.weight"() {name = "blk.0.attn_output.weight"} : () -> tensor<64x64xf32>
  %q = "iq.linear"(%xq, %wq) : (tensor<1x?x64xf32>, tensor<64x64xf32>) -> tensor<1x?x64xf32>
  %k = "iq.linear"(%xq, %wk) : (tensor<1x?x64xf32>, tensor<32x64xf32>) -> tensor<1x?x32xf32>
  %v = "iq.linear"(%xq, %wv) : (tensor<1x?x64xf32>, tensor<32x64xf32>) -> tensor<1x?x32xf32>
  %q4 = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [1, %seq, 8, 8] : tensor<1x?x64xf32> into tensor<1x?x8x8xf32>
  %k4 = tensor.expand_shape %k [[0], [1], [2, 3]] output_shape [1, %seq, 4, 8] : tensor<1x?x32xf32> into tensor<1x?x4x8xf32>
  %v4 = tensor.expand_shape %v [[0], [1], [2, 3]] output_shape [1, %seq, 4, 8] : tensor<1x?x32xf32> into tensor<1x?x4x8xf32>
  %qt = tensor.empty(%seq) : tensor<1x8x?x8xf32>
  %kt = tensor.empty(%seq) : tensor<1x4x?x8xf32>
  %vt = tensor.empty(%seq) : tensor<1x4x?x8xf32>
  %qh = linalg.transpose ins(%q4 : tensor<1x?x8x8xf32>) outs(%qt : tensor<1x8x?x8xf32>) permutation = [0, 2, 1, 3]
  %kh = linalg.transpose ins(%k4 : tensor<1x?x4x8xf32>) outs(%kt : tensor<1x4x?x8xf32>) permutation = [0, 2, 1, 3]
  %vh = linalg.transpose ins(%v4 : tensor<1x?x4x8xf32>) outs(%vt : tensor<1x4x?x8xf32>) permutation = [0, 2, 1, 3]
  %qr = "iq.rope"(%qh, %positions) {theta = 1.0e4 : f32, style = "half"} : (tensor<1x8x?x8xf32>, tensor<1x?xi64>) -> tensor<1x8x?x8xf32>
  %kr = "iq.rope"(%kh, %positions) {theta = 1.0e4 : f32, style = "half"} : (tensor<1x4x?x8xf32>, tensor<1x?xi64>) -> tensor<1x4x?x8xf32>
  %out, %k_next, %v_next = "iq.attention"(%qr, %kr, %vh, %k_cache, %v_cache, %positions)
      {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.353553385 : f32}
      : (tensor<1x8x?x8xf32>, tensor<1x4x?x8xf32>, tensor<1x4x?x8xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>, tensor<1x?xi64>)
      -> (tensor<1x8x?x8xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>)
  %ot = tensor.empty(%seq) : tensor<1x?x8x8xf32>
  %o4 = linalg.transpose ins(%out : tensor<1x8x?x8xf32>) outs(%ot : tensor<1x?x8x8xf32>) permutation = [0, 2, 1, 3]
  %o = tensor.collapse_shape %o4 [[0], [1], [2, 3]] : tensor<1x?x8x8xf32> into tensor<1x?x64xf32>
  %h1 = "iq.hadamard"(%o) {size = 64 : i64, transposed = false} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %h2 = "iq.hadamard"(%h1) {size = 64 : i64, transposed = true} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %y = "iq.linear"(%h2, %wo) : (tensor<1x?x64xf32>, tensor<64x64xf32>) -> tensor<1x?x64xf32>
  %r = arith.addf %x, %y : tensor<1x?x64xf32>
  return %r, %k_next, %v_next : tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>
}
