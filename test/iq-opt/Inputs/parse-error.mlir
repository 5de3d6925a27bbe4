func.func @f() {
  %0 = "iq.weight"() {name = "w"} : () -> tensor<4xf32>
  return %0
}
