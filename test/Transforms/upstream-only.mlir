// Upstream canonicalize and cse leave iq ops alone: IRDL ops carry no
// traits, so MLIR cannot know they are free of side effects. This is why
// iq-canonicalize exists.
// RUN: %iq-opt %s --canonicalize --cse | FileCheck %s

// CHECK-LABEL: func.func @kept
// CHECK: "iq.weight"() {name = "unused", transposed = false}
// CHECK-COUNT-2: iq.hadamard
func.func @kept(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %unused = "iq.weight"() {name = "unused", transposed = false} : () -> tensor<64xf32>
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 64 : i64, transposed = true} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return %b : tensor<2x64xf32>
}
