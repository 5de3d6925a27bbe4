// iq.observe rejects unknown points (IRDL), and inputs and layers the
// calibration runtime cannot key (C verifier).
// RUN: %iq-opt %s --split-input-file --verify-diagnostics

func.func @unknown_point(%x: tensor<1x?x64xf32>) {
  // expected-error@+1 {{'"Q"' does not satisfy the constraint}}
  "iq.observe"(%x) {layer = 0 : i64, point = "Q"} : (tensor<1x?x64xf32>) -> ()
  return
}

// -----

func.func @negative_layer(%x: tensor<1x?x64xf32>) {
  // expected-error@+1 {{'iq.observe' op 'layer' is -1, expected 0 to 65535}}
  "iq.observe"(%x) {layer = -1 : i64, point = "X"} : (tensor<1x?x64xf32>) -> ()
  return
}

// -----

func.func @rank_two(%x: tensor<4x64xf32>) {
  // expected-error@+1 {{'iq.observe' op input must be [batch, seq, channels], got rank 2}}
  "iq.observe"(%x) {layer = 0 : i64, point = "X"} : (tensor<4x64xf32>) -> ()
  return
}

// -----

func.func @integer_input(%x: tensor<1x?x64xi8>) {
  // expected-error@+1 {{'iq.observe' op input must have a floating-point element type}}
  "iq.observe"(%x) {layer = 0 : i64, point = "X"} : (tensor<1x?x64xi8>) -> ()
  return
}

// -----

func.func @dynamic_channels(%x: tensor<1x?x?xf32>) {
  // expected-error@+1 {{'iq.observe' op the channel dimension must be static}}
  "iq.observe"(%x) {layer = 0 : i64, point = "X"} : (tensor<1x?x?xf32>) -> ()
  return
}
