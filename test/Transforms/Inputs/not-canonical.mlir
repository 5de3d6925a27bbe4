// A module without iq.config: the weight passes need the canonical graph
// that iq-raise-llama builds.
func.func @forward(%x: tensor<1x?x64xf32>) -> tensor<1x?x64xf32> {
  %y = "iq.rms_norm"(%x) {epsilon = 1.0e-5 : f32} : (tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  return %y : tensor<1x?x64xf32>
}
