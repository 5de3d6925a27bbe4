// iq.observe parses, verifies and prints back unchanged, and
// iq-canonicalize keeps it: an observer has an effect although it has no
// results.
// RUN: %iq-opt %s | FileCheck %s
// RUN: %iq-opt %s --iq-canonicalize | FileCheck %s

// CHECK-LABEL: func.func @observe
// CHECK: "iq.observe"(%arg0) {layer = 3 : i64, point = "X"} : (tensor<1x?x64xf32>) -> ()
// CHECK: "iq.observe"(%arg1) {layer = 5 : i64, point = "H"} : (tensor<1x?x64xf32>) -> ()
func.func @observe(%x: tensor<1x?x64xf32>, %h: tensor<1x?x64xf32>) {
  "iq.observe"(%x) {layer = 3 : i64, point = "X"} : (tensor<1x?x64xf32>) -> ()
  "iq.observe"(%h) {layer = 5 : i64, point = "H"} : (tensor<1x?x64xf32>) -> ()
  return
}
