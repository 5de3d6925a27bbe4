// iq-canonicalize folds Hadamard pairs that cancel and erases unused iq ops,
// which upstream canonicalize cannot do for IRDL-defined ops.
// RUN: %iq-opt %s --split-input-file --iq-canonicalize | FileCheck %s

// Normalized Sylvester Hadamards of a power-of-two size are symmetric and
// orthogonal, so applying one twice is the identity.
// CHECK-LABEL: func.func @power_of_two_pair
// CHECK-NOT: iq.hadamard
// CHECK: return %arg0
func.func @power_of_two_pair(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return %b : tensor<2x64xf32>
}

// -----

// A K * 2^m table is not symmetric: H then H again is not the identity,
// but H then H^T is.
// CHECK-LABEL: func.func @k_size_pairs
// CHECK: %[[A:.*]] = "iq.hadamard"(%arg0) {size = 172 : i64, transposed = false}
// CHECK: %[[B:.*]] = "iq.hadamard"(%[[A]]) {size = 172 : i64, transposed = false}
// CHECK-NOT: iq.hadamard
// CHECK: return %[[B]], %arg0
func.func @k_size_pairs(%x: tensor<2x172xf32>) -> (tensor<2x172xf32>, tensor<2x172xf32>) {
  %a = "iq.hadamard"(%x) {size = 172 : i64, transposed = false} : (tensor<2x172xf32>) -> tensor<2x172xf32>
  %b = "iq.hadamard"(%a) {size = 172 : i64, transposed = false} : (tensor<2x172xf32>) -> tensor<2x172xf32>
  %c = "iq.hadamard"(%a) {size = 172 : i64, transposed = true} : (tensor<2x172xf32>) -> tensor<2x172xf32>
  return %b, %c : tensor<2x172xf32>, tensor<2x172xf32>
}

// -----

// Transforms of different block sizes do not cancel.
// CHECK-LABEL: func.func @different_sizes
// CHECK-COUNT-2: iq.hadamard
func.func @different_sizes(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 32 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return %b : tensor<2x64xf32>
}

// -----

// Four transforms in a row fold to nothing.
// CHECK-LABEL: func.func @chain_of_four
// CHECK-NOT: iq.hadamard
// CHECK: return %arg0
func.func @chain_of_four(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 64 : i64, transposed = true} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %c = "iq.hadamard"(%b) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %d = "iq.hadamard"(%c) {size = 64 : i64, transposed = true} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return %d : tensor<2x64xf32>
}

// -----

// Unused iq ops are erased together with the ops that only fed them;
// used ones stay.
// CHECK-LABEL: func.func @dead_ops
// CHECK-NOT: "layers.0.unused"
// CHECK-NOT: iq.rms_norm
// CHECK: %[[W:.*]] = "iq.weight"() {name = "layers.0.used", transposed = false}
// CHECK: %[[Y:.*]] = "iq.linear"(%arg0, %[[W]])
// CHECK: return %[[Y]]
func.func @dead_ops(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %unused = "iq.weight"() {name = "layers.0.unused", transposed = false} : () -> tensor<64xf32>
  %n = "iq.rms_norm"(%x, %unused) {epsilon = 1.0e-5 : f32} : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x64xf32>
  %w = "iq.weight"() {name = "layers.0.used", transposed = false} : () -> tensor<64x64xf32>
  %y = "iq.linear"(%x, %w) : (tensor<2x64xf32>, tensor<64x64xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}
