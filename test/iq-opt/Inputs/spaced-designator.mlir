func.func @f(%x: tensor<2x64xf32>) {
  // expected-error @+1 {{is expected but not provided}}
  %y = "iq.rms_norm"(%x) : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}
