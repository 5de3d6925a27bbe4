// The IRDL definition rejects structurally invalid iq ops with MLIR's own
// verifier messages.
// RUN: %iq-opt %s --split-input-file --verify-diagnostics

func.func @operand_not_a_tensor(%x: f32) {
  // expected-error@+1 {{expected base type 'builtin.tensor' but got 'builtin.f32'}}
  %y = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (f32) -> tensor<64xf32>
  return
}

// -----

func.func @missing_attribute(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{attribute "epsilon" is expected but not provided}}
  %y = "iq.rms_norm"(%x) : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @unknown_op(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{unregistered operation 'iq.no_such_op' found in dialect ('iq') that does not allow unknown operations}}
  %y = "iq.no_such_op"(%x) : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @unknown_granularity(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{'"per_row"' does not satisfy the constraint}}
  %c, %s, %z = "iq.quantize"(%x) {bits = 4 : i64, signed = false, granularity = "per_row", axis = 1 : i64, group_size = 0 : i64, symmetric = false, clip_ratio = 1.0 : f32}
      : (tensor<2x64xf32>) -> (tensor<2x64xi8>, tensor<2x1xf32>, tensor<2x1xf32>)
  return
}

// -----

func.func @unknown_rope_style(%x: tensor<1x4x64xf32>, %p: tensor<1x4xi64>) {
  // expected-error@+1 {{'"neox"' does not satisfy the constraint}}
  %y = "iq.rope"(%x, %p) {theta = 1.0e4 : f32, head_dim = 8 : i64, style = "neox"} : (tensor<1x4x64xf32>, tensor<1x4xi64>) -> tensor<1x4x64xf32>
  return
}

// -----

func.func @wrong_attribute_kind(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{expected base attribute 'builtin.integer' but got 'builtin.string'}}
  %y = "iq.hadamard"(%x) {size = "64", transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @too_few_operands(%x: tensor<2x64xf32>) {
  // expected-error@+1 {{expects exactly 2 operands, but got 1}}
  %y = "iq.silu_mul"(%x) : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @weight_without_name() {
  // expected-error@+1 {{attribute "name" is expected but not provided}}
  %w = "iq.weight"() {transposed = false} : () -> tensor<4x4xf32>
  return
}
