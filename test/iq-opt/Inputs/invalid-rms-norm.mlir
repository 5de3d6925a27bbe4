func.func @f(%x: tensor<2x64xi32>) {
  %y = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<2x64xi32>) -> tensor<2x64xi32>
  return
}
