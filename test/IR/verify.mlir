// The C verifier checks what IRDL cannot: element types, shapes that must
// agree, and attribute values.
// RUN: %iq-opt %s --split-input-file --verify-diagnostics

func.func @weight_empty_name() {
  // expected-error@+1 {{'iq.weight' op attribute 'name' must name a tensor of the weight store, but is empty}}
  %w = "iq.weight"() {name = "", transposed = false} : () -> tensor<4x4xf32>
  return
}

// -----

func.func @embedding_float_ids(%table: tensor<512x64xf32>, %ids: tensor<1x4xf32>) {
  // expected-error@+1 {{'iq.embedding' op ids must have an integer element type}}
  %x = "iq.embedding"(%table, %ids) : (tensor<512x64xf32>, tensor<1x4xf32>) -> tensor<1x4x64xf32>
  return
}

// -----

func.func @embedding_wrong_hidden(%table: tensor<512x64xf32>, %ids: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.embedding' op result dimension 2 is 32, but the table's hidden size is 64}}
  %x = "iq.embedding"(%table, %ids) : (tensor<512x64xf32>, tensor<1x4xi64>) -> tensor<1x4x32xf32>
  return
}

// -----

func.func @rms_norm_integer_input(%x: tensor<2x64xi32>) {
  // expected-error@+1 {{'iq.rms_norm' op input must have a floating-point element type}}
  %y = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<2x64xi32>) -> tensor<2x64xi32>
  return
}

// -----

func.func @rms_norm_gain_size(%x: tensor<2x64xf32>, %gain: tensor<32xf32>) {
  // expected-error@+1 {{'iq.rms_norm' op gain dimension 0 is 32, but the input's last dimension is 64}}
  %y = "iq.rms_norm"(%x, %gain) {epsilon = 1.0e-5 : f32} : (tensor<2x64xf32>, tensor<32xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @rms_norm_negative_epsilon(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.rms_norm' op attribute 'epsilon' must be a positive finite number, but is -1e-05}}
  %y = "iq.rms_norm"(%x) {epsilon = -1.0e-5 : f64} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @linear_feature_mismatch(%x: tensor<2x64xf32>, %w: tensor<172x32xf32>) {
  // expected-error@+1 {{'iq.linear' op weight has 32 input features, but the input's last dimension is 64}}
  %y = "iq.linear"(%x, %w) : (tensor<2x64xf32>, tensor<172x32xf32>) -> tensor<2x172xf32>
  return
}

// -----

func.func @linear_wrong_result(%x: tensor<2x64xf32>, %w: tensor<172x64xf32>) {
  // expected-error@+1 {{'iq.linear' op result dimension 1 is 64, but the weight's output features is 172}}
  %y = "iq.linear"(%x, %w) : (tensor<2x64xf32>, tensor<172x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @linear_bias_size(%x: tensor<2x64xf32>, %w: tensor<172x64xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{'iq.linear' op bias dimension 0 is 64, but the weight's output features is 172}}
  %y = "iq.linear"(%x, %w, %b) : (tensor<2x64xf32>, tensor<172x64xf32>, tensor<64xf32>) -> tensor<2x172xf32>
  return
}

// -----

func.func @lm_head_weight_rank(%x: tensor<2x64xf32>, %w: tensor<512x64x1xf32>) {
  // expected-error@+1 {{'iq.lm_head' op weight ([out_features, in_features]) must have rank 2, but has rank 3}}
  %y = "iq.lm_head"(%x, %w) : (tensor<2x64xf32>, tensor<512x64x1xf32>) -> tensor<2x512xf32>
  return
}

// -----

func.func @rope_odd_head_dim(%x: tensor<1x4x56xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.rope' op attribute 'head_dim' must be positive and even to rotate pairs, but is 7}}
  %y = "iq.rope"(%x, %p) {theta = 1.0e4 : f32, head_dim = 7 : i64, style = "half"} : (tensor<1x4x56xf32>, tensor<1x4xi64>) -> tensor<1x4x56xf32>
  return
}

// -----

func.func @rope_heads_not_dividing(%x: tensor<1x4x60xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.rope' op input last dimension (60) is not a multiple of 'head_dim' (8)}}
  %y = "iq.rope"(%x, %p) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "half"} : (tensor<1x4x60xf32>, tensor<1x4xi64>) -> tensor<1x4x60xf32>
  return
}

// -----

func.func @rope_positions_length(%x: tensor<1x4x64xf32>, %p: tensor<1x5xi64>) {
  // expected-error@+1 {{'iq.rope' op positions dimension 1 is 5, but the sequence length is 4}}
  %y = "iq.rope"(%x, %p) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "half"} : (tensor<1x4x64xf32>, tensor<1x5xi64>) -> tensor<1x4x64xf32>
  return
}

// -----

func.func @attention_heads_not_multiple(%q: tensor<1x4x48xf32>, %k: tensor<1x4x32xf32>, %v: tensor<1x4x32xf32>,
                                         %kc: tensor<1x4x16x8xf32>, %vc: tensor<1x4x16x8xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.attention' op 'num_heads' (6) must be a multiple of 'num_kv_heads' (4)}}
  %o, %kn, %vn = "iq.attention"(%q, %k, %v, %kc, %vc, %p) {num_heads = 6 : i64, num_kv_heads = 4 : i64, scale = 0.35 : f32}
      : (tensor<1x4x48xf32>, tensor<1x4x32xf32>, tensor<1x4x32xf32>, tensor<1x4x16x8xf32>, tensor<1x4x16x8xf32>, tensor<1x4xi64>)
      -> (tensor<1x4x48xf32>, tensor<1x4x16x8xf32>, tensor<1x4x16x8xf32>)
  return
}

// -----

func.func @attention_kv_width(%q: tensor<1x4x64xf32>, %k: tensor<1x4x16xf32>, %v: tensor<1x4x32xf32>,
                               %kc: tensor<1x4x16x8xf32>, %vc: tensor<1x4x16x8xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.attention' op k last dimension is 16, but 4 heads of 8 make 32}}
  %o, %kn, %vn = "iq.attention"(%q, %k, %v, %kc, %vc, %p) {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.35 : f32}
      : (tensor<1x4x64xf32>, tensor<1x4x16xf32>, tensor<1x4x32xf32>, tensor<1x4x16x8xf32>, tensor<1x4x16x8xf32>, tensor<1x4xi64>)
      -> (tensor<1x4x64xf32>, tensor<1x4x16x8xf32>, tensor<1x4x16x8xf32>)
  return
}

// -----

func.func @attention_cache_heads(%q: tensor<1x4x64xf32>, %k: tensor<1x4x32xf32>, %v: tensor<1x4x32xf32>,
                                  %kc: tensor<1x2x16x8xf32>, %vc: tensor<1x4x16x8xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'iq.attention' op k_cache dimension 1 is 2, but 'num_kv_heads' is 4}}
  %o, %kn, %vn = "iq.attention"(%q, %k, %v, %kc, %vc, %p) {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.35 : f32}
      : (tensor<1x4x64xf32>, tensor<1x4x32xf32>, tensor<1x4x32xf32>, tensor<1x2x16x8xf32>, tensor<1x4x16x8xf32>, tensor<1x4xi64>)
      -> (tensor<1x4x64xf32>, tensor<1x2x16x8xf32>, tensor<1x4x16x8xf32>)
  return
}

// -----

func.func @weight_transposed_rank(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.weight' op only a 2-D weight can be stored transposed, but the result has rank 1}}
  %w = "iq.weight"() {name = "gain", transposed = true} : () -> tensor<64xf32>
  return
}

// -----

func.func @silu_mul_shape_mismatch(%gate: tensor<2x172xf32>, %up: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.silu_mul' op up dimension 1 is 64, but gate has 172}}
  %y = "iq.silu_mul"(%gate, %up) : (tensor<2x172xf32>, tensor<2x64xf32>) -> tensor<2x172xf32>
  return
}

// -----

func.func @quantize_bits_out_of_range(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op attribute 'bits' must be between 2 and 8, but is 16}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 16 : i64, signed = false, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi16>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_codes_too_narrow(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op codes of 4 bits do not fit the 2-bit element type}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi2>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_clip_ratio(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op attribute 'clip_ratio' must be in (0, 1], but is 1.5}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.5 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_scale_shape(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op scale dimension 1 is 64, but must be 1 (one scale along the quantization axis)}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x64xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_group_without_size(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op per_group quantization needs a positive 'group_size', but it is 0}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_group", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x2xf32>, tensor<2x2xf32>)
  return
}

// -----

func.func @quantize_group_not_dividing(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op dimension 1 (64) is not a multiple of 'group_size' (48)}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_group", axis = 1 : i64, group_size = 48 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_axis_out_of_range(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op attribute 'axis' must be in [0, 2) for a rank-2 tensor, but is 2}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_channel", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @quantize_flag_not_boolean(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'iq.quantize' op attribute 'signed' must be a boolean (true or false)}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = 1 : i64, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @dequantize_float_codes(%c: tensor<2x64xf32>, %s: tensor<2x1xf32>, %z: tensor<2x1xf32>) {
  // expected-error@+1 {{'iq.dequantize' op codes must have an integer element type}}
  %y = "iq.dequantize"(%c, %s, %z) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>, tensor<2x1xf32>, tensor<2x1xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @hadamard_unsupported_size(%x: tensor<2x100xf32>) {
  // expected-error@+1 {{'iq.hadamard' op no Hadamard matrix of size 100: use a power of two or K * 2^m}}
  %y = "iq.hadamard"(%x) {size = 100 : i64, transposed = false} : (tensor<2x100xf32>) -> tensor<2x100xf32>
  return
}

// -----

func.func @hadamard_size_not_dividing(%x: tensor<2x100xf32>) {
  // expected-error@+1 {{'iq.hadamard' op the input's last dimension (100) is not a multiple of 'size' (64)}}
  %y = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x100xf32>) -> tensor<2x100xf32>
  return
}

// -----

// Sizes that the K * 2^m construction covers are accepted.
func.func @hadamard_k_sizes(%a: tensor<2x11008xf32>, %b: tensor<2x1536xf32>, %c: tensor<2x14336xf32>) {
  %x = "iq.hadamard"(%a) {size = 11008 : i64, transposed = false} : (tensor<2x11008xf32>) -> tensor<2x11008xf32>
  %y = "iq.hadamard"(%b) {size = 1536 : i64, transposed = false} : (tensor<2x1536xf32>) -> tensor<2x1536xf32>
  %z = "iq.hadamard"(%c) {size = 14336 : i64, transposed = true} : (tensor<2x14336xf32>) -> tensor<2x14336xf32>
  return
}
