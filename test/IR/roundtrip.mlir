// Every iq op parses, verifies and prints back unchanged. The second RUN
// line checks that printing is a fixed point: the output, read again,
// prints exactly the same text.
// RUN: %iq-opt %s | FileCheck %s
// RUN: %iq-opt %s -o %t.first.mlir && %iq-opt %t.first.mlir -o %t.second.mlir
// RUN: diff %t.first.mlir %t.second.mlir

// A weight stored as is, and one stored as [in, out] as ONNX exports keep
// linear weights.
// CHECK-LABEL: func.func @weight
// CHECK: "iq.weight"() {name = "layers.0.attention.wq.weight", transposed = false} : () -> tensor<64x64xf32>
// CHECK: "iq.weight"() {name = "layers.0.attention.wk.weight.T", transposed = true} : () -> tensor<32x64xf32>
func.func @weight() -> (tensor<64x64xf32>, tensor<32x64xf32>) {
  %w = "iq.weight"() {name = "layers.0.attention.wq.weight", transposed = false} : () -> tensor<64x64xf32>
  %t = "iq.weight"() {name = "layers.0.attention.wk.weight.T", transposed = true} : () -> tensor<32x64xf32>
  return %w, %t : tensor<64x64xf32>, tensor<32x64xf32>
}

// CHECK-LABEL: func.func @embedding
// CHECK: "iq.embedding"(%arg0, %arg1) : (tensor<512x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
func.func @embedding(%table: tensor<512x64xf32>, %ids: tensor<1x?xi64>) -> tensor<1x?x64xf32> {
  %x = "iq.embedding"(%table, %ids) : (tensor<512x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
  return %x : tensor<1x?x64xf32>
}

// CHECK-LABEL: func.func @rms_norm
// CHECK: "iq.rms_norm"(%arg0, %arg1) {epsilon = 9.99999974E-6 : f32} : (tensor<1x?x64xf32>, tensor<64xf32>) -> tensor<1x?x64xf32>
// CHECK: "iq.rms_norm"(%arg0) {epsilon = 9.99999974E-6 : f32} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
func.func @rms_norm(%x: tensor<1x?x64xf32>, %gain: tensor<64xf32>) -> (tensor<1x?x64xf32>, tensor<1x?x64xf32>) {
  %with_gain = "iq.rms_norm"(%x, %gain) {epsilon = 1.0e-5 : f32} : (tensor<1x?x64xf32>, tensor<64xf32>) -> tensor<1x?x64xf32>
  %fused = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  return %with_gain, %fused : tensor<1x?x64xf32>, tensor<1x?x64xf32>
}

// CHECK-LABEL: func.func @linear
// CHECK: "iq.linear"(%arg0, %arg1) : (tensor<1x?x64xf32>, tensor<172x64xf32>) -> tensor<1x?x172xf32>
// CHECK: "iq.linear"(%arg0, %arg1, %arg2) : (tensor<1x?x64xf32>, tensor<172x64xf32>, tensor<172xf32>) -> tensor<1x?x172xf32>
func.func @linear(%x: tensor<1x?x64xf32>, %w: tensor<172x64xf32>, %b: tensor<172xf32>) -> (tensor<1x?x172xf32>, tensor<1x?x172xf32>) {
  %y = "iq.linear"(%x, %w) : (tensor<1x?x64xf32>, tensor<172x64xf32>) -> tensor<1x?x172xf32>
  %z = "iq.linear"(%x, %w, %b) : (tensor<1x?x64xf32>, tensor<172x64xf32>, tensor<172xf32>) -> tensor<1x?x172xf32>
  return %y, %z : tensor<1x?x172xf32>, tensor<1x?x172xf32>
}

// CHECK-LABEL: func.func @rope
// CHECK: "iq.rope"(%arg0, %arg1) {head_dim = 8 : i64, style = "half", theta = 1.000000e+04 : f32} : (tensor<1x?x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
// CHECK: "iq.rope"(%arg0, %arg1) {head_dim = 8 : i64, style = "interleaved", theta = 5.000000e+05 : f32}
func.func @rope(%x: tensor<1x?x64xf32>, %positions: tensor<1x?xi64>) -> (tensor<1x?x64xf32>, tensor<1x?x64xf32>) {
  %half = "iq.rope"(%x, %positions) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "half"} : (tensor<1x?x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
  %pairs = "iq.rope"(%x, %positions) {theta = 5.0e5 : f32, head_dim = 8 : i64, style = "interleaved"} : (tensor<1x?x64xf32>, tensor<1x?xi64>) -> tensor<1x?x64xf32>
  return %half, %pairs : tensor<1x?x64xf32>, tensor<1x?x64xf32>
}

// Grouped-query attention, 8 query heads over 4 KV heads of 8, with a
// cache of 512 positions.
// CHECK-LABEL: func.func @attention
// CHECK: "iq.attention"(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5) {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.353553385 : f32}
// CHECK-SAME: -> (tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>)
func.func @attention(%q: tensor<1x?x64xf32>, %k: tensor<1x?x32xf32>, %v: tensor<1x?x32xf32>,
                     %k_cache: tensor<1x4x512x8xf32>, %v_cache: tensor<1x4x512x8xf32>,
                     %positions: tensor<1x?xi64>) -> tensor<1x?x64xf32> {
  %out, %k_next, %v_next = "iq.attention"(%q, %k, %v, %k_cache, %v_cache, %positions)
      {num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.353553385 : f32}
      : (tensor<1x?x64xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>, tensor<1x?xi64>)
      -> (tensor<1x?x64xf32>, tensor<1x4x512x8xf32>, tensor<1x4x512x8xf32>)
  return %out : tensor<1x?x64xf32>
}

// CHECK-LABEL: func.func @silu_mul
// CHECK: "iq.silu_mul"(%arg0, %arg1) : (tensor<1x?x172xf32>, tensor<1x?x172xf32>) -> tensor<1x?x172xf32>
func.func @silu_mul(%gate: tensor<1x?x172xf32>, %up: tensor<1x?x172xf32>) -> tensor<1x?x172xf32> {
  %y = "iq.silu_mul"(%gate, %up) : (tensor<1x?x172xf32>, tensor<1x?x172xf32>) -> tensor<1x?x172xf32>
  return %y : tensor<1x?x172xf32>
}

// CHECK-LABEL: func.func @lm_head
// CHECK: "iq.lm_head"(%arg0, %arg1) : (tensor<1x?x64xf32>, tensor<512x64xf32>) -> tensor<1x?x512xf32>
func.func @lm_head(%x: tensor<1x?x64xf32>, %w: tensor<512x64xf32>) -> tensor<1x?x512xf32> {
  %logits = "iq.lm_head"(%x, %w) : (tensor<1x?x64xf32>, tensor<512x64xf32>) -> tensor<1x?x512xf32>
  return %logits : tensor<1x?x512xf32>
}

// Per-token asymmetric 4-bit activations, the W4A4 scheme's activation side.
// CHECK-LABEL: func.func @quantize_per_token
// CHECK: %[[Q:.*]]:3 = "iq.quantize"(%arg0) {axis = 2 : i64, bits = 4 : i64, clip_ratio = 0.899999976 : f32, granularity = "per_token", group_size = 0 : i64, signed = false, symmetric = false}
// CHECK-SAME: (tensor<1x?x64xf32>) -> (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>)
// CHECK: "iq.dequantize"(%[[Q]]#0, %[[Q]]#1, %[[Q]]#2) {axis = 2 : i64, bits = 4 : i64, clip_ratio = 0.899999976 : f32, granularity = "per_token", group_size = 0 : i64, signed = false, symmetric = false}
// CHECK-SAME: (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>) -> tensor<1x?x64xf32>
func.func @quantize_per_token(%x: tensor<1x?x64xf32>) -> tensor<1x?x64xf32> {
  %codes, %scale, %zero = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 0.9 : f32}
      : (tensor<1x?x64xf32>) -> (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>)
  %y = "iq.dequantize"(%codes, %scale, %zero) {bits = 4 : i64, signed = false, granularity = "per_token", axis = 2 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 0.9 : f32}
      : (tensor<1x?x64xi8>, tensor<1x?x1xf32>, tensor<1x?x1xf32>) -> tensor<1x?x64xf32>
  return %y : tensor<1x?x64xf32>
}

// Weights per output channel in true 4-bit codes, and groups of 32.
// CHECK-LABEL: func.func @quantize_weights
// CHECK: "iq.quantize"(%arg0) {axis = 1 : i64, bits = 4 : i64, clip_ratio = 1.000000e+00 : f32, granularity = "per_channel", group_size = 0 : i64, signed = true, symmetric = true}
// CHECK-SAME: -> (tensor<172x64xi4>, tensor<172x1xf32>, tensor<172x1xf32>)
// CHECK: "iq.quantize"(%arg0) {axis = 1 : i64, bits = 4 : i64, clip_ratio = 1.000000e+00 : f32, granularity = "per_group", group_size = 32 : i64, signed = false, symmetric = false}
// CHECK-SAME: -> (tensor<172x64xi8>, tensor<172x2xf32>, tensor<172x2xf32>)
func.func @quantize_weights(%w: tensor<172x64xf32>) -> (tensor<172x64xi4>, tensor<172x64xi8>) {
  %c, %s, %z = "iq.quantize"(%w) {bits = 4 : i64, signed = true, granularity = "per_channel", axis = 1 : i64, group_size = 0 : i64, symmetric = true, clip_ratio = 1.0 : f32}
      : (tensor<172x64xf32>) -> (tensor<172x64xi4>, tensor<172x1xf32>, tensor<172x1xf32>)
  %gc, %gs, %gz = "iq.quantize"(%w) {bits = 4 : i64, signed = false, granularity = "per_group", axis = 1 : i64, group_size = 32 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<172x64xf32>) -> (tensor<172x64xi8>, tensor<172x2xf32>, tensor<172x2xf32>)
  return %c, %gc : tensor<172x64xi4>, tensor<172x64xi8>
}

// CHECK-LABEL: func.func @hadamard
// CHECK: "iq.hadamard"(%arg0) {size = 64 : i64, transposed = false} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
// CHECK: "iq.hadamard"(%arg1) {size = 172 : i64, transposed = true} : (tensor<1x?x172xf32>) -> tensor<1x?x172xf32>
func.func @hadamard(%x: tensor<1x?x64xf32>, %h: tensor<1x?x172xf32>) -> (tensor<1x?x64xf32>, tensor<1x?x172xf32>) {
  %y = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  %z = "iq.hadamard"(%h) {size = 172 : i64, transposed = true} : (tensor<1x?x172xf32>) -> tensor<1x?x172xf32>
  return %y, %z : tensor<1x?x64xf32>, tensor<1x?x172xf32>
}
