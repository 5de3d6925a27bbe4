func.func @f() {
  %0 = "iq.weight"() {name = "w", transposed = false} : () -> tensor<4xf32>
  return %0
}
