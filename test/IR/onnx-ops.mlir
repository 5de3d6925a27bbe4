// Imported ONNX ops live in the `onnx` namespace and are checked against
// iq's table of supported ops: name, operand count and result count.
// RUN: %iq-opt %s --split-input-file --verify-diagnostics | FileCheck %s

// CHECK-LABEL: func.func @supported
// CHECK: "onnx.MatMul"
// CHECK: "onnx.NoValue"() : () -> none
// CHECK: "onnx.Slice"
// CHECK: "onnx.com.microsoft.SimplifiedLayerNormalization"
// CHECK: "onnx.Concat"
func.func @supported(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>, %g: tensor<4xf32>, %i: tensor<1xi64>) -> tensor<4x4xf32> {
  %0 = "onnx.MatMul"(%a, %b) : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>
  %none = "onnx.NoValue"() : () -> none
  %1 = "onnx.Slice"(%0, %i, %i, %none, %i) : (tensor<2x4xf32>, tensor<1xi64>, tensor<1xi64>, none, tensor<1xi64>) -> tensor<?x4xf32>
  %2 = "onnx.com.microsoft.SimplifiedLayerNormalization"(%0, %g) {axis = -1 : si64, epsilon = 9.99999974E-6 : f32} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %3 = "onnx.Concat"(%2, %0) {axis = 0 : si64} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
  return %3 : tensor<4x4xf32>
}

// -----

func.func @unknown_onnx_op(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'onnx.Einsum' is not an ONNX op iq supports}}
  %0 = "onnx.Einsum"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @unknown_domain(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'onnx.com.example.RotaryEmbedding' is not an ONNX op iq supports}}
  %0 = "onnx.com.example.RotaryEmbedding"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @too_many_operands(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'onnx.MatMul' op takes 2 to 2 operands, but has 3}}
  %0 = "onnx.MatMul"(%a, %a, %a) : (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @empty_concat() {
  // expected-error@+1 {{'onnx.Concat' op takes at least 1 operands, but has 0}}
  %0 = "onnx.Concat"() {axis = 0 : si64} : () -> tensor<2x3xf32>
  return
}

// -----

func.func @wrong_result_count(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'onnx.DynamicQuantizeLinear' op has 3 to 3 results, but has 1}}
  %0 = "onnx.DynamicQuantizeLinear"(%a) : (tensor<2x3xf32>) -> tensor<2x3xui8>
  return
}

// -----

func.func @bad_no_value(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'onnx.NoValue' op must have no operands and one result of type none}}
  %0 = "onnx.NoValue"() : () -> tensor<2x3xf32>
  return
}
