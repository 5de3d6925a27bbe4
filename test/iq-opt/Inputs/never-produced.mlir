func.func @f() {
  // expected-error {{never happens}}
  return
}
