// iq passes mix with upstream MLIR passes, in --pass-pipeline and as
// separate flags, at module level and nested under func.func.
// RUN: %iq-opt %s --pass-pipeline='builtin.module(iq-canonicalize,cse,canonicalize)' | FileCheck %s
// RUN: %iq-opt %s --iq-canonicalize --cse --canonicalize | FileCheck %s
// RUN: %iq-opt %s --pass-pipeline='builtin.module(func.func(cse,iq-canonicalize),canonicalize,iq-verify)' | FileCheck %s
// RUN: %iq-opt %s --pass-pipeline='iq-canonicalize{max-iterations=3 remove-dead-ops=true},func.func(canonicalize,cse)' | FileCheck %s

// The two identical arith.addf are merged by cse, the cancelling Hadamards
// by iq-canonicalize, and the unused iq.weight is erased; canonicalize
// alone would keep both iq ops because IRDL ops have no traits.
// CHECK-LABEL: func.func @mixed
// CHECK-NOT: iq.
// CHECK: %[[SUM:.*]] = arith.addf %arg0, %arg0
// CHECK-NEXT: %[[PRODUCT:.*]] = arith.mulf %[[SUM]], %[[SUM]]
// CHECK-NEXT: return %[[PRODUCT]]
func.func @mixed(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %unused = "iq.weight"() {name = "unused", transposed = false} : () -> tensor<64xf32>
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 64 : i64, transposed = true} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %s1 = arith.addf %b, %b : tensor<2x64xf32>
  %s2 = arith.addf %b, %b : tensor<2x64xf32>
  %p = arith.mulf %s1, %s2 : tensor<2x64xf32>
  return %p : tensor<2x64xf32>
}
