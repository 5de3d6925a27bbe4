func.func @f(%x: tensor<2x64xf32>) {
  %y = "iq.rms_norm"(%x) : (tensor<2x64xf32>) -> tensor<2x64xf32>
  // expected-error@above {{is expected but not provided}}
  // expected-error@-2 {{is expected but not provided}}
  return
}
