// The options of iq-canonicalize switch its rewrites on and off, from a
// flag and from a pipeline.
// RUN: %iq-opt %s --iq-canonicalize=remove-dead-ops=false | FileCheck %s --check-prefix=KEEP
// RUN: %iq-opt %s --iq-canonicalize="fold-hadamard-pairs=false remove-dead-ops=false" | FileCheck %s --check-prefix=NONE
// RUN: %iq-opt %s --pass-pipeline='builtin.module(iq-canonicalize{max-iterations=1})' | FileCheck %s --check-prefix=ONE

// Without dead-op removal the folded pair stays in the IR, unused.
// KEEP-COUNT-4: iq.hadamard
// KEEP: return %arg0
// NONE-COUNT-4: iq.hadamard
// NONE: return %[[D:.*]] :
// A single sweep folds the whole chain, because it visits each definition
// before its uses.
// ONE-NOT: iq.hadamard
// ONE: return %arg0
func.func @chain_of_four(%x: tensor<2x64xf32>) -> tensor<2x64xf32> {
  %a = "iq.hadamard"(%x) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %b = "iq.hadamard"(%a) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %c = "iq.hadamard"(%b) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  %d = "iq.hadamard"(%c) {size = 64 : i64, transposed = false} : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return %d : tensor<2x64xf32>
}
