// --split-input-file processes each part on its own: a failing part does
// not stop the others, the output joins the parts with the marker, and
// diagnostics keep the line numbers of the whole file.
// RUN: %iq-opt %s --split-input-file --iq-canonicalize | FileCheck %s
// RUN: %iq-opt %s --split-input-file=//@@ | FileCheck %s --check-prefix=OTHER-MARKER

// CHECK-LABEL: func.func @first
// CHECK-NOT: iq.weight
// CHECK: // -----
// CHECK-LABEL: func.func @second
// OTHER-MARKER: func.func @first
// OTHER-MARKER: func.func @second
// OTHER-MARKER-NOT: // -----
func.func @first() {
  %w = "iq.weight"() {name = "a", transposed = false} : () -> tensor<4xf32>
  return
}

// -----

func.func @second() {
  return
}
